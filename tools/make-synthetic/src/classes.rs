//! What makes a class: the fixed recipe (shape, palette, texture) every image of that class is
//! drawn from, its made-up synset id and its human-readable name.
//!
//! Recipes come from a fixed enumeration of all shape x palette x texture combinations in a
//! fixed scrambled order, so class 0..N never depends on the run seed: the synset list, labels
//! and names are the same for every seed and only the images change.

/// The object outline drawn for a class, in object-local coordinates (radius 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Circle,
    Square,
    Triangle,
    Cross,
    Ring,
    Diamond,
}

pub const SHAPES: [Shape; 6] = [
    Shape::Circle,
    Shape::Square,
    Shape::Triangle,
    Shape::Cross,
    Shape::Ring,
    Shape::Diamond,
];

impl Shape {
    pub fn name(self) -> &'static str {
        match self {
            Shape::Circle => "circle",
            Shape::Square => "square",
            Shape::Triangle => "triangle",
            Shape::Cross => "cross",
            Shape::Ring => "ring",
            Shape::Diamond => "diamond",
        }
    }

    /// Whether the object-local point `(x, y)` lies inside the outline. Every shape fits in the
    /// unit disc, so an object's scale is its radius in pixels.
    pub fn contains(self, x: f32, y: f32) -> bool {
        let r2 = x * x + y * y;
        match self {
            Shape::Circle => r2 < 1.0,
            Shape::Square => x.abs().max(y.abs()) < 0.72,
            Shape::Triangle => {
                // Equilateral, vertices at radius 1 (apex up); inside when on the inner side of
                // all three edges, whose outward normals point at 270, 30 and 150 degrees.
                let (s, c) = (0.5_f32, 0.866_025_4_f32);
                -y < 0.5 && (c * x + s * y) < 0.5 && (-c * x + s * y) < 0.5
            }
            Shape::Cross => (x.abs() < 0.3 && y.abs() < 0.95) || (y.abs() < 0.3 && x.abs() < 0.95),
            Shape::Ring => (0.36..1.0).contains(&r2),
            Shape::Diamond => x.abs() + y.abs() < 1.0,
        }
    }
}

/// How the inside of a class object is filled, in object-local coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Texture {
    Solid,
    Stripes,
    Checker,
    Dots,
}

pub const TEXTURES: [Texture; 4] = [
    Texture::Solid,
    Texture::Stripes,
    Texture::Checker,
    Texture::Dots,
];

impl Texture {
    pub fn name(self) -> &'static str {
        match self {
            Texture::Solid => "plain",
            Texture::Stripes => "striped",
            Texture::Checker => "checkered",
            Texture::Dots => "dotted",
        }
    }
}

/// Two colours (primary, secondary) in RGB u8 and the palette's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Palette {
    pub name: &'static str,
    pub primary: [u8; 3],
    pub secondary: [u8; 3],
}

pub const PALETTES: [Palette; 8] = [
    palette("red and yellow", [210, 40, 40], [240, 220, 60]),
    palette("blue and white", [40, 70, 200], [235, 235, 235]),
    palette("green and black", [40, 170, 60], [25, 25, 25]),
    palette("purple and orange", [130, 50, 170], [245, 140, 30]),
    palette("cyan and magenta", [40, 200, 210], [210, 40, 180]),
    palette("brown and pink", [120, 75, 35], [245, 160, 190]),
    palette("grey and lime", [128, 128, 128], [170, 240, 40]),
    palette("navy and gold", [20, 30, 90], [220, 180, 40]),
];

const fn palette(name: &'static str, primary: [u8; 3], secondary: [u8; 3]) -> Palette {
    Palette {
        name,
        primary,
        secondary,
    }
}

/// Number of distinct recipes, hence the largest `--classes` accepted.
pub const MAX_CLASSES: usize = SHAPES.len() * PALETTES.len() * TEXTURES.len();

/// One class: everything that is the same for all its images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassSpec {
    /// Made-up ImageNet-like id, `n` + 8 digits; ids increase with the class index, so the
    /// sorted synset list is the class order and label = index + 1.
    pub synset: String,
    pub shape: Shape,
    pub palette: Palette,
    pub texture: Texture,
}

impl ClassSpec {
    /// The human-readable text written to `metadata.txt`, e.g. "striped red and yellow circle".
    pub fn text(&self) -> String {
        format!(
            "{} {} {}",
            self.texture.name(),
            self.palette.name,
            self.shape.name()
        )
    }
}

/// The first `count` classes. Recipe `i` is combination `(i * STRIDE) mod MAX_CLASSES` (STRIDE
/// coprime with MAX_CLASSES, so all are distinct), which spreads neighbouring classes over
/// different shapes, palettes and textures instead of varying only the texture.
pub fn class_specs(count: usize) -> Vec<ClassSpec> {
    const STRIDE: usize = 67; // coprime with 192 = 2^6 * 3
    (0..count)
        .map(|i| {
            let combo = (i * STRIDE) % MAX_CLASSES;
            let shape = SHAPES[combo % SHAPES.len()];
            let palette = PALETTES[(combo / SHAPES.len()) % PALETTES.len()];
            let texture = TEXTURES[combo / (SHAPES.len() * PALETTES.len())];
            ClassSpec {
                synset: format!("n{:08}", 1_000_000 + 7_919 * i),
                shape,
                palette,
                texture,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_recipe_and_synset_is_distinct_and_sorted() {
        let specs = class_specs(MAX_CLASSES);
        let recipes: HashSet<String> = specs.iter().map(|c| c.text()).collect();
        assert_eq!(recipes.len(), MAX_CLASSES);
        let synsets: Vec<&String> = specs.iter().map(|c| &c.synset).collect();
        let mut sorted = synsets.clone();
        sorted.sort();
        assert_eq!(synsets, sorted);
        assert!(specs.iter().all(|c| c.synset.len() == 9));
    }

    #[test]
    fn first_ten_classes_do_not_share_a_shape_and_palette() {
        let specs = class_specs(10);
        let pairs: HashSet<(&str, &str)> = specs
            .iter()
            .map(|c| (c.shape.name(), c.palette.name))
            .collect();
        assert_eq!(pairs.len(), 10);
    }

    #[test]
    fn shapes_stay_inside_the_unit_disc_and_cover_their_centre_region() {
        for shape in SHAPES {
            let mut inside = 0;
            for i in 0..200 {
                for j in 0..200 {
                    let (x, y) = (i as f32 / 50.0 - 2.0, j as f32 / 50.0 - 2.0);
                    if shape.contains(x, y) {
                        assert!(x * x + y * y < 1.01, "{shape:?} at ({x}, {y})");
                        inside += 1;
                    }
                }
            }
            // 200x200 grid over [-2, 2)^2: the unit disc is ~7,850 cells; each shape fills a
            // good part of it.
            assert!(inside > 1_500, "{shape:?} covers only {inside} cells");
        }
    }
}
