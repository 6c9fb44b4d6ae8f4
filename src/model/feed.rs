//! The batch as the graph's input tensors. Filling them copies every pixel once (38.5 MB a step at
//! 224 px and batch 256), and a tensor the `tensorflow` crate makes new is zeroed before that:
//! so image tensors are kept in a [`FeedPool`] and reused, and the trainer fills the next step's
//! [`Feed`] on its own thread while the current step runs (`train::feeder`), which takes the copy
//! off the step's critical path.
//!
//! A fed tensor is safe to refill once its session run has returned: TensorFlow's executor drops
//! its references to the feeds when the run ends, and nothing in these graphs keeps the images
//! (they are cast and normalised, never assigned to a variable).

use std::sync::{Arc, Mutex};

use tensorflow::{Operation, SessionRunArgs, Tensor};

use super::ModelError;

/// One batch on the host, as the pipeline makes it. Images are RGB, row-major NHWC.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    /// [n, height, width, 3] u8.
    pub images: &'a [u8],
    /// `[n]` i32, 0-based class ids.
    pub labels: &'a [i32],
    pub n: usize,
    pub height: usize,
    pub width: usize,
}

/// The pipeline's batch as the graph's input, borrowed: the one place `data` meets `model`.
impl<'a> From<&'a dawnrun_data::Batch> for BatchRef<'a> {
    fn from(b: &'a dawnrun_data::Batch) -> Self {
        BatchRef {
            images: &b.images,
            labels: &b.labels,
            n: b.n,
            height: b.height,
            width: b.width,
        }
    }
}

/// Image tensors no feed holds, kept for reuse. The trainer holds at most two at once (the one
/// being run, the one filled ahead); `trainer bench` holds its pre-made batch as well.
const SPARES: usize = 4;

/// Reusable `[N, H, W, 3]` u8 image tensors, shared by a graph and whoever fills its feeds. Clones
/// share one pool.
#[derive(Clone, Default)]
pub struct FeedPool {
    spare: Arc<Mutex<Vec<Tensor<u8>>>>,
}

impl FeedPool {
    /// `batch` as checked input tensors: sizes agree, and every label is in `0..num_classes` (TF's
    /// OneHot would silently turn a bad label into an all-zero target).
    pub fn fill(&self, batch: &BatchRef, num_classes: u32) -> Result<Feed, ModelError> {
        let BatchRef {
            images,
            labels,
            n,
            height: h,
            width: w,
        } = *batch;
        let want = n * h * w * 3;
        if images.len() != want || n == 0 {
            return Err(ModelError::Input {
                what: "images",
                detail: format!(
                    "{} bytes for a [{n}, {h}, {w}, 3] batch (need {want}, n > 0)",
                    images.len()
                ),
            });
        }
        if labels.len() != n {
            return Err(ModelError::Input {
                what: "labels",
                detail: format!("{} labels for a batch of {n}", labels.len()),
            });
        }
        if let Some((i, l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l < 0 || l as u32 >= num_classes)
        {
            return Err(ModelError::Input {
                what: "labels",
                detail: format!("label {l} at index {i} is outside 0..{num_classes}"),
            });
        }
        let dims = [n as u64, h as u64, w as u64, 3];
        let mut tensor = self.take(&dims);
        tensor.copy_from_slice(images);
        let mut label_tensor = Tensor::new(&[n as u64]);
        label_tensor.copy_from_slice(labels);
        Ok(Feed {
            images: Some(tensor),
            labels: label_tensor,
            num_classes,
            pool: self.clone(),
        })
    }

    /// A spare tensor of `dims`, or a new one. Spares of other shapes (an earlier phase's) are
    /// dropped: phases do not come back.
    fn take(&self, dims: &[u64]) -> Tensor<u8> {
        if let Ok(mut spare) = self.spare.lock() {
            spare.retain(|t| t.dims() == dims);
            if let Some(t) = spare.pop() {
                return t;
            }
        }
        Tensor::new(dims)
    }

    fn give_back(&self, tensor: Tensor<u8>) {
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < SPARES {
                spare.push(tensor);
            }
        }
    }

    /// Tensors kept for reuse (tests).
    pub fn spares(&self) -> usize {
        self.spare.lock().map(|s| s.len()).unwrap_or(0)
    }
}

/// A checked batch in the graph's input tensors; its image tensor goes back to its pool when
/// dropped.
pub struct Feed {
    /// `Some` until dropped.
    images: Option<Tensor<u8>>,
    labels: Tensor<i32>,
    /// The labels were checked against this many classes.
    num_classes: u32,
    pool: FeedPool,
}

