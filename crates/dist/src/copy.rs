//! Copies of gradient buffers: fast at any relative alignment of the two addresses
//! ([`copy_floats`]), and past the caches for buffers too large to stay in them
//! ([`stream_floats`]).
#![allow(unsafe_code)]

/// Elements per block of [`copy_floats`]'s backward copy: 2 KiB, under the smallest size for
/// which glibc's `memcpy` takes `rep movsb` (2112 bytes here), so every block takes its vector loop.
const COPY_BLOCK: usize = 512;

/// From this many elements (512 KiB) on, glibc's `memcpy` leaves `rep movsb` for a vector loop
/// that handles the case below itself, slightly faster than our blocks (measured here).
const COPY_BACKWARDS_BELOW: usize = 128 * 1024;

/// `dst.copy_from_slice(src)`, except when the destination lies 1-63 bytes past the source
/// modulo a 4 KiB page: then in 2 KiB blocks from the end backwards.
///
/// Why: at that distance each load of the source looks (by its low 12 address bits) like the
/// store just made to the destination, and the CPU stalls on the false dependency ("4K
/// aliasing"). glibc's `memcpy` copies 2 KiB-512 KiB with `rep movsb` on this AMD CPU, which
/// then runs at 2-3 GB/s against 23-74 GB/s at other distances (`bench/c/memcpy_distance.c`,
/// BENCHMARKS.md). A large `Vec` begins 16 bytes into a page and a shared-memory slot at a page,
/// so the host all-reduce, copying slots back into a `Vec`, hit it whenever the chunks were
/// under 512 KiB, e.g. 1,000,000 floats at 8 ranks. Any copy at an element offset can land
/// there (the overlapped step copies each fusion group into the gradient buffer at its
/// offset). Backwards, every load comes before the stores that alias it.
pub fn copy_floats(dst: &mut [f32], src: &[f32]) {
    if !backwards(dst.as_ptr() as usize, src.as_ptr() as usize, dst.len()) {
        dst.copy_from_slice(src);
        return;
    }
    assert_eq!(dst.len(), src.len(), "copy_floats: lengths differ");
    for (d, s) in dst.rchunks_mut(COPY_BLOCK).zip(src.rchunks(COPY_BLOCK)) {
        d.copy_from_slice(s);
    }
}

/// Whether [`copy_floats`] goes backwards: the destination address 1-63 bytes past the source's
/// modulo 4 KiB, and a length where glibc would take `rep movsb`.
fn backwards(dst: usize, src: usize, len: usize) -> bool {
    let distance = dst.wrapping_sub(src) % 4096;
    (1..64).contains(&distance) && (COPY_BLOCK + 1..COPY_BACKWARDS_BELOW).contains(&len)
}

/// Elements per iteration of [`stream_floats`]' loop: one 64-byte cache line.
const LINE: usize = 16;

/// `dst.copy_from_slice(src)` with non-temporal stores: the destination's lines go to memory
/// without being read first and without evicting the caches' contents.
///
/// Why: where the destination will not be read again before the caches have turned over (the
/// host all-reduce writing a 100 MB gradient buffer back), an ordinary store first reads each
/// line it writes (a third more memory traffic than the copy needs) and pushes out data that
/// will be read soon. glibc's `memcpy` streams only above its own threshold, 3/4 of the shared
/// cache it reads from CPUID: 190 MB on this VM (the host's whole L3), so never for our copies.
/// Where the destination is read again soon, plain copies are faster (measured: BENCHMARKS.md,
/// "Streaming the copy back").
pub fn stream_floats(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len(), "stream_floats: lengths differ");
    #[cfg(target_arch = "x86_64")]
    {
        // Plain copy up to the destination's first cache-line boundary, then whole lines.
        let misaligned = (dst.as_ptr() as usize % 64) / 4;
        let head = ((LINE - misaligned) % LINE).min(dst.len());
        let (dst_head, dst_rest) = dst.split_at_mut(head);
        let (src_head, src_rest) = src.split_at(head);
        dst_head.copy_from_slice(src_head);
        let lines = dst_rest.len() / LINE * LINE;
        // SAFETY: SSE is part of x86_64; every load reads `src_rest[i..i + 4]` and every store
        // writes `dst_rest[i..i + 4]` with `i + 4 <= lines <= len`, the stores 16-byte aligned
        // (`dst_rest` starts on a 64-byte boundary, `i` steps by 4 floats); the slices do not
        // overlap (one is `&mut`). The fence orders the streamed stores before whatever the
        // caller does next (a barrier other processes wait on).
        unsafe {
            use std::arch::x86_64::{_mm_loadu_ps, _mm_sfence, _mm_stream_ps};
            let (d, s) = (dst_rest.as_mut_ptr(), src_rest.as_ptr());
            for i in (0..lines).step_by(4) {
                _mm_stream_ps(d.add(i), _mm_loadu_ps(s.add(i)));
            }
            _mm_sfence();
        }
        dst_rest[lines..].copy_from_slice(&src_rest[lines..]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_floats_copies_every_element_at_every_alignment() {
        for k in 0..20 {
            for len in [0, 1, 3, 15, 16, 17, 63, 64, 100, 1000, 4099] {
                let src: Vec<f32> = (0..len).map(|i| i as f32 * 0.5 - 7.0).collect();
                let mut buf = vec![0.0f32; len + 40];
                stream_floats(&mut buf[k..k + len], &src);
                assert_eq!(&buf[k..k + len], &src[..], "k {k} len {len}");
                let untouched = buf[..k].iter().chain(&buf[k + len..]);
                assert!(untouched.copied().all(|x| x == 0.0), "k {k} len {len}");
            }
        }
    }

    #[test]
    fn copy_floats_copies_every_element_at_every_distance() {
        // Source and destination in one buffer, 8192 + k floats apart: the destination is 4k
        // bytes past the source modulo 4 KiB, so k = 1..15 takes the backward path.
        for k in 0..20 {
            for len in [0, 1, 15, 512, 513, 1000, 1025, 4000] {
                let mut buf = vec![0.0f32; 8192 + 20 + 4000];
                let (src, rest) = buf.split_at_mut(8192);
                for (i, x) in src[..len].iter_mut().enumerate() {
                    *x = i as f32 * 0.25 + 1.0;
                }
                copy_floats(&mut rest[k..k + len], &src[..len]);
                assert_eq!(&rest[k..k + len], &src[..len], "k {k} len {len}");
                let untouched = rest[..k].iter().chain(&rest[k + len..]);
                assert!(untouched.copied().all(|x| x == 0.0), "k {k} len {len}");
            }
        }
    }

    #[test]
    fn the_copy_goes_backwards_only_where_the_destination_is_under_a_line_past_the_source() {
        let src = 7 * 4096 + 48;
        for (ahead, want) in [(0, false), (4, true), (16, true), (60, true), (64, false)] {
            for pages in [0, 1, 300] {
                let dst = src + pages * 4096 + ahead;
                assert_eq!(backwards(dst, src, 100_000), want, "{ahead} bytes ahead");
            }
        }
        // Behind the source, or too short or too long for `rep movsb`: forwards.
        assert!(!backwards(src - 16, src, 100_000));
        assert!(!backwards(src + 16, src, COPY_BLOCK));
        assert!(!backwards(src + 16, src, COPY_BACKWARDS_BELOW));
    }
}
