//! Wire formats for the ring: what one gradient element looks like while it travels between ranks.
//!
//! Gradients live as `f32` on every rank. With [`dawnrun_schedule::Compression::Fp16`] each chunk is converted to
//! IEEE half precision (`u16` bit patterns on the wire) just before a send and back to `f32`
//! just after a receive; every *addition* happens in `f32` (decompress, add, recompress), so the
//! only loss is one rounding to f16 per hop. The conversion uses the `half` crate's slice
//! functions, which use the CPU's F16C instructions when present.
//!
//! This module owns the element formats only; which chunk goes where is `ring`'s business.

use half::f16;
use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
use mpi::datatype::Equivalence;

/// One wire format, as the ring uses it. Callers inside the crate guarantee equal chunk lengths
/// (both sides derive them from the same [`crate::chunk_bounds`]), so these never fail.
pub(crate) trait WireFormat {
    /// The MPI element type sent.
    type Elem: Equivalence + Copy + Default;

    /// The elements to send for data chunk `src`; may encode into `buf` and return it.
    /// `f32` sends straight from the gradient memory, without a copy.
    fn outgoing<'a>(src: &'a [f32], buf: &'a mut Vec<Self::Elem>) -> &'a [Self::Elem];

    /// `dst[i] = dst[i] + decode(incoming[i])`, in `f32`, then `/ divisor` when given (the
    /// ring's last addition into the chunk a rank owns, for a mean: one pass instead of two,
    /// with the same bits as dividing afterwards). `tmp` is scratch.
    fn accumulate(
        incoming: &[Self::Elem],
        dst: &mut [f32],
        tmp: &mut Vec<f32>,
        divisor: Option<f32>,
    );

    /// `dst[i] = decode(incoming[i])`.
    fn overwrite(incoming: &[Self::Elem], dst: &mut [f32]);

    /// `dst` itself as a receive buffer when the wire holds f32 (the all-gather then receives
    /// straight into the gradients, with no copy); `None` when received data must be decoded.
    fn receive_into(dst: &mut [f32]) -> Option<&mut [Self::Elem]>;

    /// Rounds a fully reduced chunk to what the other ranks will decode from the wire, so the
    /// owner of the chunk ends with the same bits as everyone else.
    fn quantize(chunk: &mut [f32], buf: &mut Vec<Self::Elem>);
}

/// `f32` on the wire.
pub(crate) struct F32Wire;

impl WireFormat for F32Wire {
    type Elem = f32;

    fn outgoing<'a>(src: &'a [f32], _buf: &'a mut Vec<f32>) -> &'a [f32] {
        src
    }

    fn accumulate(incoming: &[f32], dst: &mut [f32], _tmp: &mut Vec<f32>, divisor: Option<f32>) {
        crate::sum::add(dst, incoming, divisor);
    }

    fn overwrite(incoming: &[f32], dst: &mut [f32]) {
        dst.copy_from_slice(incoming);
    }

    fn receive_into(dst: &mut [f32]) -> Option<&mut [f32]> {
        Some(dst)
    }

    fn quantize(_chunk: &mut [f32], _buf: &mut Vec<f32>) {}
}

/// IEEE half precision on the wire, as `u16` bit patterns.
pub(crate) struct F16Wire;

impl WireFormat for F16Wire {
    type Elem = u16;

    fn outgoing<'a>(src: &'a [f32], buf: &'a mut Vec<u16>) -> &'a [u16] {
        buf.resize(src.len(), 0);
        buf.reinterpret_cast_mut::<f16>()
            .convert_from_f32_slice(src);
        buf
    }

    fn accumulate(incoming: &[u16], dst: &mut [f32], tmp: &mut Vec<f32>, divisor: Option<f32>) {
        tmp.resize(incoming.len(), 0.0);
        incoming.reinterpret_cast::<f16>().convert_to_f32_slice(tmp);
        F32Wire::accumulate(tmp, dst, &mut Vec::new(), divisor);
    }

    fn overwrite(incoming: &[u16], dst: &mut [f32]) {
        incoming.reinterpret_cast::<f16>().convert_to_f32_slice(dst);
    }

    fn receive_into(_dst: &mut [f32]) -> Option<&mut [u16]> {
        None
    }

    fn quantize(chunk: &mut [f32], buf: &mut Vec<u16>) {
        Self::outgoing(chunk, buf);
        buf.reinterpret_cast::<f16>().convert_to_f32_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic value stream without a rand dependency (splitmix64 -> [-scale, scale]).
    fn values(seed: u64, n: usize, scale: f32) -> Vec<f32> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = x;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                ((z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
            })
            .collect()
    }

    #[test]
    fn fp16_round_trip_is_within_half_an_ulp() {
        for seed in 0..20 {
            for &scale in &[1e-3f32, 1.0, 100.0, 60000.0] {
                let src = values(seed, 1000 + seed as usize, scale);
                let mut buf = Vec::new();
                let mut back = vec![0f32; src.len()];
                F16Wire::overwrite(F16Wire::outgoing(&src, &mut buf), &mut back);
                for (a, b) in src.iter().zip(&back) {
                    // Normal range: relative error <= 2^-11; subnormals: absolute <= 2^-25.
                    let tol = (a.abs() * 2f32.powi(-11)).max(2f32.powi(-25));
                    assert!((a - b).abs() <= tol, "{a} -> {b} (scale {scale})");
                }
            }
        }
    }

    #[test]
    fn f16_values_survive_a_second_round_trip_bitwise() {
        // The ring relies on this: a quantized chunk re-encodes to the same bits.
        for seed in 0..10 {
            let mut chunk = values(seed, 777, 50.0);
            F16Wire::quantize(&mut chunk, &mut Vec::new());
            let once = chunk.clone();
            F16Wire::quantize(&mut chunk, &mut Vec::new());
            assert_eq!(
                once.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                chunk.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn special_values_convert_as_ieee_says() {
        let src = [0.0f32, -0.0, 1.0, 65504.0, 1e6, -1e6, f32::INFINITY];
        let mut buf = Vec::new();
        let mut back = [0f32; 7];
        F16Wire::overwrite(F16Wire::outgoing(&src, &mut buf), &mut back);
        assert_eq!(back[1].to_bits(), (-0.0f32).to_bits());
        assert_eq!(back[..4], src[..4]);
        assert_eq!(back[4], f32::INFINITY);
        assert_eq!(back[5], f32::NEG_INFINITY);
        assert_eq!(back[6], f32::INFINITY);
        let nan_bits = F16Wire::outgoing(&[f32::NAN], &mut buf)[0];
        assert!(f16::from_bits(nan_bits).is_nan());
    }

    #[test]
    fn accumulate_adds_in_f32() {
        let mut dst = vec![1.0f32, 2.0, 3.0];
        let bits: Vec<u16> = [0.5f32, 0.25, -3.0]
            .iter()
            .map(|v| f16::from_f32(*v).to_bits())
            .collect();
        F16Wire::accumulate(&bits, &mut dst, &mut Vec::new(), None);
        assert_eq!(dst, vec![1.5, 2.25, 0.0]);
        // With a divisor: the same bits as adding, then dividing.
        let (mut fused, mut twice) = (values(3, 1000, 10.0), values(3, 1000, 10.0));
        let incoming = values(4, 1000, 10.0);
        F32Wire::accumulate(&incoming, &mut fused, &mut Vec::new(), Some(3.0));
        F32Wire::accumulate(&incoming, &mut twice, &mut Vec::new(), None);
        twice.iter_mut().for_each(|v| *v /= 3.0);
        assert_eq!(
            fused.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            twice.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }
}
