//! Checkpoints in TensorFlow's format: Python TensorFlow reads ours, restores are exact, saves are
//! atomic, and damage is reported with the file's name.
mod model_support;

use dawnrun::checkpoint::{self, CheckpointMeta};
use dawnrun::model::{EvalGraph, ModelConfig, TrainGraph};
use model_support::{blobs, cores, python, Rng};
use std::path::Path;

fn cfg() -> ModelConfig {
    let mut cfg = ModelConfig::new(18, 10);
    cfg.seed = 3;
    cfg
}

/// A depth-18 graph after a few steps (so slots and moving statistics are not at their init).
fn trained(steps: usize) -> TrainGraph {
    let mut g = TrainGraph::build(&cfg()).unwrap();
    g.init().unwrap();
    let mut rng = Rng::new(17);
    for _ in 0..steps {
        let out = g
            .gradients(&blobs(4, 32, 10, &mut rng).view(), 1.0)
            .unwrap();
        g.apply(&out.grads, 0.05).unwrap();
    }
    g
}

fn meta(step: u64) -> CheckpointMeta {
    CheckpointMeta {
        step,
        epoch: step as f64 / 4.0,
        train_seconds: 12.25 + step as f64,
        loss_scale: 512.0,
        loss_scale_good_steps: step * 3,
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn checkpoint_opens_in_python_tensorflow_with_names_shapes_and_step() {
    let _cores = cores();
    let dir = tempfile::tempdir().unwrap();
    let mut g = trained(2);
    let prefix = checkpoint::save(&g, dir.path(), &meta(7)).unwrap();
    assert_eq!(prefix, dir.path().join("ckpt-7"));
    let out = std::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/py/read_checkpoint.py"
        ))
        .arg(&prefix)
        .args(["resnet/fc/bias", "resnet/stem/bn/moving_mean"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(seen["global_step"], 7);
    assert_eq!(seen["epoch"], 1.75);
    assert_eq!(seen["train_seconds"], 19.25);
    assert_eq!(seen["loss_scale"], 512.0);
    assert_eq!(seen["loss_scale_good_steps"], 21);
    assert_eq!(seen["dtypes"]["global_step"], "int64");
    let shapes = seen["shapes"].as_object().unwrap();
    // Every state variable plus the five progress scalars, nothing else.
    assert_eq!(shapes.len(), g.state().len() + 5);
    for v in g.state() {
        let shape: Vec<i64> = serde_json::from_value(shapes[&v.name].clone()).unwrap();
        assert_eq!(shape, v.shape, "{}", v.name);
        assert_eq!(seen["dtypes"][&v.name], "float32");
    }
    for name in [
        "resnet/stage1/block0/conv1/kernel",
        "resnet/stage2/block0/shortcut/conv/kernel",
        "resnet/stem/bn/moving_variance",
        "resnet/fc/kernel/Momentum",
    ] {
        assert!(shapes.contains_key(name), "missing {name}");
    }
    // Values agree with the graph's own view of its state.
    let state = g.state_to_host().unwrap();
    let mut offset = 0;
    for v in g.state() {
        if let Some(py) = seen["values"].get(&v.name) {
            let py: Vec<f32> = serde_json::from_value(py.clone()).unwrap();
            assert_eq!(py, state[offset..offset + v.len], "{}", v.name);
        }
        offset += v.len;
    }
}

#[test]
fn restore_into_fresh_graphs_gives_identical_state_and_eval_outputs() {
    let _cores = cores();
    let dir = tempfile::tempdir().unwrap();
    let mut g = trained(3);
    let prefix = checkpoint::save(&g, dir.path(), &meta(3)).unwrap();

    let mut fresh = TrainGraph::build(&cfg()).unwrap();
    assert_eq!(checkpoint::restore(&mut fresh, &prefix).unwrap(), meta(3));
    assert_eq!(fresh.state_to_host().unwrap(), g.state_to_host().unwrap());

    let batch = blobs(8, 32, 10, &mut Rng::new(23));
    let mut outputs = Vec::new();
    for _ in 0..2 {
        let mut e = EvalGraph::build(&cfg()).unwrap();
        assert_eq!(checkpoint::restore(&mut e, &prefix).unwrap(), meta(3));
        outputs.push(e.evaluate(&batch.view()).unwrap());
        outputs.push(e.evaluate(&batch.view()).unwrap());
    }
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "{outputs:?}");
    let o = outputs[0];
    assert_eq!(o.n, 8);
    assert!(o.correct_top1 <= o.correct_top5 && o.correct_top5 <= 8);
    assert!(o.loss_sum.is_finite() && o.loss_sum > 0.0);
}

#[test]
fn save_is_atomic_and_listing_finds_complete_checkpoints_in_step_order() {
    let _cores = cores();
    let dir = tempfile::tempdir().unwrap();
    let mut g = trained(0);
    for step in [20u64, 5, 100] {
        checkpoint::save(&g, dir.path(), &meta(step)).unwrap();
    }
    // No temporary prefix is left behind; each checkpoint is exactly its two files.
    assert_eq!(
        files_in(dir.path()),
        [
            "ckpt-100.data-00000-of-00001",
            "ckpt-100.index",
            "ckpt-20.data-00000-of-00001",
            "ckpt-20.index",
            "ckpt-5.data-00000-of-00001",
            "ckpt-5.index",
        ]
    );
    // An index renamed away (the state between the two renames of a crashed save) hides it.
    let p100 = checkpoint::prefix_for(dir.path(), 100);
    std::fs::rename(checkpoint::index_path(&p100), dir.path().join("elsewhere")).unwrap();
    let steps: Vec<u64> = checkpoint::list(dir.path())
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(steps, [5, 20]);
    let (step, prefix) = checkpoint::latest_complete(dir.path()).unwrap().unwrap();
    assert_eq!((step, prefix.clone()), (20, dir.path().join("ckpt-20")));
    assert_eq!(checkpoint::restore(&mut g, &prefix).unwrap().step, 20);
}

#[test]
fn truncated_data_file_gives_an_error_naming_it() {
    let _cores = cores();
    let dir = tempfile::tempdir().unwrap();
    let mut g = trained(0);
    let prefix = checkpoint::save(&g, dir.path(), &meta(1)).unwrap();
    let data = checkpoint::data_path(&prefix);
    let len = std::fs::metadata(&data).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    for err in [
        checkpoint::restore(&mut g, &prefix)
            .unwrap_err()
            .to_string(),
        checkpoint::restore(&mut EvalGraph::build(&cfg()).unwrap(), &prefix)
            .unwrap_err()
            .to_string(),
    ] {
        eprintln!("{err}");
        assert!(err.contains(&data.display().to_string()), "{err}");
    }
}

#[test]
fn missing_checkpoint_gives_an_error_naming_the_index() {
    let _cores = cores();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("ckpt-9");
    let err = checkpoint::restore(&mut TrainGraph::build(&cfg()).unwrap(), &prefix)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&checkpoint::index_path(&prefix).display().to_string()),
        "{err}"
    );
    assert!(err.contains("missing"), "{err}");
}
