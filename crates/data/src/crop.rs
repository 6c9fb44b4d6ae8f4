//! Crop boxes: where in a decoded image the training and evaluation crops sit. Pure geometry;
//! `decode` applies the box while resizing, `pipeline` picks the generator per image.
//!
//! Training uses the random-resized crop of the 106-minute run's input pipeline, the same sampling
//! as TensorFlow's `sample_distorted_bounding_box` and torchvision's `RandomResizedCrop`: area
//! fraction uniform in `[min_scale, max_scale]`, aspect ratio log-uniform in `ratio`, up to
//! `attempts` tries, else the whole image. Evaluation uses [`eval_crop`]: TensorFlow's `central_crop`
//! or fast.ai's short-side resize and centre crop, and imagenet18's rectangular batch shapes
//! ([`rect_shape`], [`batch_aspect`]).

use rand::Rng;

/// A box in pixel coordinates of the decoded image: columns `x..x+w`, rows `y..y+h`.
/// Invariant (for images with both sides >= 1): `w >= 1`, `h >= 1`, `x + w <= width`,
/// `y + h <= height`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl CropBox {
    /// The whole `width` x `height` image.
    pub fn full(width: u32, height: u32) -> Self {
        Self {
            x: 0,
            y: 0,
            w: width,
            h: height,
        }
    }
}

/// Parameters of the random-resized crop.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropSpec {
    /// Smallest fraction of the image area a crop may cover (0.08 in the reference; a phase's
    /// `min_scale` raises it).
    pub min_scale: f64,
    /// Largest area fraction (1.0 everywhere in the reference).
    pub max_scale: f64,
    /// Aspect ratio (width / height) bounds, sampled log-uniformly between them.
    pub ratio: (f64, f64),
    /// Tries before falling back to the whole image.
    pub attempts: u32,
}

impl CropSpec {
    /// The reference's train crop with the given lower area bound: area `[min_scale, 1]`,
    /// aspect `[3/4, 4/3]`, 100 attempts.
    pub fn train(min_scale: f64) -> Self {
        Self {
            min_scale,
            max_scale: 1.0,
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            attempts: 100,
        }
    }
}

/// Samples a random-resized crop box; falls back to the whole image when no attempt fits
/// (very elongated or tiny images). Consumes a variable number of draws from `rng`, so callers
/// that want reproducible crops give every image its own generator.
pub fn sample_crop<R: Rng + ?Sized>(
    rng: &mut R,
    width: u32,
    height: u32,
    spec: &CropSpec,
) -> CropBox {
    try_sample_crop(rng, width, height, spec).unwrap_or(CropBox::full(width, height))
}

/// The sampling loop of [`sample_crop`] without the fallback: `None` when all attempts failed.
/// Degenerate specs (empty or inverted ranges, non-finite bounds) use the lower bound.
pub fn try_sample_crop<R: Rng + ?Sized>(
    rng: &mut R,
    width: u32,
    height: u32,
    spec: &CropSpec,
) -> Option<CropBox> {
    if width == 0 || height == 0 {
        return None;
    }
    let area = f64::from(width) * f64::from(height);
    let (log_lo, log_hi) = (spec.ratio.0.ln(), spec.ratio.1.ln());
    for _ in 0..spec.attempts {
        let scale = uniform(rng, spec.min_scale, spec.max_scale);
        let aspect = uniform(rng, log_lo, log_hi).exp();
        let target = area * scale;
        let w = (target * aspect).sqrt().round();
        let h = (target / aspect).sqrt().round();
        if !(w >= 1.0 && h >= 1.0 && w <= f64::from(width) && h <= f64::from(height)) {
            continue;
        }
        // In range by the check above, so the casts are exact.
        let (w, h) = (w as u32, h as u32);
        let x = rng.gen_range(0..=width - w);
        let y = rng.gen_range(0..=height - h);
        return Some(CropBox { x, y, w, h });
    }
    None
}

