//! Loss scaling for mixed precision: the loss is multiplied by `scale()` before differentiation so
//! small fp16 gradients do not flush to zero, and the gradients come back unscaled.
//!
//! Static scaling (the 106-minute run used 256, imagenet18 1024) never changes and treats a
//! non-finite gradient as fatal. Dynamic scaling halves the scale and skips the step on a
//! non-finite gradient, and doubles it after `growth_interval` good steps in a row (the policy of
//! TensorFlow's and Apex's dynamic loss scalers).
//!
//! A non-finite *loss* is fatal under either kind, at once: the scale multiplies only what goes
//! into backward, so a forward pass that gives NaN is divergence, not overflow, and halving the
//! scale 31 times would only delay the end (TensorFlow's scaler does that). Its batch statistics
//! have already gone into the batch-norm moving averages, so nothing after it is worth keeping.

/// What the trainer should do with this step's (all-reduced) gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Finite: apply them.
    Apply,
    /// Non-finite under dynamic scaling: skip the update; the scale has been reduced.
    Skip,
    /// Non-finite gradients under static scaling (or at the minimum dynamic scale): stop.
    Fatal,
    /// The loss itself is not finite: the model diverged; stop.
    Diverged,
}

/// The loss scale's state during a run; the schedule's `loss_scale` setting picks its kind.
#[derive(Debug, Clone, PartialEq)]
pub enum LossScaler {
    Static(f32),
    Dynamic {
        scale: f32,
        good_steps: u32,
        growth_interval: u32,
    },
}

/// Below this a dynamic scale is no longer helping: the gradients themselves are broken.
const MIN_DYNAMIC_SCALE: f32 = 1.0 / 65536.0;
/// Dynamic scaling starts high and comes down on the first overflows.
pub const INITIAL_DYNAMIC_SCALE: f32 = 32768.0;
pub const DEFAULT_GROWTH_INTERVAL: u32 = 2000;

impl LossScaler {
    /// The one edge where the schedule's settings become the running scaler: `loss_scale`, and
    /// `initial_loss_scale` where dynamic scaling starts.
    pub fn new(setting: dawnrun_schedule::LossScale, initial: f64) -> Self {
        match setting {
            dawnrun_schedule::LossScale::Static(s) => LossScaler::Static(s as f32),
            dawnrun_schedule::LossScale::Dynamic => LossScaler::Dynamic {
                scale: initial as f32,
                good_steps: 0,
                growth_interval: DEFAULT_GROWTH_INTERVAL,
            },
        }
    }
}

impl LossScaler {
    pub fn dynamic() -> Self {
        LossScaler::Dynamic {
            scale: INITIAL_DYNAMIC_SCALE,
            good_steps: 0,
            growth_interval: DEFAULT_GROWTH_INTERVAL,
        }
    }

    pub fn scale(&self) -> f32 {
        match self {
            LossScaler::Static(s) => *s,
            LossScaler::Dynamic { scale, .. } => *scale,
        }
    }

    /// (scale, good steps in a row): what a checkpoint keeps, so a resumed run continues with
    /// the scale it had instead of starting high and skipping steps again.
    pub fn state(&self) -> (f32, u32) {
        match self {
            LossScaler::Static(s) => (*s, 0),
            LossScaler::Dynamic {
                scale, good_steps, ..
            } => (*scale, *good_steps),
        }
    }

    /// Continues from a checkpoint's [`LossScaler::state`]. A static scale stays the schedule's.
    pub fn resume(&mut self, saved_scale: f32, saved_good_steps: u32) {
        if let LossScaler::Dynamic {
            scale, good_steps, ..
        } = self
        {
            if saved_scale.is_finite() && saved_scale > 0.0 {
                *scale = saved_scale;
                *good_steps = saved_good_steps;
            }
        }
    }

