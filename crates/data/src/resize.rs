//! Two-tap bilinear resize of an RGB u8 window into a batch slot, the mirror folded into the
//! column map: the resize of the crop path whenever the crop shrinks by at most 2x (after the
//! DCT scale has done the rest), which is nearly always.
//!
//! Why our own and not `fast_image_resize`: its general convolution for `U8x3` cost 43 us at
//! 150x150 -> 128x128 here, and the mirror after it 9 us more; this one does both in a fraction
//! (`pipeline-bench` shows the resize stage). It is separable: each output row first blends its
//! two source rows (plain u16 arithmetic the compiler vectorises), then each pair of output
//! pixels picks its four source pixels out of one 16-byte load with a byte shuffle and blends
//! them with one multiply-add (SSSE3 `pshufb` + `pmaddubsw`, chosen at run time; a scalar loop
//! with the same integer math elsewhere, so both give the same bits).
//!
//! Sampling follows TensorFlow's `resize_bilinear` with half-pixel centres: output `o` of `n`
//! samples the window at `start + (o + 0.5) * len / n - 0.5`, clamped to the window's pixels.
//! Row weights have 8 bits, column weights 7 bits (what `pmaddubsw` takes); with the rounding
//! of the intermediate row, a result differs from the exact interpolation by at most 2 levels.
#![allow(unsafe_code)]

/// Where one output row or column samples: source pixels `at` and `at + 1`, the second with
/// weight `weight / unit` (unit 256 for rows, 128 for columns). `weight == 0` at the last pixel,
/// so `at + 1` is never read with a non-zero weight past the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tap {
    pub at: u32,
    pub weight: u16,
}

/// The taps of `out` outputs over the window `start .. start + len` of a line of `pixels`
/// source pixels, with weights in `1 / unit`; in reverse output order when `mirror` (the
/// mirrored image's column `o` is the plain image's column `out - 1 - o`).
pub fn taps(
    start: f64,
    len: f64,
    pixels: u32,
    out: u32,
    unit: u16,
    mirror: bool,
) -> impl Iterator<Item = Tap> {
    let scale = len / f64::from(out);
    let last = f64::from(pixels.max(1) - 1);
    (0..out).map(move |o| {
        let o = if mirror { out - 1 - o } else { o };
        let s = (start + (f64::from(o) + 0.5) * scale - 0.5).clamp(0.0, last);
        let at = s.floor();
        let weight = ((s - at) * f64::from(unit)).round() as u16;
        if weight >= unit {
            Tap {
                at: at as u32 + 1,
                weight: 0,
            }
        } else {
            Tap {
                at: at as u32,
                weight,
            }
        }
    })
}

/// Whether [`TwoTap`] serves a window of `len` source pixels resized to `out`: it samples two
/// pixels per output, so it must not skip any (a shrink of at most 2x).
pub fn serves(len: f64, out: u32) -> bool {
    len <= 2.0 * f64::from(out)
}

/// One pair of output pixels of a row: where its 16-byte load starts (in pixels), which bytes
/// of the load pair up with which (`pshufb` control) and with what weights (`pmaddubsw`).
#[derive(Debug, Clone, Copy)]
struct Pair {
    base: u32,
    pick: [u8; 16],
    weights: [u8; 16],
}

/// Reusable state (buffers only grow: no allocation per image in steady state): the taps and
/// column pairs of the current shape and the blended row.
#[derive(Default)]
pub struct TwoTap {
    cols: Vec<Tap>,
    rows: Vec<Tap>,
    pairs: Vec<Pair>,
    /// One output row's two source rows blended, as RGB u8, plus room for a 16-byte load at
    /// its last pixel.
    line: Vec<u8>,
}

/// Bytes the shuffle may read past a pair's base pixel.
const LOAD: usize = 16;