/// Draws from `[lo, hi)`, or returns `lo` when the range is empty, inverted or not finite
/// (so a bad spec degrades instead of panicking inside `gen_range`).
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f64, hi: f64) -> f64 {
    if lo.is_finite() && hi.is_finite() && lo < hi {
        rng.gen_range(lo..hi)
    } else {
        lo
    }
}

/// The central `fraction` of the height and of the width, as TensorFlow's `central_crop`
/// computes it (offset = floor((side - side * fraction) / 2), size = side - 2 * offset), so
/// our evaluation crop matches the reference's pixel for pixel. `fraction` is clamped to
/// `(0, 1]`; the box is never empty for a non-empty image.
pub fn center_crop(width: u32, height: u32, fraction: f64) -> CropBox {
    let f = if fraction.is_finite() && fraction > 0.0 {
        fraction.min(1.0)
    } else {
        1.0
    };
    let offset = |side: u32| ((f64::from(side) - f64::from(side) * f) / 2.0).floor() as u32;
    let (x, y) = (offset(width), offset(height));
    CropBox {
        x,
        y,
        w: width - 2 * x,
        h: height - 2 * y,
    }
}

/// How evaluation frames an image, from the schedule's `eval.crop_mode`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalCrop {
    /// `central`: keep the central `fraction` of the height and of the width
    /// ([`center_crop`]), then resize that box to the output (a square output stretches a
    /// non-square box, as the 106-minute run's TensorFlow evaluation did).
    Central { fraction: f64 },
    /// `short_side`: resize the short side to `output x resize_ratio`, then cut the central
    /// output-sized window (fast.ai's `Resize(int(sz * 1.14))` + `CenterCrop(sz)`).
    ShortSide { resize_ratio: f64 },
}

impl EvalCrop {
    /// Source pixels per output pixel, divided by the source's short side: the window shown
    /// at output size `px` (short output side) covers `short * window_fraction()` source
    /// pixels along the short axis. `central` keeps `fraction` of each side; `short_side`
    /// keeps `1 / resize_ratio` of the short side.
    pub fn window_fraction(self) -> f64 {
        let f = match self {
            EvalCrop::Central { fraction } => fraction,
            EvalCrop::ShortSide { resize_ratio } => 1.0 / resize_ratio,
        };
        if f.is_finite() && f > 0.0 {
            f.min(1.0)
        } else {
            1.0
        }
    }
}

/// The evaluation crop box in source pixels of a `width x height` image for an
/// `out_w x out_h` output. The rule, exactly:
///
/// * Square output, `central`: [`center_crop`] (TensorFlow's `central_crop`): each side keeps
///   its central `fraction`, so a non-square image is stretched to the square.
/// * Square output, `short_side`: a centred square of side `c = round(short / resize_ratio)`
///   (clamped to `1..=short`, `short = min(width, height)`) at `x = floor((width - c) / 2)`,
///   `y = floor((height - c) / 2)`. Resizing that square to the output is the same as resizing
///   the short side to `out x resize_ratio` and cutting the central `out x out` window: the
///   scale is `out / c = out x resize_ratio / short`. Nothing is distorted.
/// * Rectangular output (rectangular validation, either mode): with `f` = `fraction` or
///   `1 / resize_ratio` and `s = min(out_w, out_h)`, one output pixel covers
///   `k = short x f / s` source pixels; the box is `round(out_w x k) x round(out_h x k)`,
///   centred (offsets floored) and clamped to the image. When the batch's shape is more
///   elongated than this image the clamp keeps the whole long side and the resize stretches it
///   a little (imagenet18 padded with black instead).
pub fn eval_crop(width: u32, height: u32, mode: EvalCrop, out_w: u32, out_h: u32) -> CropBox {
    if width == 0 || height == 0 || out_w == 0 || out_h == 0 {
        return CropBox::full(width, height);
    }
    let short = f64::from(width.min(height));
    let f = mode.window_fraction();
    let (bw, bh) = if out_w == out_h {
        match mode {
            EvalCrop::Central { fraction } => return center_crop(width, height, fraction),
            EvalCrop::ShortSide { .. } => {
                let c = ((short * f).round() as u32).clamp(1, width.min(height));
                (c, c)
            }
        }
    } else {
        let k = short * f / f64::from(out_w.min(out_h));
        let side = |out: u32, limit: u32| ((f64::from(out) * k).round() as u32).clamp(1, limit);
        (side(out_w, width), side(out_h, height))
    };
    CropBox {
        x: (width - bw) / 2,
        y: (height - bh) / 2,
        w: bw,
        h: bh,
    }
}

