//! The action the trainer's and eval-sweep's test hooks share: a process sending itself a
//! signal (SIGSTOP to freeze like a stuck driver, SIGKILL to die without cleanup), so the tests
//! can summon the faults the job must survive. Through `kill(1)`, which keeps the crate free of
//! `unsafe` here.

use anyhow::{Context, Result};

/// Sends `signal` to this process, saying so first, `at` naming who and where
/// (`rank 1: step 5`).
pub fn signal_self(signal: &str, at: &str) -> Result<()> {
    say!("{at}: sending SIG{signal} to myself on purpose (test hook)");
    let pid = std::process::id().to_string();
    std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .with_context(|| format!("kill -{signal}"))?;
    Ok(())
}