impl TwoTap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes the `window` (x, y, w, h; fractional) of the `[height, width, 3]` image `src`
    /// to `out_w x out_h` into `out` (`[out_h, out_w, 3]`), mirrored left-right if `mirror`.
    /// The window must lie inside the image and shrink by at most 2x in each direction
    /// ([`serves`]); sampling clamps at the image's edges.
    #[allow(clippy::too_many_arguments)]
    pub fn resize(
        &mut self,
        src: &[u8],
        (width, height): (u32, u32),
        window: [f64; 4],
        out: &mut [u8],
        (out_w, out_h): (u32, u32),
        mirror: bool,
    ) {
        let [x, y, w, h] = window;
        let stride = width as usize * 3;
        assert!(width > 0 && height > 0 && src.len() >= stride * height as usize);
        assert_eq!(out.len(), out_w as usize * out_h as usize * 3);
        // Rows may shrink by any factor (they only skip source rows); columns must not skip
        // pixels, or a pair's taps would not fit its 16-byte load.
        assert!(
            serves(w, out_w),
            "a {w}-pixel window cannot shrink to {out_w} in two taps"
        );
        self.cols.clear();
        self.cols.extend(taps(x, w, width, out_w, 128, mirror));
        self.pairs.clear();
        self.pairs.extend(self.cols.chunks(2).map(pair));
        self.line.clear();
        self.line.resize(stride + LOAD, 0);
        self.rows.clear();
        self.rows.extend(taps(y, h, height, out_h, 256, false));
        let row_bytes = out_w as usize * 3;
        for (tap, dst) in self.rows.iter().zip(out.chunks_exact_mut(row_bytes)) {
            let top = &src[tap.at as usize * stride..][..stride];
            if tap.weight == 0 {
                self.line[..stride].copy_from_slice(top);
            } else {
                let bottom = &src[(tap.at as usize + 1) * stride..][..stride];
                blend_rows(top, bottom, tap.weight, &mut self.line[..stride]);
            }
            blend_columns(&self.line, &self.pairs, dst);
        }
    }
}

/// `line = (top * (256 - wb) + bottom * wb + 128) >> 8`, byte by byte.
fn blend_rows(top: &[u8], bottom: &[u8], wb: u16, line: &mut [u8]) {
    let wa = 256 - wb;
    for ((l, &a), &b) in line.iter_mut().zip(top).zip(bottom) {
        *l = ((u16::from(a) * wa + u16::from(b) * wb + 128) >> 8) as u8;
    }
}

/// The shuffle control and weights of one or two output pixels (the last of an odd row is
/// alone: its second half picks nothing and weighs nothing).
fn pair(taps: &[Tap]) -> Pair {
    let base = taps
        .iter()
        .map(|t| t.at)
        .min()
        .expect("chunks are non-empty");
    let mut pick = [0x80u8; 16];
    let mut weights = [0u8; 16];
    for (k, t) in taps.iter().enumerate() {
        // With a shrink of at most 2x the two pixels' taps lie within 3 pixels of the base,
        // so every picked byte is inside the 16-byte load.
        let left = 3 * (t.at - base) as usize;
        // A real check (once per pair per image): past it the shuffle would wrap silently.
        assert!(left + 5 < LOAD, "taps {taps:?} do not fit one 16-byte load");
        for c in 0..3 {
            let i = 6 * k + 2 * c;
            pick[i] = (left + c) as u8;
            pick[i + 1] = (left + 3 + c) as u8;
            weights[i] = (128 - t.weight) as u8;
            weights[i + 1] = t.weight as u8;
        }
    }
    Pair {
        base,
        pick,
        weights,
    }
}

/// Writes one output row from the blended `line`: each pair of pixels from its two taps.
fn blend_columns(line: &[u8], pairs: &[Pair], dst: &mut [u8]) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("ssse3") {
        // SAFETY: the CPU has SSSE3 (checked just above).
        unsafe { blend_columns_ssse3(line, pairs, dst) };
        return;
    }
    blend_columns_scalar(line, pairs, dst);
}

