//! The one arithmetic step of every all-reduce here: add a rank's contribution, and divide by
//! the rank count in the same pass when it is the last one.

/// `dst[i] = dst[i] + src[i]`, then divided by `divisor` if one is given.
pub fn add(dst: &mut [f32], src: &[f32], divisor: Option<f32>) {
    let pairs = dst.iter_mut().zip(src);
    match divisor.map(Divide::new) {
        None => pairs.for_each(|(d, s)| *d += *s),
        Some(Divide::ByPowerOfTwo(r)) => pairs.for_each(|(d, s)| *d = (*d + *s) * r),
        Some(Divide::By(q)) => pairs.for_each(|(d, s)| *d = (*d + *s) / q),
    }
}

/// [`add`], also storing every result in `out`: the shared-memory all-reduce publishes its
/// reduced chunk while it computes it instead of in a second pass.
pub fn add_and_store(dst: &mut [f32], src: &[f32], divisor: Option<f32>, out: &mut [f32]) {
    assert_eq!(dst.len(), out.len(), "add_and_store: lengths differ");
    let triples = dst.iter_mut().zip(src).zip(out.iter_mut());
    let store = |d: &mut f32, o: &mut f32, v: f32| {
        *d = v;
        *o = v;
    };
    match divisor.map(Divide::new) {
        None => triples.for_each(|((d, s), o)| store(d, o, *d + *s)),
        Some(Divide::ByPowerOfTwo(r)) => triples.for_each(|((d, s), o)| store(d, o, (*d + *s) * r)),
        Some(Divide::By(q)) => triples.for_each(|((d, s), o)| store(d, o, (*d + *s) / q)),
    }
}

/// How to divide. Dividing by 2^k and multiplying by 2^-k round the same exact value, so they
/// give the same bits for every input (subnormals, infinities and NaNs included), and a
/// multiplication costs a fraction of a division: 2, 4 and 8 ranks take it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Divide {
    ByPowerOfTwo(f32),
    By(f32),
}

impl Divide {
    fn new(q: f32) -> Divide {
        let r = 1.0 / q;
        // Mantissas all zero on both sides: q and 1/q are exact powers of two (normal numbers).
        let mantissa = |x: f32| x.to_bits() & 0x007f_ffff;
        if q.is_normal() && r.is_normal() && mantissa(q) == 0 && mantissa(r) == 0 {
            Divide::ByPowerOfTwo(r)
        } else {
            Divide::By(q)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values over the whole f32 range: every 65,537th bit pattern (NaNs, infinities,
    /// subnormals and both zeros among them), plus the edges.
    fn awkward() -> Vec<f32> {
        let mut v: Vec<f32> = (0..=u32::MAX).step_by(65_537).map(f32::from_bits).collect();
        v.extend([
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            f32::MIN_POSITIVE / 3.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]);
        v
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn only_exact_powers_of_two_multiply() {
        for q in [1.0, 2.0, 4.0, 8.0, 64.0, 1024.0, 0.5] {
            assert_eq!(Divide::new(q), Divide::ByPowerOfTwo(1.0 / q), "{q}");
        }
        for q in [3.0, 6.0, 7.0, 12.0, 1000.0, 0.0, f32::INFINITY, f32::NAN] {
            assert!(matches!(Divide::new(q), Divide::By(_)), "{q}");
        }
        // 2^127's reciprocal is subnormal: divide.
        assert!(matches!(Divide::new(2f32.powi(127)), Divide::By(_)));
    }

    #[test]
    fn the_mean_has_the_bits_of_adding_then_dividing() {
        let a = awkward();
        let b: Vec<f32> = a.iter().rev().copied().collect();
        for q in [2.0f32, 3.0, 4.0, 8.0, 6.0, 16.0] {
            let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x + y) / q).collect();
            let mut got = a.clone();
            add(&mut got, &b, Some(q));
            let mut stored = vec![0.0; a.len()];
            let mut both = a.clone();
            add_and_store(&mut both, &b, Some(q), &mut stored);
            // NaN payloads may differ between operations; every other value must match bits.
            let same = |x: &[f32]| {
                x.iter()
                    .zip(&want)
                    .all(|(g, w)| (g.is_nan() && w.is_nan()) || g.to_bits() == w.to_bits())
            };
            assert!(same(&got) && same(&both) && same(&stored), "q {q}");
        }
        let mut plain = a.clone();
        add(&mut plain, &b, None);
        let mut stored = vec![0.0; a.len()];
        let mut both = a.clone();
        add_and_store(&mut both, &b, None, &mut stored);
        assert_eq!(bits(&both), bits(&plain));
        assert_eq!(bits(&stored), bits(&plain));
    }
}
