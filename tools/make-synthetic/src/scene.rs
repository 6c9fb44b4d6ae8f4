//! One image: sample its scene from the image's own RNG, then draw it at a pixel size.
//!
//! A scene is drawn in coordinates relative to the image's short side, so the same scene drawn
//! at two sizes is the same picture. The writer draws once at the largest size and resizes down,
//! which also keeps the per-pixel noise identical across sizes.
//!
//! What a CNN has to learn: the class object's outline, palette and texture, seen through a
//! random background (two-colour gradient plus blotches), colour jitter, rotation, scale,
//! position, pixel noise and smaller distractor shapes of random kind and colour. The class
//! object is large and near the middle (1 to 3 copies), so a random crop of 35% of the area still
//! shows most of it.

use crate::classes::{ClassSpec, Shape, Texture, SHAPES};
use image::RgbImage;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// Aspect ratios (long side / short side) an image may have, square listed twice so it is as
/// common as in photo sets; orientation (portrait 40%) is picked separately.
const ASPECTS: [f32; 6] = [1.0, 1.0, 5.0 / 4.0, 4.0 / 3.0, 3.0 / 2.0, 16.0 / 9.0];

/// A shape placed on the canvas. Positions and radius are in short-side units.
#[derive(Debug, Clone)]
struct Object {
    shape: Shape,
    texture: Texture,
    primary: [f32; 3],
    secondary: [f32; 3],
    centre: (f32, f32),
    radius: f32,
    /// Rotation in radians (cos, sin) of the object frame.
    rotation: (f32, f32),
    /// Texture cells per object radius.
    texture_freq: f32,
}

impl Object {
    /// Colour at canvas point `(u, v)` (short-side units), or `None` outside the shape.
    fn colour_at(&self, u: f32, v: f32) -> Option<[f32; 3]> {
        let (dx, dy) = (
            (u - self.centre.0) / self.radius,
            (v - self.centre.1) / self.radius,
        );
        let (c, s) = self.rotation;
        let (x, y) = (c * dx + s * dy, -s * dx + c * dy);
        if !self.shape.contains(x, y) {
            return None;
        }
        let f = self.texture_freq;
        let use_secondary = match self.texture {
            Texture::Solid => false,
            Texture::Stripes => (x * f).rem_euclid(2.0) < 1.0,
            Texture::Checker => ((x * f).floor() + (y * f).floor()).rem_euclid(2.0) < 1.0,
            Texture::Dots => {
                let (fx, fy) = ((x * f).rem_euclid(1.0) - 0.5, (y * f).rem_euclid(1.0) - 0.5);
                fx * fx + fy * fy < 0.09
            }
        };
        Some(if use_secondary {
            self.secondary
        } else {
            self.primary
        })
    }
}

/// Everything needed to draw one image, sampled once from its RNG.
#[derive(Debug, Clone)]
pub struct Scene {
    /// Long side / short side, >= 1.
    aspect: f32,
    portrait: bool,
    bg_from: [f32; 3],
    bg_to: [f32; 3],
    /// Unit direction of the background gradient.
    bg_dir: (f32, f32),
    /// Coarse blotch grid (BLOTCH x BLOTCH values in -1..1), bilinearly interpolated.
    blotches: Vec<f32>,
    blotch_amp: f32,
    /// Drawn in order: distractors behind, class objects, distractors in front.
    objects: Vec<Object>,
    /// Standard deviation-ish of the per-pixel noise, in 0..255 units.
    noise_amp: f32,
    noise_seed: u64,
}

const BLOTCH: usize = 5;

fn random_colour(rng: &mut ChaCha8Rng) -> [f32; 3] {
    [
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
        rng.gen_range(0.0..255.0),
    ]
}

fn jitter(rng: &mut ChaCha8Rng, colour: [u8; 3], amount: f32, brightness: f32) -> [f32; 3] {
    colour.map(|c| (c as f32 * brightness + rng.gen_range(-amount..amount)).clamp(0.0, 255.0))
}

fn rotation(rng: &mut ChaCha8Rng) -> (f32, f32) {
    let angle: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
    (angle.cos(), angle.sin())
}

impl Scene {
    /// Sample a scene of class `class` from `rng` (the image's own generator).
    pub fn sample(class: &ClassSpec, rng: &mut ChaCha8Rng) -> Scene {
        let aspect = ASPECTS[rng.gen_range(0..ASPECTS.len())];
        let portrait = rng.gen_bool(0.4);
        let (w, h) = if portrait {
            (1.0, aspect)
        } else {
            (aspect, 1.0)
        };
        let angle: f32 = rng.gen_range(0.0..std::f32::consts::TAU);
        let blotches = (0..BLOTCH * BLOTCH)
            .map(|_| rng.gen_range(-1.0..1.0))
            .collect();

        let distractor = |rng: &mut ChaCha8Rng| Object {
            shape: SHAPES[rng.gen_range(0..SHAPES.len())],
            texture: Texture::Solid,
            primary: random_colour(rng),
            secondary: [0.0; 3],
            centre: (rng.gen_range(0.0..w), rng.gen_range(0.0..h)),
            radius: rng.gen_range(0.06..0.16),
            rotation: rotation(rng),
            texture_freq: 1.0,
        };
        let mut objects = Vec::new();
        for _ in 0..rng.gen_range(0..3) {
            objects.push(distractor(rng));
        }
        let copies = if rng.gen_bool(0.7) {
            1
        } else {
            rng.gen_range(2..=3)
        };
        let brightness = rng.gen_range(0.8..1.15);
        for copy in 0..copies {
            // One big copy near the middle; extra copies smaller and anywhere.
            let (radius, spread) = if copy == 0 {
                (rng.gen_range(0.24..0.42), 0.18)
            } else {
                (rng.gen_range(0.12..0.22), 0.4)
            };
            let centre = (
                w / 2.0 + rng.gen_range(-spread..spread) * w,
                h / 2.0 + rng.gen_range(-spread..spread) * h,
            );
            objects.push(Object {
                shape: class.shape,
                texture: class.texture,
                primary: jitter(rng, class.palette.primary, 30.0, brightness),
                secondary: jitter(rng, class.palette.secondary, 30.0, brightness),
                centre,
                radius,
                rotation: rotation(rng),
                texture_freq: rng.gen_range(1.6..3.2),
            });
        }
        if rng.gen_bool(0.3) {
            objects.push(distractor(rng));
        }
        Scene {
            aspect,
            portrait,
            bg_from: random_colour(rng),
            bg_to: random_colour(rng),
            bg_dir: (angle.cos(), angle.sin()),
            blotches,
            blotch_amp: rng.gen_range(0.0..50.0),
            objects,
            noise_amp: rng.gen_range(4.0..22.0),
            noise_seed: rng.gen(),
        }
    }

