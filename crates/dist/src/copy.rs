//! Copies of gradient buffers that stay fast at any relative alignment of the two addresses.

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

#[cfg(test)]
mod tests {
    use super::*;

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
