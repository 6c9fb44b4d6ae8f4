//! `eval-sweep`: evaluate a run's checkpoints (`dawnrun::commands`).
fn main() -> std::process::ExitCode {
    dawnrun::commands::eval_sweep_main()
}