/// The portable form of [`blend_columns_ssse3`]: the same integer math, so the same bits.
fn blend_columns_scalar(line: &[u8], pairs: &[Pair], dst: &mut [u8]) {
    for (p, px) in pairs.iter().zip(dst.chunks_mut(6)) {
        let load = &line[p.base as usize * 3..][..LOAD];
        for (i, v) in px.iter_mut().enumerate() {
            let (a, b) = (
                load[usize::from(p.pick[2 * i])],
                load[usize::from(p.pick[2 * i + 1])],
            );
            let (wa, wb) = (p.weights[2 * i], p.weights[2 * i + 1]);
            *v = ((u16::from(a) * u16::from(wa) + u16::from(b) * u16::from(wb) + 64) >> 7) as u8;
        }
    }
}

/// Per pair: one unaligned 16-byte load, `pshufb` puts each channel's left and right source
/// bytes side by side, `pmaddubsw` multiplies and adds them with the weights. `pmaddubsw`
/// takes the second operand as signed bytes, so the pixels are biased by -128 (xor 0x80) and
/// `128 * 128` added back before the shift.
///
/// # Safety
/// The CPU must support SSSE3.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn blend_columns_ssse3(line: &[u8], pairs: &[Pair], dst: &mut [u8]) {
    use std::arch::x86_64::*;
    let bias = _mm_set1_epi8(-128);
    let back = _mm_set1_epi16(128 * 128 + 64);
    // Each pair stores 8 bytes, the 2 past its 6 overwritten by the next pair's store; the
    // last pair (6 bytes, or 3 when the row is odd) goes through a copy.
    let mut tail = [0u8; 8];
    for (n, p) in pairs.iter().enumerate() {
        let from = p.base as usize * 3;
        assert!(from + LOAD <= line.len());
        // SAFETY: the 16 bytes at `from` are inside `line` (asserted); unaligned loads.
        let v = _mm_loadu_si128(line.as_ptr().add(from).cast());
        let pick = _mm_loadu_si128(p.pick.as_ptr().cast());
        let weights = _mm_loadu_si128(p.weights.as_ptr().cast());
        let paired = _mm_xor_si128(_mm_shuffle_epi8(v, pick), bias);
        let sums = _mm_add_epi16(_mm_maddubs_epi16(weights, paired), back);
        let bytes = _mm_packus_epi16(_mm_srli_epi16(sums, 7), _mm_setzero_si128());
        let at = n * 6;
        if at + 8 <= dst.len() {
            // SAFETY: 8 bytes at `at` are inside `dst` (checked).
            _mm_storel_epi64(dst.as_mut_ptr().add(at).cast(), bytes);
        } else {
            // SAFETY: `tail` holds 8 bytes.
            _mm_storel_epi64(tail.as_mut_ptr().cast(), bytes);
            let keep = (dst.len() - at).min(6);
            dst[at..at + keep].copy_from_slice(&tail[..keep]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exact two-tap bilinear value (f64) at output (ox, oy), for comparison.
    fn exact(
        src: &[u8],
        (w, h): (u32, u32),
        win: [f64; 4],
        (ow, oh): (u32, u32),
        (ox, oy): (u32, u32),
        c: usize,
    ) -> f64 {
        let sample = |start: f64, len: f64, n: u32, o: u32, pixels: u32| {
            (start + (f64::from(o) + 0.5) * len / f64::from(n) - 0.5)
                .clamp(0.0, f64::from(pixels - 1))
        };
        let (sx, sy) = (
            sample(win[0], win[2], ow, ox, w),
            sample(win[1], win[3], oh, oy, h),
        );
        let (x0, y0) = (sx.floor() as u32, sy.floor() as u32);
        let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
        let (fx, fy) = (sx - f64::from(x0), sy - f64::from(y0));
        let p = |x: u32, y: u32| f64::from(src[(y * w + x) as usize * 3 + c]);
        let top = p(x0, y0) * (1.0 - fx) + p(x1, y0) * fx;
        let bottom = p(x0, y1) * (1.0 - fx) + p(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }

    fn noise(n: usize, seed: u32) -> Vec<u8> {
        (0..n as u32)
            .map(|i| ((i ^ seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect()
    }

    #[test]
    fn taps_sample_half_pixel_centres_and_clamp() {
        // Same size: every output sits on its own pixel.
        let same: Vec<Tap> = taps(0.0, 4.0, 4, 4, 256, false).collect();
        assert_eq!(
            same,
            (0..4).map(|at| Tap { at, weight: 0 }).collect::<Vec<_>>()
        );
        // 4 -> 2: centres at 0.5 and 2.5, halfway between two pixels.
        let half: Vec<Tap> = taps(0.0, 4.0, 4, 2, 128, false).collect();
        assert_eq!(
            half,
            vec![Tap { at: 0, weight: 64 }, Tap { at: 2, weight: 64 }]
        );
        // 2 -> 4: the outer samples fall before the first and after the last pixel: clamped.
        let up: Vec<Tap> = taps(0.0, 2.0, 2, 4, 256, false).collect();
        assert_eq!(up[0], Tap { at: 0, weight: 0 });
        assert_eq!(up[3], Tap { at: 1, weight: 0 });
        // Mirrored: the same taps, reversed.
        let window = (0.7, 9.3);
        let mut plain: Vec<Tap> = taps(window.0, window.1, 11, 6, 128, false).collect();
        plain.reverse();
        assert_eq!(
            taps(window.0, window.1, 11, 6, 128, true).collect::<Vec<_>>(),
            plain
        );
    }

    #[test]
    fn matches_exact_interpolation_within_two_levels() {
        let cases = [
            ((150, 150), [0.3, 0.7, 149.0, 148.8], (128, 128)),
            ((37, 23), [1.5, 0.0, 35.0, 23.0], (19, 31)),
            ((9, 9), [0.0, 0.0, 9.0, 9.0], (17, 5)),
            ((1, 1), [0.0, 0.0, 1.0, 1.0], (3, 2)),
            ((64, 40), [0.0, 0.0, 64.0, 40.0], (32, 20)),
        ];
        let mut resizer = TwoTap::new();
        for (n, &((w, h), win, (ow, oh))) in cases.iter().enumerate() {
            let src = noise((w * h * 3) as usize, n as u32);
            for mirror in [false, true] {
                let mut out = vec![0u8; (ow * oh * 3) as usize];
                resizer.resize(&src, (w, h), win, &mut out, (ow, oh), mirror);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let sx = if mirror { ow - 1 - ox } else { ox };
                        for c in 0..3 {
                            let want = exact(&src, (w, h), win, (ow, oh), (sx, oy), c);
                            let got = f64::from(out[((oy * ow + ox) * 3) as usize + c]);
                            assert!(
                                (got - want).abs() <= 2.0,
                                "case {n} mirror {mirror} at ({ox},{oy},{c}): {got} vs {want:.2}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn simd_and_scalar_columns_give_the_same_bits() {
        let line = noise(3 * 200 + LOAD, 7);
        for (len, out) in [(200.0, 128), (199.5, 101), (120.0, 128), (7.0, 5)] {
            for mirror in [false, true] {
                let cols: Vec<Tap> = taps(0.25, len, 200, out, 128, mirror).collect();
                let pairs: Vec<Pair> = cols.chunks(2).map(pair).collect();
                let mut a = vec![0u8; out as usize * 3];
                let mut b = vec![1u8; out as usize * 3];
                blend_columns(&line, &pairs, &mut a);
                blend_columns_scalar(&line, &pairs, &mut b);
                assert_eq!(a, b, "len {len} out {out} mirror {mirror}");
            }
        }
    }

    #[test]
    fn a_flat_image_stays_flat() {
        let (w, h) = (50u32, 30u32);
        let src: Vec<u8> = (0..w * h).flat_map(|_| [200u8, 0, 255]).collect();
        let mut out = vec![0u8; 40 * 20 * 3];
        TwoTap::new().resize(
            &src,
            (w, h),
            [3.2, 1.1, 45.0, 28.0],
            &mut out,
            (40, 20),
            true,
        );
        assert!(out.chunks_exact(3).all(|p| p == [200, 0, 255]));
    }
}
