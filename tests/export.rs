//! `trainer export` through the real binaries on a real tiny run: the SavedModel loads in
//! Python TensorFlow with no dawnrun code, both signatures run, `saved_model_cli` lists them,
//! the export scores the validation set as eval-sweep does, its JPEG preprocessing equals the
//! pipeline's crop (central and short_side), and a failed export leaves nothing at `--out`.
//! Also: eval-sweep's `--rect` and `crop_mode: short_side` end to end, and `--gpu` refused on a
//! machine where TensorFlow lists no GPU.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const PHASE: &str = r#"{epoch: [0, 3], lr: [0.05, 0.01], lr_method: exp, batch_size: 16, image_size: 32, data_dir: "48", min_scale: 0.35}"#;
const EXTRA: &str = "  checkpoint_every_steps: 16\n";

/// A finished 48-step run, swept by eval-sweep (made once per test binary).
fn trained() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let run = train_run("exportrun", EXTRA, PHASE);
        let mut c = command(&bin("eval-sweep"));
        c.arg(&run);
        ok(c);
        run
    })
}

/// A copy of the trained run whose schedule evaluates with `crop_mode: short_side`.
fn short_side_copy(tmp: &Path) -> PathBuf {
    let dst = unevaluated_copy(trained(), tmp);
    let sched = dst.join("schedule.yaml");
    let text = std::fs::read_to_string(&sched).unwrap().replace(
        "eval:\n",
        "eval:\n  crop_mode: short_side\n  resize_ratio: 1.14\n",
    );
    std::fs::write(&sched, text).unwrap();
    dst
}

fn validation_files() -> Vec<PathBuf> {
    let dir = fixture().join("records").join("48");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("validation-")
        })
        .collect();
    files.sort();
    files
}

fn export(run: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = command(&bin("trainer"));
    c.arg("export").arg(run).arg("--out").arg(out).args(extra);
    run_cmd(c)
}

fn run_cmd(c: std::process::Command) -> std::process::Output {
    common::run(c)
}

/// `tests/py/check_export.py` on the export, with the pipeline's crops of the first 24
/// validation images (`eval-batches --crop <crop>`) for the pixel comparison.
fn check_in_python(export: &Path, crop: &str, tmp: &Path) -> serde_json::Value {
    let files = validation_files();
    let mut c = command(&tool("eval-batches"));
    c.args(["--px", "32", "--crop", crop, "--limit", "24"])
        .args(&files);
    let dump = ok(c);
    let pixels = tmp.join("pixels.json");
    std::fs::write(&pixels, &dump.stdout).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py/check_export.py");
    let mut c = command(&python());
    c.arg(script)
        .arg(export)
        .args(&files)
        .arg("--pixels")
        .arg(&pixels);
    let out = ok(c);
    let stdout = text(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap()).unwrap()
}

fn eval_rows(run: &Path) -> Vec<serde_json::Value> {
    json_rows(&run.join("eval.jsonl"))
}

