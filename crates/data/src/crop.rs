//! Crop boxes: where in a decoded image the training and evaluation crops sit. Pure geometry;
//! `decode` applies the box while resizing, `pipeline` picks the generator per image.
//!
//! Training uses the random-resized crop of the 106-minute run's input pipeline, the same sampling
//! as TensorFlow's `sample_distorted_bounding_box` and torchvision's `RandomResizedCrop`: area
//! fraction uniform in `[min_scale, max_scale]`, aspect ratio log-uniform in `ratio`, up to
//! `attempts` tries, else the whole image. Evaluation uses TensorFlow's `central_crop`.

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

/// The largest box of aspect `aspect` (width / height) centred inside `inner`, used by the
/// rectangular validation to fit each image to its batch's shape without distortion.
pub fn center_aspect(inner: CropBox, aspect: f64) -> CropBox {
    let (iw, ih) = (f64::from(inner.w), f64::from(inner.h));
    if !(aspect.is_finite() && aspect > 0.0) || inner.w == 0 || inner.h == 0 {
        return inner;
    }
    let (w, h) = if iw / ih > aspect {
        (((ih * aspect).round() as u32).clamp(1, inner.w), inner.h)
    } else {
        (inner.w, ((iw / aspect).round() as u32).clamp(1, inner.h))
    };
    CropBox {
        x: inner.x + (inner.w - w) / 2,
        y: inner.y + (inner.h - h) / 2,
        w,
        h,
    }
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
    fn center_aspect_fits_inside_with_the_requested_shape() {
        for w in (1..300u32).step_by(7) {
            for h in (1..300u32).step_by(11) {
                let inner = center_crop(w, h, 0.875);
                for aspect in [0.5, 0.75, 1.0, 1.333, 2.0] {
                    let b = center_aspect(inner, aspect);
                    assert!(b.x >= inner.x && b.y >= inner.y);
                    assert!(b.x + b.w <= inner.x + inner.w && b.y + b.h <= inner.y + inner.h);
                    assert!(b.w == inner.w || b.h == inner.h, "one side is kept whole");
                    if b.w > 4 && b.h > 4 {
                        let got = f64::from(b.w) / f64::from(b.h);
                        assert!((got / aspect - 1.0).abs() < 0.25, "{b:?} vs {aspect}");
                    }
                }
            }
        }
    }
}
