//! Mixed precision and layouts through the real trainer on this CPU: fp16 steps (slow here, but
//! real) with static and dynamic loss scaling, a forced overflow that the dynamic scaler skips,
//! and NCHW.

mod common;
use common::*;
use std::path::Path;

const TINY: &str = r#"{epoch: [0, 1], lr: [0.05, 0.05], lr_method: linear, batch_size: 4, image_size: 32, data_dir: "48"}"#;

/// Trains `steps` steps with `run_extra` settings, a checkpoint and a log line every step.
fn train(dir: &Path, name: &str, run_extra: &str, steps: u64) -> (std::path::PathBuf, String) {
    let extra = format!("  log_every_steps: 1\n  checkpoint_every_steps: 1\n{run_extra}");
    let sched = schedule(dir, name, &extra, &[TINY]);
    if run_extra.contains("precision:") {
        // The common schedule says fp32; this one says otherwise.
        let text = std::fs::read_to_string(&sched).unwrap();
        std::fs::write(&sched, text.replacen("  precision: fp32\n", "", 1)).unwrap();
    }
    let run_dir = dir.join(name);
    let mut c = command(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(["--max-steps", &steps.to_string()])
        // The trainer turns TensorFlow's oneDNN kernels on by itself, which NCHW pooling on a
        // CPU needs (TensorFlow 2.13 leaves them off on CPUs without AVX-512 VNNI/BF16 or AMX).
        .env_remove("TF_ENABLE_ONEDNN_OPTS");
    let out = ok(c);
    (run_dir, text(&out.stderr))
}

/// Trainable values of checkpoint `step`: the final layer and the first convolution.
fn weights(run_dir: &Path, step: u64) -> serde_json::Value {
    let mut c = command(&python());
    c.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/py/read_checkpoint.py"
    ))
    .arg(run_dir.join(format!("checkpoints/ckpt-{step}")))
    .args(["resnet/fc/kernel", "resnet/stem/conv/kernel"]);
    let seen: serde_json::Value = serde_json::from_slice(&ok(c).stdout).unwrap();
    seen["values"].clone()
}

#[test]
fn fp16_steps_keep_the_loss_finite_and_move_the_weights_with_static_and_dynamic_scaling() {
    let tmp = tempdir();
    for (name, scaling) in [
        ("static", "  loss_scale: 128\n"),
        (
            "dynamic",
            "  loss_scale: dynamic\n  initial_loss_scale: 1024\n",
        ),
    ] {
        let run_extra = format!("  precision: fp16\n{scaling}");
        let (run_dir, log) = train(tmp.path(), name, &run_extra, 3);
        let rows = metrics(&run_dir);
        assert_eq!(rows.len(), 3, "{log}");
        for r in &rows {
            let loss = r["loss"].as_f64().unwrap();
            assert!(loss.is_finite() && loss > 0.0, "{name}: {r}\n{log}");
        }
        assert!(!log.contains("update skipped"), "{name}: {log}");
        assert_ne!(
            weights(&run_dir, 1),
            weights(&run_dir, 3),
            "{name}: no update"
        );
    }
}

#[test]
fn a_forced_fp16_overflow_halves_the_dynamic_scale_and_skips_the_step() {
    let tmp = tempdir();
    // 2^40 times the loss's gradient is far beyond fp16's 65504: every gradient overflows.
    let run_extra =
        "  precision: fp16\n  loss_scale: dynamic\n  initial_loss_scale: 1099511627776\n";
    let (run_dir, log) = train(tmp.path(), "overflow", run_extra, 2);
    assert!(
        log.contains("step 0: non-finite gradients, update skipped, loss scale now 549755800000")
            || log.contains(
                "step 0: non-finite gradients, update skipped, loss scale now 549755813888"
            ),
        "{log}"
    );
    assert!(
        log.contains("step 1: non-finite gradients, update skipped"),
        "{log}"
    );
    let rows = metrics(&run_dir);
    // The scale is an f32, written in its shortest decimal form.
    let scale = |r: &serde_json::Value| r["loss_scale"].as_f64().unwrap() as f32;
    assert_eq!(scale(&rows[0]), 2f32.powi(39));
    assert_eq!(scale(&rows[1]), 2f32.powi(38));
    // Step 1 was skipped: the weights after it are those after step 0 (itself skipped).
    assert_eq!(weights(&run_dir, 1), weights(&run_dir, 2));
}

#[test]
fn nchw_trains_two_steps_on_this_cpu() {
    let tmp = tempdir();
    let (run_dir, log) = train(tmp.path(), "nchw", "  data_format: NCHW\n", 2);
    let rows = metrics(&run_dir);
    assert_eq!(rows.len(), 2, "{log}");
    assert!(rows.iter().all(|r| r["loss"].as_f64().unwrap().is_finite()));
    assert_ne!(weights(&run_dir, 1), weights(&run_dir, 2));
}
