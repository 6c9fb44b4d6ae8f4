//! Test hooks: faults a rank injects into itself, on the tests' request, at the places where
//! the real ones (a stuck driver, a kill, an overflowing update) would strike.

use anyhow::{bail, Result};

use crate::model::TrainGraph;
use crate::self_signal::signal_self;

/// Faults the process tests inject through the environment (`DAWNRUN_FAIL_AT_STEP`,
/// `DAWNRUN_FREEZE_AT_STEP`, `DAWNRUN_FREEZE_IN_ALLREDUCE_AT_STEP`, `DAWNRUN_KILL_AT_STEP`, `DAWNRUN_NAN_STATE_AT_STEP`, `DAWNRUN_NAN_GRADIENT_AT_STEP`, with
/// `DAWNRUN_FAIL_RANK`): the real failures they stand for cannot be summoned on demand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TestFault {
    /// Return an error on reaching this step.
    FailAt(u64),
    /// Stop this process (SIGSTOP) on reaching this step, as a hung NFS read or a stuck driver
    /// would freeze a rank: nothing in it runs any more, not even its threads.
    FreezeAt(u64),
    /// Stop this process as `FreezeAt` does, but inside the all-reduce of this step: after its
    /// readiness report, so rank 0's stall check has seen it arrive and only the watchdogs of
    /// the ranks waiting for it can name it.
    FreezeInAllreduceAt(u64),
    /// Kill this process (SIGKILL) on reaching this step: no cleanup of any kind runs.
    KillAt(u64),
    /// Put a NaN into the state just before the checkpoint after this many steps.
    NanStateAt(u64),
    /// Put a NaN into the last averaged gradient of this step, as an overflowing mean would
    /// leave one: set on every rank, it lies in the last rank's share of the finite check only.
    NanGradientAt(u64),
}

/// The test hook [`TestFault::NanGradientAt`]: a NaN in the last of this step's averaged
/// gradients.
pub fn nan_gradient(fault: Option<TestFault>, step: u64, grads: &mut [f32]) {
    if fault == Some(TestFault::NanGradientAt(step)) {
        if let Some(last) = grads.last_mut() {
            *last = f32::NAN;
        }
    }
}

/// The test hook [`TestFault::NanStateAt`]: a NaN in the last momentum slot value before the
/// checkpoint after `step` steps, as an overflowing update would leave one.
pub fn poison(fault: Option<TestFault>, step: u64, graph: &mut TrainGraph) -> Result<()> {
    if fault == Some(TestFault::NanStateAt(step)) {
        let mut state = graph.state_to_host()?;
        if let Some(last) = state.last_mut() {
            *last = f32::NAN;
        }
        graph.state_from_host(&state)?;
    }
    Ok(())
}

/// The test hooks of [`TestFault`] that act when a step begins on rank `rank`.
pub fn inject(fault: Option<TestFault>, step: u64, rank: usize) -> Result<()> {
    match fault {
        Some(TestFault::FailAt(s)) if s == step => {
            bail!("step {step}: failing on purpose (DAWNRUN_FAIL_AT_STEP)")
        }
        Some(TestFault::FreezeAt(s)) if s == step => signal_self("STOP", &at(rank, step)),
        Some(TestFault::KillAt(s)) if s == step => signal_self("KILL", &at(rank, step)),
        _ => Ok(()),
    }
}

/// The hook [`TestFault::FreezeInAllreduceAt`]: called between the readiness report and the
/// all-reduce, on rank `rank`.
pub fn freeze_in_allreduce(fault: Option<TestFault>, step: u64, rank: usize) -> Result<()> {
    match fault {
        Some(TestFault::FreezeInAllreduceAt(s)) if s == step => {
            signal_self("STOP", &at(rank, step))
        }
        _ => Ok(()),
    }
}

/// Where a hook acts, for its message: `rank 1: step 5`.
fn at(rank: usize, step: u64) -> String {
    format!("rank {rank}: step {step}")
}