    /// Pixel size `(width, height)` when the short side is `short_px`.
    pub fn dimensions(&self, short_px: u32) -> (u32, u32) {
        let long_px = (short_px as f32 * self.aspect).round() as u32;
        if self.portrait {
            (short_px, long_px)
        } else {
            (long_px, short_px)
        }
    }

    /// Draw the scene with short side `short_px`.
    pub fn draw(&self, short_px: u32) -> RgbImage {
        let (width, height) = self.dimensions(short_px);
        let scale = 1.0 / short_px as f32;
        let (w_units, h_units) = (width as f32 * scale, height as f32 * scale);
        // Gradient parameter t in 0..1 along bg_dir across the canvas.
        let corners = [
            (0.0, 0.0),
            (w_units, 0.0),
            (0.0, h_units),
            (w_units, h_units),
        ];
        let proj = |u: f32, v: f32| u * self.bg_dir.0 + v * self.bg_dir.1;
        let t_min = corners
            .iter()
            .map(|&(u, v)| proj(u, v))
            .fold(f32::MAX, f32::min);
        let t_max = corners
            .iter()
            .map(|&(u, v)| proj(u, v))
            .fold(f32::MIN, f32::max);
        let mut noise = SplitMix(self.noise_seed);
        let mut img = RgbImage::new(width, height);
        for (px, py, pixel) in img.enumerate_pixels_mut() {
            let (u, v) = ((px as f32 + 0.5) * scale, (py as f32 + 0.5) * scale);
            let t = (proj(u, v) - t_min) / (t_max - t_min).max(1e-6);
            let blotch = self.blotch_amp * self.blotch_at(u / w_units, v / h_units);
            let mut rgb: [f32; 3] = std::array::from_fn(|c| {
                self.bg_from[c] + t * (self.bg_to[c] - self.bg_from[c]) + blotch
            });
            for object in &self.objects {
                if let Some(colour) = object.colour_at(u, v) {
                    rgb = colour;
                }
            }
            let n = self.noise_amp * (noise.next_unit() + noise.next_unit() - 1.0);
            pixel.0 = rgb.map(|c| (c + n).clamp(0.0, 255.0) as u8);
        }
        img
    }

    /// Bilinear interpolation of the blotch grid at relative position (x, y) in 0..1.
    fn blotch_at(&self, x: f32, y: f32) -> f32 {
        let max = (BLOTCH - 1) as f32;
        let (gx, gy) = ((x * max).clamp(0.0, max), (y * max).clamp(0.0, max));
        let (x0, y0) = (gx.floor() as usize, gy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(BLOTCH - 1), (y0 + 1).min(BLOTCH - 1));
        let (fx, fy) = (gx - x0 as f32, gy - y0 as f32);
        let at = |x: usize, y: usize| self.blotches[y * BLOTCH + x];
        let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
        let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
        top * (1.0 - fy) + bottom * fy
    }
}

/// A tiny fast generator for per-pixel noise (a ChaCha call per pixel would dominate drawing).
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn next_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classes::class_specs;
    use rand::SeedableRng;

    #[test]
    fn short_side_is_the_requested_size_for_every_seed() {
        let classes = class_specs(10);
        for seed in 0..200u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let scene = Scene::sample(&classes[seed as usize % 10], &mut rng);
            for short in [32, 160, 320] {
                let (w, h) = scene.dimensions(short);
                assert_eq!(w.min(h), short);
                let ratio = w.max(h) as f32 / short as f32;
                assert!((1.0..=1.8).contains(&ratio), "ratio {ratio}");
            }
        }
    }

    #[test]
    fn same_seed_draws_the_same_pixels() {
        let classes = class_specs(3);
        for seed in 0..10u64 {
            let draw = || {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                Scene::sample(&classes[1], &mut rng).draw(48)
            };
            assert_eq!(draw(), draw());
        }
    }

    #[test]
    fn class_object_covers_a_good_part_of_the_image() {
        let classes = class_specs(10);
        for seed in 0..100u64 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let scene = Scene::sample(&classes[seed as usize % 10], &mut rng);
            let (w, h) = scene.dimensions(64);
            let main = scene.objects.iter().find(|o| o.texture_freq > 1.0).unwrap();
            let mut hits = 0;
            for y in 0..h {
                for x in 0..w {
                    let (u, v) = ((x as f32 + 0.5) / 64.0, (y as f32 + 0.5) / 64.0);
                    hits += main.colour_at(u, v).is_some() as u32;
                }
            }
            let frac = hits as f32 / (w * h) as f32;
            assert!(frac > 0.04, "seed {seed}: class object covers {frac}");
        }
    }
}