#[test]
fn export_loads_in_tensorflow_alone_and_scores_as_eval_sweep() {
    let run = trained();
    let tmp = tempdir();
    let out = tmp.path().join("model");
    let res = export(run, &out, &["--best"]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    for f in [
        "saved_model.pb",
        "variables/variables.index",
        "variables/variables.data-00000-of-00001",
        "assets/synsets.txt",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    // --best picked the checkpoint with the best top-5 (first on ties).
    let rows = eval_rows(run);
    let best = rows
        .iter()
        .fold(None::<&serde_json::Value>, |b, r| match b {
            Some(b) if b["top5"].as_f64() >= r["top5"].as_f64() => Some(b),
            _ => Some(r),
        })
        .unwrap();
    let step = best["step"].as_u64().unwrap();
    assert!(
        text(&res.stderr).contains(&format!("(step {step},")),
        "{}",
        text(&res.stderr)
    );

    let got = check_in_python(&out, "central:0.8", tmp.path());
    assert_eq!(
        got["signatures"],
        serde_json::json!(["images", "serving_default"])
    );
    assert_eq!(got["images"].as_u64(), Some(64));
    let top1 = got["top1"].as_f64().unwrap();
    let want = best["top1"].as_f64().unwrap();
    // Within 1 point, or one image of the 64 (1.56 points): the decoders differ.
    assert!(
        (top1 - want).abs() <= 100.0 / 64.0 + 1e-9,
        "export top-1 {top1} vs eval-sweep {want} for step {step}"
    );
    // The synsets in label order, as build-records numbered them (label 1 = first line).
    let synsets: Vec<String> = serde_json::from_value(got["synsets"].clone()).unwrap();
    assert_eq!(synsets.len(), CLASSES);
    let mut sorted = synsets.clone();
    sorted.sort();
    assert_eq!(synsets, sorted);
    let diff = got["pixels"]["mean_abs_diff"].as_f64().unwrap();
    assert!(
        diff <= 3.0,
        "export preprocessing vs pipeline: {}",
        got["pixels"]
    );
    eprintln!(
        "export top-1 {top1} vs eval-sweep {want}; pixels {}",
        got["pixels"]
    );

    // saved_model_cli from the venv lists both signatures.
    let cli = python().with_file_name("saved_model_cli");
    let mut c = command(&cli);
    c.args(["show", "--all", "--dir"]).arg(&out);
    let shown = text(&ok(c).stdout);
    for s in [
        "signature_def['serving_default']",
        "signature_def['images']",
        "inputs['jpegs']",
        "inputs['images']",
        "outputs['probabilities']",
        "outputs['classes']",
    ] {
        assert!(shown.contains(s), "no {s} in\n{shown}");
    }
}

#[test]
fn short_side_crop_is_the_same_in_eval_sweep_and_the_export() {
    let tmp = tempdir();
    let run = short_side_copy(tmp.path());
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run);
    ok(c);
    let rows = eval_rows(&run);
    let last = rows.last().unwrap();
    let out = tmp.path().join("model");
    let res = export(&run, &out, &[]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    let got = check_in_python(&out, "short_side:1.14", tmp.path());
    let diff = got["pixels"]["mean_abs_diff"].as_f64().unwrap();
    assert!(
        diff <= 3.0,
        "short_side: export vs pipeline {}",
        got["pixels"]
    );
    let (top1, want) = (
        got["top1"].as_f64().unwrap(),
        last["top1"].as_f64().unwrap(),
    );
    // Within two images of the 64 (3.1 points): the two sides decode JPEGs with different
    // decoders (TensorFlow's libjpeg, our libjpeg-turbo), and this 48-step model sits near
    // chance, so a pixel's difference flips its least certain images. One image was the margin
    // until the Xeon box with AMX, where two flip (54.7% vs 51.6%, at 7f45846 as at f86b6cf).
    // The crop itself is checked above, pixel by pixel; a wrong crop moves both checks further.
    let images = last["images"].as_f64().unwrap();
    assert!(
        (top1 - want).abs() <= (200.0 / images).max(1.0) + 1e-9,
        "short_side top-1 {top1} vs {want}"
    );
}

#[test]
fn eval_sweep_rect_runs_end_to_end() {
    let tmp = tempdir();
    let run = short_side_copy(tmp.path());
    let mut c = command(&bin("eval-sweep"));
    c.arg(&run).arg("--rect").args(["--batch-size", "8"]);
    let out = ok(c);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("64 validation images scored per checkpoint"),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    let rows = eval_rows(&run);
    assert_eq!(rows.len(), 3);
    for r in rows {
        let top5 = r["top5"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&top5));
        assert_eq!(r["images"].as_u64(), Some(64));
    }
}

#[test]
fn the_newest_checkpoint_without_its_data_file_is_named_not_passed_over() {
    let tmp = tempdir();
    let run = unevaluated_copy(trained(), tmp.path());
    std::fs::remove_file(run.join("checkpoints/ckpt-48.data-00000-of-00001")).unwrap();
    let out = tmp.path().join("model");
    let res = export(&run, &out, &[]);
    let err = text(&res.stderr);
    assert_eq!(res.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the newest checkpoint, step 48, has its index but not its data file"),
        "{err}"
    );
    assert!(!out.exists());
    // Named explicitly, an older one still exports.
    let res = export(&run, &out, &["--step", "32"]);
    assert!(res.status.success(), "{}", text(&res.stderr));
}

#[test]
fn a_failed_export_leaves_nothing_at_out() {
    let run = trained();
    let tmp = tempdir();
    let out = tmp.path().join("model");
    let res = export(run, &out, &["--step", "999"]);
    assert!(!res.status.success());
    let err = text(&res.stderr);
    assert!(err.contains("no complete checkpoint for step 999"), "{err}");
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no partial folder left"
    );

    // A checkpoint whose data file is cut short fails while restoring, after the temporary
    // folder was made: it is removed, and --out never appears.
    let copy = tmp.path().join("run");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(run)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(status.success());
    let data = copy.join("checkpoints/ckpt-48.data-00000-of-00001");
    let len = std::fs::metadata(&data).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(len / 2).unwrap();
    let res = export(&copy, &out, &["--step", "48"]);
    assert!(!res.status.success());
    assert!(!out.exists());
    let left: Vec<String> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["run".to_string()], "{}", text(&res.stderr));

    // An existing non-empty --out is refused and left alone.
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep"), b"x").unwrap();
    let res = export(run, &out, &[]);
    assert!(!res.status.success());
    assert!(text(&res.stderr).contains("--out exists and is not empty"));
    assert!(out.join("keep").is_file());

    // What a killed export left (its process is gone) goes with the next export to that name.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let leftover = tmp
        .path()
        .join(format!(".model2.partial-{}-{dead_pid}", host.trim()));
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("saved_model.pb"), b"half").unwrap();
    // The same pid on another host sharing the folder: not ours to judge, so it stays.
    let elsewhere = tmp
        .path()
        .join(format!(".model2.partial-otherhost-{dead_pid}"));
    std::fs::create_dir(&elsewhere).unwrap();
    let out2 = tmp.path().join("model2");
    let res = export(run, &out2, &[]);
    assert!(res.status.success(), "{}", text(&res.stderr));
    assert!(out2.join("saved_model.pb").is_file());
    assert!(!leftover.exists());
    assert!(elsewhere.exists());
}

#[test]
fn gpu_without_a_gpu_stops_with_the_devices_tensorflow_lists() {
    let run = trained();
    let sched = run.join("schedule.yaml");
    let tmp = tempdir();
    let mut c = command(&bin("trainer"));
    c.arg(&sched)
        .arg("--run-dir")
        .arg(tmp.path().join("r"))
        .arg("--gpu");
    let res = common::run(c);
    assert!(!res.status.success());
    let err = text(&res.stderr);
    for s in [
        "--gpu asked for /device:GPU:0",
        "TensorFlow lists only",
        "device:CPU:0",
        "CPU-only build",
        "CUDA_VISIBLE_DEVICES",
    ] {
        assert!(err.contains(s), "no {s:?} in\n{err}");
    }
    let mut c = command(&bin("eval-sweep"));
    c.arg(run).arg("--gpu");
    let res = common::run(c);
    assert!(!res.status.success());
    assert!(text(&res.stderr).contains("--gpu asked for /device:GPU:0"));
}
