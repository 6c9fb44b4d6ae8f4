//! The decode contract: on damaged and valid JPEGs made with PIL, our decode path (the function
//! the workers call) accepts exactly what TensorFlow's `tf.io.decode_jpeg` accepts, except the
//! disagreements listed in [`KNOWN`] (explained in `dawnrun_data::jpeg_header::check_structure`).

mod common;

use std::collections::BTreeSet;

use common::{run_py, worker_decode};
use dawnrun_data::DEFAULT_MAX_IMAGE_PIXELS;

/// Files (by name) where we and TensorFlow 2.13 disagree, with the reason. The test fails if
/// this list is not exactly the set of disagreements, so a change either way is noticed.
///
/// Every one is a file TensorFlow decodes and we skip; none goes the other way (we never train
/// on a file TensorFlow refuses). Since the decoder is libjpeg-turbo (TensorFlow's own), garbage
/// inside the entropy-coded data is decoded with a warning on both sides, as TensorFlow does.
const KNOWN: &[(&str, &str)] = &[
    (
        "restart.trunc_last_byte",
        "only the final 0xD9 is missing; libjpeg's fake EOI happens to complete it, we require EOI",
    ),
    (
        "cmyk.trunc_last_byte",
        "only the final 0xD9 is missing; libjpeg's fake EOI happens to complete it, we require EOI",
    ),
];

#[test]
fn our_verdicts_match_tensorflow_decode_jpeg() {
    let dir = tempfile::tempdir().unwrap();
    let files = run_py("jpeg_verdicts.py", &[dir.path().as_os_str()]);
    let files = files.as_array().unwrap();
    assert!(files.len() > 50, "only {} files", files.len());
    let mut disagree = BTreeSet::new();
    let mut report = String::new();
    // One decoder reused over every file, damaged or not, as a worker reuses it: an error must
    // not leave it unable to decode the next file.
    let mut reused = dawnrun_data::Preprocessor::new();
    let mut out = vec![0u8; 16 * 16 * 3];
    for f in files {
        let path = f["path"].as_str().unwrap();
        let name = std::path::Path::new(path)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let tf_ok = f["tf_ok"].as_bool().unwrap();
        let data = std::fs::read(path).unwrap();
        let ours = worker_decode(&data, DEFAULT_MAX_IMAGE_PIXELS);
        let again = reused.run(&data, 16, 16, &mut out, |w, h| dawnrun_data::Placement {
            crop: dawnrun_data::CropBox::full(w, h),
            flip: false,
        });
        assert_eq!(
            again.is_ok(),
            ours.is_ok(),
            "{name}: a reused decoder says {again:?}, a fresh one {ours:?}"
        );
        if ours.is_ok() != tf_ok {
            report.push_str(&format!(
                "{name}: TensorFlow {} ({}), ours {:?}\n",
                if tf_ok { "decodes" } else { "refuses" },
                f["tf_error"].as_str().unwrap_or(""),
                ours.err().map(|e| e.to_string())
            ));
            disagree.insert(name.clone());
        }
        if f["kind"] == "valid" {
            assert!(tf_ok, "{name}: a valid file TensorFlow refuses");
        }
    }
    let known: BTreeSet<String> = KNOWN.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(disagree, known, "disagreements with TensorFlow:\n{report}");
}
