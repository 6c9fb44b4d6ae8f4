//! `trainer`: train, plan, bench, gradcheck (`dawnrun::commands`).
fn main() -> std::process::ExitCode {
    dawnrun::commands::trainer_main()
}