/// The widest batch aspect (long side / short side) [`rect_shape`] gives: three times the 4:3
/// of most photographs, so a batch mean past it comes from freak images.
pub const MAX_RECT_ASPECT: f64 = 4.0;

/// The output `(width, height)` of one rectangular-validation batch, imagenet18's rule
/// (fast.ai's DAWNBench entry, `training/dataloader.py` of cybertronai/imagenet18): each image's
/// aspect `width / height` is rounded to 5 decimals; the images are sorted by it; each run of
/// `batch_size` consecutive images gets the mean of its aspects (again rounded to 5 decimals)
/// as `aspect`. The short output side is `px`; the long side is `trunc(px x aspect)` (landscape)
/// or `trunc(px / aspect)` (portrait), then rounded down to a multiple of 8 (never below `px`
/// here, so a batch near square stays `px x px`). Ours alone: the aspect is held within
/// [`MAX_RECT_ASPECT`] either way, so one freak image (a 65535 x 1 JPEG passes the pixel limit)
/// cannot make its batch's buffer tens of gigabytes.
pub fn rect_shape(px: u32, aspect: f64) -> (u32, u32) {
    let long = |ratio: f64| -> u32 {
        let l = (f64::from(px) * ratio).trunc() as u32;
        (l / 8 * 8).max(px)
    };
    if !(aspect.is_finite() && aspect > 0.0) {
        return (px, px);
    }
    let aspect = aspect.clamp(1.0 / MAX_RECT_ASPECT, MAX_RECT_ASPECT);
    if aspect >= 1.0 {
        (long(aspect), px)
    } else {
        (px, long(1.0 / aspect))
    }
}

