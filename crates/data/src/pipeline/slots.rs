//! Batch buffers the workers decode straight into, so an image's pixels are written once, by
//! the worker that resizes it, and never copied into the batch afterwards.
//!
//! Item `seq` goes to slot `seq % batch_size` of the buffer of group `seq / batch_size` (its
//! [`Slab`]), the place it has when no image before it is skipped. Keys are unique, so each slot
//! has exactly one writer, and the batcher reads a slot only after the worker's result for its
//! key has arrived over a channel (which orders the write before the read). When an image is
//! skipped, every later image of its epoch (training) or group (evaluation) belongs one place
//! earlier; the batcher then moves each of them down as it meets them in key order
//! ([`Slots::move_down`]): from a skip to the end of its epoch every image is copied once, as
//! every image was before this module; epochs without a skip copy nothing.
//!
//! Unsafe because slots of one buffer are written by several threads at once; the rule above
//! is what keeps those writes apart.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex, MutexGuard};

use super::reader::Key;

/// The pixel buffer of one group of `batch_size` items, all of one shape.
pub(super) struct Slab {
    /// The start of `buf`'s heap allocation, which never moves or resizes while shared.
    base: NonNull<u8>,
    /// Owns the memory; only touched again by [`Slab::into_pixels`], once nobody else holds it.
    buf: Vec<u8>,
    image_bytes: usize,
    width: u32,
    height: u32,
}

// SAFETY: the slab's bytes are only reached through `base`, one slot per key, under the
// single-writer rule of the module doc; the rest of the struct is plain data.
unsafe impl Send for Slab {}
unsafe impl Sync for Slab {}

impl Slab {
    /// A slab in `buf` (a returned batch's buffer, or empty): reused bytes are not cleared,
    /// since every byte a batch delivers is written first.
    fn new(mut buf: Vec<u8>, slots: usize, width: u32, height: u32) -> Slab {
        let image_bytes = width as usize * height as usize * 3;
        buf.resize(slots * image_bytes, 0);
        let base = NonNull::new(buf.as_mut_ptr()).expect("a Vec's pointer is never null");
        Slab {
            base,
            buf,
            image_bytes,
            width,
            height,
        }
    }

    pub(super) fn shape(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The first `n` images' pixels, `[n, height, width, 3]`, without a copy when this is the
    /// last handle to the slab (always, in the batcher: every claim on it is gone by then).
    pub(super) fn into_pixels(self: Arc<Self>, n: usize) -> Vec<u8> {
        let len = n * self.image_bytes;
        match Arc::try_unwrap(self) {
            Ok(slab) => {
                let mut buf = slab.buf;
                buf.truncate(len);
                buf
            }
            // SAFETY: slots below `n` were written and are no longer written (module doc).
            Err(shared) => {
                unsafe { std::slice::from_raw_parts(shared.base.as_ptr(), len) }.to_vec()
            }
        }
    }
}

/// A worker's exclusive hold on one slot: where its image's pixels go.
pub(super) struct Claim {
    slab: Arc<Slab>,
    slot: usize,
}

impl Claim {
    /// The slot's bytes, `[height, width, 3]`.
    pub(super) fn pixels(&mut self) -> &mut [u8] {
        let bytes = self.slab.image_bytes;
        // SAFETY: in bounds (slot < batch_size, the slab holds batch_size images); exclusive,
        // because keys are unique and only this claim was made for this key.
        unsafe {
            std::slice::from_raw_parts_mut(self.slab.base.as_ptr().add(self.slot * bytes), bytes)
        }
    }
}

/// Returned buffers kept for reuse: enough for the batches in flight between the pipeline and
/// its consumer.
const SPARES: usize = 4;

/// The open slabs of one pipeline, by `(epoch, group)`, and the buffers the consumer gave back.
pub(super) struct Slots {
    batch_size: usize,
    open: Mutex<HashMap<Key, Arc<Slab>>>,
    spare: Mutex<Vec<Vec<u8>>>,
}

/// Where an item's pixels were put, or belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub group: Key,
    pub slot: usize,
}

impl Slots {
    pub(super) fn new(batch_size: usize) -> Slots {
        Slots {
            batch_size: batch_size.max(1),
            open: Mutex::new(HashMap::new()),
            spare: Mutex::new(Vec::new()),
        }
    }

    /// Keeps a delivered batch's pixel buffer for a later slab: a fresh buffer must be zeroed
    /// and faulted in page by page, a returned one is already mapped and warm.
    pub(super) fn give_back(&self, pixels: Vec<u8>) {
        if let Ok(mut spare) = self.spare.lock() {
            if spare.len() < SPARES {
                spare.push(pixels);
            }
        }
    }