    /// Updates the state after a step whose loss and gradients were `finite` (or not): all
    /// of them together, as both the one-run step's in-graph gate and the host check see them.
    /// `loss_finite` alone tells divergence from an overflow in backward.
    pub fn update(&mut self, loss_finite: bool, finite: bool) -> Verdict {
        if !loss_finite {
            return Verdict::Diverged;
        }
        match self {
            LossScaler::Static(_) if finite => Verdict::Apply,
            LossScaler::Static(_) => Verdict::Fatal,
            LossScaler::Dynamic {
                scale,
                good_steps,
                growth_interval,
            } => {
                if finite {
                    *good_steps += 1;
                    if *good_steps >= *growth_interval {
                        *scale = (*scale * 2.0).min(f32::MAX / 2.0);
                        *good_steps = 0;
                    }
                    Verdict::Apply
                } else if *scale <= MIN_DYNAMIC_SCALE {
                    Verdict::Fatal
                } else {
                    *scale /= 2.0;
                    *good_steps = 0;
                    Verdict::Skip
                }
            }
        }
    }
}

/// True when every value is finite. Each rank checks its share of the all-reduced gradients and
/// the ranks add up their answers (`step.rs`), so every rank reaches the same verdict.
pub fn all_finite(values: &[f32]) -> bool {
    // `v * 0` is 0 for a finite v and NaN otherwise. Sixteen independent sums let the compiler
    // vectorise (one running sum is a serial chain: 5x slower on 11M floats).
    let mut lanes = [0.0f32; 16];
    let chunks = values.chunks_exact(16);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v * 0.0;
        }
    }
    let tail: f32 = rest.iter().map(|v| v * 0.0).sum();
    (lanes.iter().sum::<f32>() + tail).is_finite()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_scale_applies_finite_and_stops_on_overflow() {
        let mut s = LossScaler::Static(256.0);
        assert_eq!(s.update(true, true), Verdict::Apply);
        assert_eq!(s.update(true, false), Verdict::Fatal);
        assert_eq!(s.scale(), 256.0);
    }

    #[test]
    fn a_non_finite_loss_is_divergence_for_either_kind_and_leaves_the_scale() {
        for mut s in [LossScaler::Static(1.0), LossScaler::dynamic()] {
            let before = s.clone();
            assert_eq!(s.update(false, false), Verdict::Diverged);
            assert_eq!(s, before);
        }
    }

    #[test]
    fn dynamic_scale_halves_on_overflow_and_grows_after_interval() {
        let mut s = LossScaler::Dynamic {
            scale: 1024.0,
            good_steps: 0,
            growth_interval: 3,
        };
        assert_eq!(s.update(true, false), Verdict::Skip);
        assert_eq!(s.scale(), 512.0);
        assert_eq!(s.update(true, true), Verdict::Apply);
        assert_eq!(s.update(true, true), Verdict::Apply);
        assert_eq!(s.scale(), 512.0);
        assert_eq!(s.update(true, true), Verdict::Apply);
        assert_eq!(s.scale(), 1024.0);
        // An overflow resets the run of good steps.
        s.update(true, true);
        s.update(true, false);
        s.update(true, true);
        s.update(true, true);
        assert_eq!(s.scale(), 512.0);
    }

    #[test]
    fn dynamic_state_survives_a_resume_and_static_keeps_its_setting() {
        let mut s = LossScaler::dynamic();
        s.update(true, false);
        s.update(true, true);
        let (scale, good) = s.state();
        let mut resumed = LossScaler::dynamic();
        resumed.resume(scale, good);
        assert_eq!(resumed, s);
        let mut fixed = LossScaler::Static(256.0);
        fixed.resume(8.0, 3);
        assert_eq!(fixed.state(), (256.0, 0));
    }

    #[test]
    fn dynamic_scale_gives_up_at_the_floor() {
        let mut s = LossScaler::dynamic();
        let mut verdict = Verdict::Skip;
        for _ in 0..100 {
            verdict = s.update(true, false);
            if verdict == Verdict::Fatal {
                break;
            }
        }
        assert_eq!(verdict, Verdict::Fatal);
    }

    #[test]
    fn finiteness_sees_nan_and_inf_anywhere() {
        let mut v = vec![1.0f32; 1000];
        assert!(all_finite(&v));
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for i in [0, 499, 999] {
                v[i] = bad;
                assert!(!all_finite(&v), "{bad} at {i}");
                v[i] = 1.0;
            }
        }
        // Large but finite values must not count as overflow.
        v[3] = f32::MAX;
        assert!(all_finite(&v));
    }
}
