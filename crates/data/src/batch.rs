//! The unit the pipeline hands to the trainer: uint8 NHWC pixels and 0-based labels. Pixels
//! stay uint8 until the graph, which converts and normalises them; a quarter of the bytes of f32.

/// One batch. Invariants: `images.len() == n * height * width * 3`, `labels.len() == n`, and
/// `filenames`, when present, has `n` entries in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `[n, height, width, 3]` u8, RGB, row-major (NHWC).
    pub images: Vec<u8>,
    /// `[n]` i32, 0-based class = the record's 1-based `image/class/label` minus 1.
    pub labels: Vec<i32>,
    pub n: usize,
    pub height: usize,
    pub width: usize,
    /// The records' `image/filename`, evaluation only (exclude lists, per-image reports).
    pub filenames: Option<Vec<String>>,
}

impl Batch {
    /// Bytes of one image, `height * width * 3`.
    pub fn image_bytes(&self) -> usize {
        self.height * self.width * 3
    }

    /// The pixels of image `i`, `[height, width, 3]` u8.
    pub fn image(&self, i: usize) -> &[u8] {
        let b = self.image_bytes();
        &self.images[i * b..(i + 1) * b]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_slices_follow_nhwc() {
        for n in 1..5usize {
            for (h, w) in [(1, 1), (2, 3), (5, 4)] {
                let b = Batch {
                    images: (0..n * h * w * 3)
                        .map(|i| (i / (h * w * 3)) as u8)
                        .collect(),
                    labels: vec![0; n],
                    n,
                    height: h,
                    width: w,
                    filenames: None,
                };
                for i in 0..n {
                    assert!(b.image(i).iter().all(|&p| p as usize == i));
                }
            }
        }
    }
}