    /// Item `seq` of `epoch` as the `index`-th item of the epoch's (or group's) sequence.
    pub(super) fn place(&self, epoch: u64, index: u64) -> Place {
        let b = self.batch_size as u64;
        Place {
            group: (epoch, index / b),
            slot: (index % b) as usize,
        }
    }

    fn open(&self) -> Result<MutexGuard<'_, HashMap<Key, Arc<Slab>>>, &'static str> {
        self.open
            .lock()
            .map_err(|_| "the table of batch buffers is poisoned")
    }

    /// The slab of `group`, made for `width x height` images if it is missing (from a returned
    /// buffer when there is one).
    fn slab(&self, group: Key, (width, height): (u32, u32)) -> Result<Arc<Slab>, &'static str> {
        if let Some(slab) = self.open()?.get(&group) {
            return Ok(slab.clone());
        }
        // Made outside the lock: zero-filling a fresh buffer must not hold up other claims. If
        // another worker made the group's slab meanwhile, that one stays and this one drops.
        let buf = self.spare.lock().ok().and_then(|mut s| s.pop());
        let made = Slab::new(buf.unwrap_or_default(), self.batch_size, width, height);
        Ok(self.open()?.entry(group).or_insert(Arc::new(made)).clone())
    }

    /// The slot for `key`, in a slab of `width x height` images (made by the first claim on the
    /// group). An error if the group's slab holds another shape, which the reader never
    /// produces (a group shares one shape).
    pub(super) fn claim(&self, key: Key, width: u32, height: u32) -> Result<Claim, &'static str> {
        let place = self.place(key.0, key.1);
        let slab = self.slab(place.group, (width, height))?;
        if slab.shape() != (width, height) {
            return Err("its batch buffer holds images of another shape");
        }
        Ok(Claim {
            slab,
            slot: place.slot,
        })
    }

    /// The slab of `group`, if one was made.
    pub(super) fn get(&self, group: Key) -> Option<Arc<Slab>> {
        self.open().ok()?.get(&group).cloned()
    }

    /// Takes `group`'s slab out (a batch is complete): later claims on it would make a new one.
    pub(super) fn take(&self, group: Key) -> Option<Arc<Slab>> {
        self.open().ok()?.remove(&group)
    }

    /// Drops the slabs of groups before `first`, keeping their buffers for reuse: in training,
    /// the groups past an epoch's last batch that its spares were first written to; in
    /// evaluation, a group whose every image was skipped.
    pub(super) fn forget_before(&self, first: Key) {
        let dropped: Vec<Arc<Slab>> = match self.open() {
            Ok(mut open) => {
                let old: Vec<Key> = open.keys().filter(|&&k| k < first).copied().collect();
                old.iter().filter_map(|k| open.remove(k)).collect()
            }
            Err(_) => return,
        };
        for slab in dropped {
            if let Ok(slab) = Arc::try_unwrap(slab) {
                self.give_back(slab.buf);
            }
        }
    }

    /// Copies the image at `from` to `to`, an earlier place (making `to`'s slab if no item of
    /// its group got as far as a claim, e.g. all of them failed to parse).
    ///
    /// # Safety
    /// Both places must belong to keys whose results the batcher has already received, so that
    /// no worker writes either slot any more.
    pub(super) unsafe fn move_down(&self, from: Place, to: Place) -> Result<(), &'static str> {
        if from == to {
            return Ok(());
        }
        let src = self
            .get(from.group)
            .ok_or("the moved image's batch buffer is gone")?;
        let dst = self.slab(to.group, src.shape())?;
        if src.image_bytes != dst.image_bytes {
            return Err("an image would move into a batch buffer of another shape");
        }
        let n = src.image_bytes;
        std::ptr::copy_nonoverlapping(
            src.base.as_ptr().add(from.slot * n),
            dst.base.as_ptr().add(to.slot * n),
            n,
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_follow_seq_in_groups_of_batch_size() {
        let slots = Slots::new(4);
        // Explicit expectations, not the formula again: (group, slot) for seq 0, 3, 4, 8.
        for (seq, group, slot) in [(0, 0, 0), (3, 0, 3), (4, 1, 0), (8, 2, 0)] {
            let want = Place {
                group: (2, group),
                slot,
            };
            assert_eq!(slots.place(2, seq), want, "seq {seq}");
        }
    }

    #[test]
    fn claims_write_disjoint_slots_and_the_slab_comes_back_without_a_copy() {
        let slots = Slots::new(3);
        let mut claims: Vec<Claim> = (0..3).map(|s| slots.claim((0, s), 2, 1).unwrap()).collect();
        for (i, c) in claims.iter_mut().enumerate() {
            c.pixels().fill(i as u8 + 1);
        }
        drop(claims);
        let slab = slots.take((0, 0)).unwrap();
        let base = slab.base.as_ptr();
        let pixels = slab.into_pixels(3);
        assert_eq!(pixels.as_ptr(), base.cast_const(), "copied");
        assert_eq!(
            pixels,
            [1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3]
        );
    }

    #[test]
    fn moving_down_crosses_groups_and_truncation_keeps_the_first_images() {
        let slots = Slots::new(2);
        for s in 0..4u64 {
            slots
                .claim((0, s), 1, 1)
                .unwrap()
                .pixels()
                .fill(10 + s as u8);
        }
        // Item 1 was skipped: 2 and 3 move one place down.
        unsafe {
            slots
                .move_down(slots.place(0, 2), slots.place(0, 1))
                .unwrap();
            slots
                .move_down(slots.place(0, 3), slots.place(0, 2))
                .unwrap();
        }
        assert_eq!(
            slots.take((0, 0)).unwrap().into_pixels(2),
            [10; 3].iter().chain(&[12; 3]).copied().collect::<Vec<_>>()
        );
        assert_eq!(slots.take((0, 1)).unwrap().into_pixels(1), [13; 3]);
    }

    #[test]
    fn a_shape_mismatch_refuses_the_claim_and_old_groups_are_dropped_into_the_pool() {
        let slots = Slots::new(2);
        drop(slots.claim((0, 0), 4, 4).unwrap());
        assert!(slots.claim((0, 1), 4, 5).is_err());
        drop(slots.claim((0, 2), 4, 4).unwrap());
        drop(slots.claim((1, 0), 4, 5).unwrap());
        slots.forget_before((0, 1));
        assert!(slots.get((0, 0)).is_none());
        assert!(slots.get((0, 1)).is_some());
        slots.forget_before((1, 0));
        assert!(slots.get((0, 1)).is_none());
        assert!(slots.get((1, 0)).is_some());
        assert_eq!(slots.spare.lock().unwrap().len(), 2, "buffers not kept");
    }

    #[test]
    fn moving_into_a_group_no_item_claimed_makes_its_slab() {
        // Items 0 and 1 failed before their claims (batch 2): item 2 becomes item 0.
        let slots = Slots::new(2);
        slots.claim((0, 2), 1, 1).unwrap().pixels().fill(42);
        unsafe {
            slots
                .move_down(slots.place(0, 2), slots.place(0, 0))
                .unwrap()
        };
        assert_eq!(slots.take((0, 0)).unwrap().into_pixels(1), [42; 3]);
    }

    #[test]
    fn a_returned_buffer_is_reused_for_the_next_slab() {
        let slots = Slots::new(2);
        // A batch's buffer, as delivered: 2 images of 2 x 2 pixels.
        let given: Vec<u8> = vec![5; 24];
        let ptr = given.as_ptr();
        slots.give_back(given);
        let mut claim = slots.claim((0, 0), 2, 2).unwrap();
        claim.pixels().fill(1);
        drop(claim);
        let pixels = slots.take((0, 0)).unwrap().into_pixels(1);
        assert_eq!(pixels.as_ptr(), ptr, "a new buffer was made");
        assert_eq!(pixels, [1; 12]);
        // A truncated one (a short last batch) grows back; the pool is capped.
        slots.give_back(pixels);
        drop(slots.claim((0, 2), 2, 2).unwrap());
        let slab = slots.get((0, 1)).unwrap();
        assert_eq!((slab.buf.as_ptr(), slab.buf.len()), (ptr, 24));
        for _ in 0..10 {
            slots.give_back(vec![0; 3]);
        }
        assert_eq!(slots.spare.lock().unwrap().len(), SPARES);
    }

    #[test]
    fn a_slab_still_shared_is_copied_out() {
        let slots = Slots::new(2);
        let mut claim = slots.claim((0, 0), 1, 1).unwrap();
        claim.pixels().copy_from_slice(&[7, 8, 9]);
        let slab = slots.take((0, 0)).unwrap();
        assert_eq!(slab.into_pixels(1), [7, 8, 9]);
        drop(claim);
    }
}
