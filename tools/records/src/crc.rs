//! Masked CRC-32C, the checksum TFRecord framing puts after the length and after the data.
//!
//! TensorFlow "masks" a CRC before storing it, because a CRC computed over bytes that themselves
//! contain CRCs is weak; the mask is a rotation plus a constant. Pure functions, used by
//! [`crate::framing`] on every record read and written.

/// The constant TensorFlow adds after rotating (`kMaskDelta` in its crc32c.h).
const MASK_DELTA: u32 = 0xa282_ead8;

/// Masks a raw CRC-32C: rotate right by 15 bits, then add `MASK_DELTA` (wrapping, 32-bit).
pub fn mask(crc: u32) -> u32 {
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Inverse of [`mask`]: `unmask(mask(c)) == c` for every `c`.
pub fn unmask(masked: u32) -> u32 {
    masked.wrapping_sub(MASK_DELTA).rotate_left(15)
}

/// The masked CRC-32C of `bytes`, exactly as stored in a TFRecord frame.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    mask(crc32c::crc32c(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_values_from_reference() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(mask(0xE306_9283), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(b"123456789"), 0xC78A_B0E5);
        assert_eq!(masked_crc32c(b""), 0xa282_ead8);
    }

    #[test]
    fn unmask_inverts_mask_for_many_values() {
        // A cheap LCG walks the u32 space; plus the edges.
        let mut x: u32 = 0x1234_5678;
        let mut values = vec![0, 1, u32::MAX, MASK_DELTA, 0x8000_0000];
        for _ in 0..10_000 {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            values.push(x);
        }
        for c in values {
            assert_eq!(unmask(mask(c)), c, "c = {c:#010x}");
            assert_eq!(mask(unmask(c)), c, "c = {c:#010x}");
        }
    }

    // The point is to compare against TensorFlow's masking formula written out as shifts
    // (`((crc >> 15) | (crc << 17)) + 0xa282ead8`), not as a rotate.
    #[allow(clippy::manual_rotate)]
    #[test]
    fn mask_matches_the_written_formula() {
        let mut x: u32 = 7;
        for _ in 0..1000 {
            x = x.wrapping_mul(747_796_405).wrapping_add(2_891_336_453);
            let formula = ((x >> 15) | (x << 17)).wrapping_add(0xa282_ead8);
            assert_eq!(mask(x), formula);
        }
    }
}