/// imagenet18's batch aspect: the mean of the batch's aspects (each rounded to 5 decimals),
/// rounded to 5 decimals.
pub fn batch_aspect(aspects: &[f64]) -> f64 {
    let r5 = |v: f64| (v * 1e5).round() / 1e5;
    if aspects.is_empty() {
        return 1.0;
    }
    r5(aspects.iter().map(|&a| r5(a)).sum::<f64>() / aspects.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn inside(b: CropBox, w: u32, h: u32) -> bool {
        b.w >= 1 && b.h >= 1 && b.x + b.w <= w && b.y + b.h <= h
    }

    #[test]
    fn random_crops_lie_inside_and_respect_area_and_aspect() {
        let sizes = [
            (500, 375),
            (375, 500),
            (64, 64),
            (1000, 200),
            (33, 17),
            (4000, 3000),
        ];
        for seed in 0..4000u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let (w, h) = sizes[seed as usize % sizes.len()];
            let min_scale = [0.08, 0.25, 0.35, 0.5][seed as usize % 4];
            let spec = CropSpec::train(min_scale);
            let Some(b) = try_sample_crop(&mut rng, w, h, &spec) else {
                continue;
            };
            assert!(inside(b, w, h), "seed {seed}: {b:?} outside {w}x{h}");
            // Rounding each side to whole pixels moves area and aspect by up to half a pixel
            // per side; allow exactly that slack.
            let (bw, bh) = (f64::from(b.w), f64::from(b.h));
            let area = f64::from(w) * f64::from(h);
            let lo = (bw - 0.5).max(0.0) * (bh - 0.5).max(0.0) / area;
            let hi = (bw + 0.5) * (bh + 0.5) / area;
            assert!(
                hi >= min_scale && lo <= 1.0,
                "seed {seed}: area {bw}x{bh} of {w}x{h}"
            );
            let a_hi = (bw + 0.5) / (bh - 0.5).max(0.5);
            let a_lo = (bw - 0.5) / (bh + 0.5);
            assert!(
                a_hi >= 0.75 && a_lo <= 4.0 / 3.0,
                "seed {seed}: aspect of {bw}x{bh}"
            );
        }
    }

    #[test]
    fn random_crops_mostly_succeed_on_ordinary_images_and_vary() {
        let mut found = 0;
        let mut boxes = std::collections::HashSet::new();
        for seed in 0..1000u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            if let Some(b) = try_sample_crop(&mut rng, 500, 375, &CropSpec::train(0.08)) {
                found += 1;
                boxes.insert((b.x, b.y, b.w, b.h));
            }
        }
        assert_eq!(
            found, 1000,
            "a 500x375 image always fits some crop within 100 tries"
        );
        assert!(
            boxes.len() > 900,
            "crops should differ across seeds, got {}",
            boxes.len()
        );
    }

    #[test]
    fn degenerate_images_fall_back_to_the_whole_image() {
        for seed in 0..500u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for (w, h) in [(1000, 1), (1, 1000), (5000, 3)] {
                assert_eq!(
                    sample_crop(&mut rng, w, h, &CropSpec::train(0.08)),
                    CropBox::full(w, h)
                );
            }
            assert_eq!(
                sample_crop(&mut rng, 0, 0, &CropSpec::train(0.08)),
                CropBox::full(0, 0)
            );
            let zero_tries = CropSpec {
                attempts: 0,
                ..CropSpec::train(0.08)
            };
            assert_eq!(
                sample_crop(&mut rng, 50, 40, &zero_tries),
                CropBox::full(50, 40)
            );
        }
    }

    #[test]
    fn bad_specs_do_not_panic() {
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            for spec in [
                CropSpec {
                    min_scale: 1.0,
                    ..CropSpec::train(1.0)
                },
                CropSpec {
                    min_scale: 2.0,
                    max_scale: 0.5,
                    ..CropSpec::train(0.1)
                },
                CropSpec {
                    ratio: (1.0, 1.0),
                    ..CropSpec::train(0.1)
                },
                CropSpec {
                    min_scale: f64::NAN,
                    ratio: (f64::NAN, 0.0),
                    ..CropSpec::train(0.1)
                },
            ] {
                let b = sample_crop(&mut rng, 97, 61, &spec);
                assert!(inside(b, 97, 61), "{spec:?} gave {b:?}");
            }
        }
    }

    #[test]
    fn center_crop_matches_tensorflow_central_crop() {
        // TF: 500x375 at 0.8 -> offsets (500-400)/2 = 50 and floor((375-300)/2) = 37.
        assert_eq!(
            center_crop(500, 375, 0.8),
            CropBox {
                x: 50,
                y: 37,
                w: 400,
                h: 301
            }
        );
        assert_eq!(center_crop(10, 10, 1.0), CropBox::full(10, 10));
        for w in 1..200u32 {
            for h in [1u32, 2, 3, 17, 100, 199] {
                for f in [0.01, 0.5, 0.8, 0.875, 1.0, 1.5, 0.0, -1.0, f64::NAN] {
                    let b = center_crop(w, h, f);
                    assert!(inside(b, w, h), "{w}x{h} at {f}: {b:?}");
                    assert_eq!(b.x * 2 + b.w, w, "centred horizontally");
                    assert_eq!(b.y * 2 + b.h, h, "centred vertically");
                    if (0.0..=1.0).contains(&f) && f > 0.0 {
                        assert!(f64::from(b.w) >= f64::from(w) * f - 1e-9);
                        assert!(f64::from(b.w) <= f64::from(w) * f + 2.0);
                    }
                }
            }
        }
    }

    #[test]
    fn short_side_crop_is_the_central_square_of_short_over_ratio() {
        // 500x375 at ratio 1.14: c = round(375 / 1.14) = round(328.947) = 329,
        // x = floor((500 - 329) / 2) = 85, y = floor((375 - 329) / 2) = 23.
        let m = EvalCrop::ShortSide { resize_ratio: 1.14 };
        assert_eq!(
            eval_crop(500, 375, m, 224, 224),
            CropBox {
                x: 85,
                y: 23,
                w: 329,
                h: 329
            }
        );
        // Portrait: 60x90 at ratio 1.5 -> c = 40, x = 10, y = 25.
        let m = EvalCrop::ShortSide { resize_ratio: 1.5 };
        assert_eq!(
            eval_crop(60, 90, m, 32, 32),
            CropBox {
                x: 10,
                y: 25,
                w: 40,
                h: 40
            }
        );
        for w in (1..400u32).step_by(13) {
            for h in (1..400u32).step_by(17) {
                for r in [1.0, 1.14, 1.5, 0.5] {
                    let b = eval_crop(w, h, EvalCrop::ShortSide { resize_ratio: r }, 32, 32);
                    assert!(inside(b, w, h), "{w}x{h} at {r}: {b:?}");
                    assert_eq!(b.w, b.h, "square window, no distortion");
                    assert!(b.x * 2 + b.w == w || b.x * 2 + b.w + 1 == w);
                }
            }
        }
    }

    #[test]
    fn central_square_output_is_tensorflow_central_crop() {
        let m = EvalCrop::Central { fraction: 0.8 };
        assert_eq!(eval_crop(500, 375, m, 96, 96), center_crop(500, 375, 0.8));
    }

    #[test]
    fn rectangular_windows_scale_the_output_shape() {
        // 80x48 image, short 48, f = 1/1.14: k = 48 / 1.14 / 32 = 1.3158; output 48x32 ->
        // box round(63.16) x round(42.1) = 63 x 42 at ((80-63)/2, (48-42)/2) = (8, 3).
        let m = EvalCrop::ShortSide { resize_ratio: 1.14 };
        assert_eq!(
            eval_crop(80, 48, m, 48, 32),
            CropBox {
                x: 8,
                y: 3,
                w: 63,
                h: 42
            }
        );
        // A batch shape wider than the image: the width is clamped to the whole image.
        let b = eval_crop(50, 48, m, 64, 32);
        assert_eq!((b.x, b.w), (0, 50));
        for w in (8..300u32).step_by(7) {
            for h in (8..300u32).step_by(11) {
                for (ow, oh) in [(48, 32), (32, 48), (32, 32), (296, 224)] {
                    let b = eval_crop(w, h, EvalCrop::Central { fraction: 0.875 }, ow, oh);
                    assert!(inside(b, w, h), "{w}x{h} -> {ow}x{oh}: {b:?}");
                }
            }
        }
    }

    #[test]
    fn rect_shapes_follow_imagenet18() {
        // 224 x 1.33333 = 298.67 -> 298 -> 296; portrait the same on the height.
        assert_eq!(rect_shape(224, 4.0 / 3.0), (296, 224));
        assert_eq!(rect_shape(224, 0.75), (224, 296));
        assert_eq!(rect_shape(224, 1.0), (224, 224));
        // 32 x 1.2 = 38.4 -> 38 -> 32 (never below the short side).
        assert_eq!(rect_shape(32, 1.2), (32, 32));
        assert_eq!(rect_shape(32, 1.5), (48, 32));
        assert_eq!(rect_shape(32, 2.0 / 3.0), (32, 48));
        for px in [32u32, 128, 224, 288] {
            for a in [0.3, 0.5, 0.75, 1.0, 1.2, 4.0 / 3.0, 2.0, 3.5] {
                let (w, h) = rect_shape(px, a);
                assert_eq!(w.min(h), px);
                assert!(w.max(h) == px || w.max(h) % 8 == 0);
            }
        }
        // A freak batch is held at 4:1 either way.
        assert_eq!(rect_shape(288, 264.0), (1152, 288));
        assert_eq!(rect_shape(288, 1.0 / 264.0), (288, 1152));
        assert_eq!(rect_shape(32, 1e300), (128, 32));
        assert_eq!(batch_aspect(&[1.5, 1.333333, 1.0]), 1.27778);
        assert_eq!(batch_aspect(&[]), 1.0);
    }
}