impl Feed {
    /// Images in the batch.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Feeds the batch to the `images` and `labels` placeholders of a run.
    pub(super) fn add_to<'a>(
        &'a self,
        args: &mut SessionRunArgs<'a>,
        images: &'a Operation,
        labels: &'a Operation,
    ) {
        args.add_feed(images, 0, self.images());
        args.add_feed(labels, 0, &self.labels);
    }

    fn images(&self) -> &Tensor<u8> {
        self.images
            .as_ref()
            .expect("a feed holds its images until it is dropped")
    }

    /// The batch's labels, in order.
    pub fn labels(&self) -> &[i32] {
        &self.labels
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        if let Some(t) = self.images.take() {
            self.pool.give_back(t);
        }
    }
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Feed({:?})", self.images().dims())
    }
}

/// What a graph method accepts as its batch: host data, filled into tensors from the graph's own
/// pool ([`BatchRef`]), or tensors filled beforehand ([`Feed`]).
pub trait AsFeed {
    fn as_feed(&self, pool: &FeedPool, num_classes: u32) -> Result<Fed<'_>, ModelError>;
}

/// A feed made for one call, or one lent to it.
pub enum Fed<'a> {
    Made(Feed),
    Lent(&'a Feed),
}

impl std::ops::Deref for Fed<'_> {
    type Target = Feed;
    fn deref(&self) -> &Feed {
        match self {
            Fed::Made(f) => f,
            Fed::Lent(f) => f,
        }
    }
}

impl AsFeed for BatchRef<'_> {
    fn as_feed(&self, pool: &FeedPool, num_classes: u32) -> Result<Fed<'_>, ModelError> {
        pool.fill(self, num_classes).map(Fed::Made)
    }
}

impl AsFeed for Feed {
    /// The feed itself, if its labels were checked against no more classes than the graph has.
    fn as_feed(&self, _pool: &FeedPool, num_classes: u32) -> Result<Fed<'_>, ModelError> {
        if self.num_classes > num_classes {
            return Err(ModelError::Input {
                what: "labels",
                detail: format!(
                    "checked against {} classes, the graph has {num_classes}",
                    self.num_classes
                ),
            });
        }
        Ok(Fed::Lent(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch<'a>(images: &'a [u8], labels: &'a [i32], px: usize) -> BatchRef<'a> {
        BatchRef {
            images,
            labels,
            n: labels.len(),
            height: px,
            width: px,
        }
    }

    #[test]
    fn a_feed_holds_the_batch_and_its_tensor_is_reused() {
        let pool = FeedPool::default();
        let (a, b) = (vec![3u8; 2 * 4 * 4 * 3], vec![9u8; 2 * 4 * 4 * 3]);
        let first = pool.fill(&batch(&a, &[0, 1], 4), 10).unwrap();
        assert_eq!(&first.images()[..], &a[..]);
        assert_eq!(first.labels(), &[0, 1]);
        assert_eq!(first.images().dims(), &[2, 4, 4, 3]);
        let at = first.images().as_ptr();
        drop(first);
        assert_eq!(pool.spares(), 1);
        let second = pool.fill(&batch(&b, &[1, 0], 4), 10).unwrap();
        assert_eq!(second.images().as_ptr(), at, "the spare tensor is refilled");
        assert_eq!(&second.images()[..], &b[..]);
        assert_eq!(pool.spares(), 0);
        // Another shape gets its own tensor; the old shape's spare is dropped.
        drop(second);
        let other = pool.fill(&batch(&[1u8; 6 * 6 * 3], &[2], 6), 10).unwrap();
        assert_eq!(other.images().dims(), &[1, 6, 6, 3]);
        assert_eq!(pool.spares(), 0);
    }

    #[test]
    fn bad_batches_are_refused_with_their_numbers() {
        let pool = FeedPool::default();
        let px = vec![0u8; 2 * 4 * 4 * 3];
        let short = pool.fill(&batch(&px[1..], &[0, 1], 4), 10).unwrap_err();
        assert!(short
            .to_string()
            .contains("95 bytes for a [2, 4, 4, 3] batch"));
        let label = pool.fill(&batch(&px, &[0, 10], 4), 10).unwrap_err();
        assert!(label
            .to_string()
            .contains("label 10 at index 1 is outside 0..10"));
        let feed = pool.fill(&batch(&px, &[0, 9], 4), 10).unwrap();
        let narrow = feed.as_feed(&pool, 5).map(|_| ()).unwrap_err();
        assert!(narrow.to_string().contains("checked against 10 classes"));
        assert!(feed.as_feed(&pool, 10).is_ok());
    }
}
