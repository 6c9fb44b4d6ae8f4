//! Shared helpers for the integration tests: the venv Python and the snippets in `tests/py/`.
#![allow(dead_code)] // each test binary uses a different subset

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

use dawnrun_records::example::{Example, ValueKind};
use serde_json::Value;

/// The venv Python with TensorFlow: `$DAWNRUN_PYTHON`, else `<workspace>/.deps/venv/bin/python`.
/// Missing Python fails the test: interop is never skipped silently.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("DAWNRUN_PYTHON") {
        return PathBuf::from(p);
    }
    let fallback = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.deps/venv/bin/python");
    assert!(
        fallback.exists(),
        "no Python with TensorFlow: set DAWNRUN_PYTHON or run `make setup` (looked for {})",
        fallback.display()
    );
    fallback
}

/// Runs `tests/py/<script>` with `args`, asserts success and parses its stdout as JSON.
pub fn run_py<S: AsRef<OsStr>>(script: &str, args: &[S]) -> Value {
    let stdout = run_py_text(script, args);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script}: stdout is not JSON ({e}): {stdout}"))
}

/// Runs `tests/py/<script>` with `args`, asserts success, returns its stdout.
pub fn run_py_text<S: AsRef<OsStr>>(script: &str, args: &[S]) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(python())
        .arg(&path)
        .args(args)
        .env("TF_CPP_MIN_LOG_LEVEL", "2")
        .output()
        .unwrap_or_else(|e| panic!("cannot run python {script}: {e} (run `make setup`)"));
    assert!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A feature's values in a form both sides agree on exactly.
#[derive(Debug, PartialEq)]
pub enum Values {
    /// Hex strings.
    Bytes(Vec<String>),
    Floats(Vec<f32>),
    Int64s(Vec<i64>),
    Unset,
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Our Example as key -> values.
pub fn ours(ex: &Example) -> BTreeMap<String, Values> {
    ex.features()
        .map(|(k, f)| {
            let v = match &f.kind {
                Some(ValueKind::BytesList(l)) => {
                    Values::Bytes(l.value.iter().map(|b| hex(b)).collect())
                }
                Some(ValueKind::FloatList(l)) => Values::Floats(l.value.clone()),
                Some(ValueKind::Int64List(l)) => Values::Int64s(l.value.clone()),
                None => Values::Unset,
            };
            (k.to_owned(), v)
        })
        .collect()
}

/// Python's `{key: {"kind": "bytes_list"|..., "values": [...]}}` as key -> values. Floats go
/// through f64 -> f32, which is exact for values that were f32 to begin with.
pub fn theirs(features: &Value) -> BTreeMap<String, Values> {
    let obj = features.as_object().expect("features object");
    obj.iter()
        .map(|(k, f)| {
            let values = f["values"].as_array().expect("values array");
            let v = match f["kind"].as_str() {
                Some("bytes_list") => Values::Bytes(
                    values
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect(),
                ),
                Some("float_list") => {
                    Values::Floats(values.iter().map(|v| v.as_f64().unwrap() as f32).collect())
                }
                Some("int64_list") => {
                    Values::Int64s(values.iter().map(|v| v.as_i64().unwrap()).collect())
                }
                None => Values::Unset,
                Some(other) => panic!("unknown kind {other}"),
            };
            (k.clone(), v)
        })
        .collect()
}
