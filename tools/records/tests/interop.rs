//! Python TensorFlow and dawnrun-records read each other's files: records, tf.Examples,
//! build_imagenet_data-style ImageNet records, TensorBoard events and DALI-style indexes.

mod common;

use std::path::Path;

use common::{ours, run_py, run_py_text, theirs};
use dawnrun_records::event::EventWriter;
use dawnrun_records::example::{Example, Feature};
use dawnrun_records::framing::{self, RecordReader, RecordWriter};
use dawnrun_records::imagenet::{decode_for_training, BBox, ImageRecord};
use dawnrun_records::index::{default_index_path, RecordIndex};
use dawnrun_records::shard_set::shard_name;
use serde_json::Value;

fn write_records(path: &Path, records: &[Vec<u8>]) {
    let mut w = RecordWriter::create(path).unwrap();
    for r in records {
        w.write(r).unwrap();
    }
    w.finish().unwrap();
}

/// Examples covering every kind, empty lists, extremes and a 1.5 MB bytes value.
fn every_kind_examples() -> Vec<Example> {
    (0..5)
        .map(|i| {
            let big: Vec<u8> = (0..1_500_000 * (i % 2))
                .map(|j| (j * 7 + i) as u8)
                .collect();
            Example::builder()
                .bytes("bytes/one", vec![0u8, 255, i as u8])
                .bytes("bytes/big", big)
                .bytes_list("bytes/empty", vec![])
                .strings("strings", &["tench", "", "élan vital"][..i % 4])
                .string("text", "Tinca tinca")
                .int64("int64/one", i as i64 - 2)
                .int64s("int64/extremes", vec![i64::MIN, -1, 0, 1, i64::MAX])
                .int64s("int64/empty", Vec::new())
                .float("float/one", i as f32 * 0.1)
                .floats(
                    "float/extremes",
                    vec![f32::MIN_POSITIVE, -0.0, 1e-30, f32::MAX],
                )
                .floats("float/empty", Vec::new())
                .feature("unset", Feature::default())
                .build()
        })
        .collect()
}

#[test]
fn tensorflow_reads_our_examples_of_every_kind() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("examples.tfrecord");
    let examples = every_kind_examples();
    write_records(
        &path,
        &examples.iter().map(Example::to_bytes).collect::<Vec<_>>(),
    );

    let read = run_py("read_generic.py", &[&path]);
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), examples.len());
    for (i, (ex, got)) in examples.iter().zip(read).enumerate() {
        let want = ours(ex);
        assert_eq!(theirs(&got["proto"]), want, "record {i}, tf.train.Example");
        // parse_single_example cannot name a dtype for the unset feature; all else must match.
        let mut want_parsed = want;
        want_parsed.remove("unset");
        assert_eq!(
            theirs(&got["parsed"]),
            want_parsed,
            "record {i}, parse_single_example"
        );
    }
}

#[test]
fn tensorflow_reads_our_imagenet_records() {
    let dir = tempfile::tempdir().unwrap();
    let jpegs = run_py(
        "make_jpegs.py",
        &[
            dir.path().as_os_str(),
            "64x48".as_ref(),
            "33x70".as_ref(),
            "9x9".as_ref(),
        ],
    );
    let records: Vec<ImageRecord> = jpegs
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, j)| ImageRecord {
            encoded: std::fs::read(j["path"].as_str().unwrap()).unwrap(),
            height: j["height"].as_i64().unwrap(),
            width: j["width"].as_i64().unwrap(),
            label: [1, 1000, 417][i],
            synset: format!("n0{}", 1_440_764 + i),
            text: ["tench, Tinca tinca", "", "airliner"][i].to_owned(),
            filename: format!("img{i}.JPEG"),
            // Image i has i boxes (the first none), all alike.
            bboxes: vec![
                BBox {
                    xmin: 0.125,
                    ymin: 0.2,
                    xmax: 0.875,
                    ymax: 0.75
                };
                i
            ],
        })
        .collect();
    let path = dir.path().join(shard_name("train", 0, 1));
    write_records(
        &path,
        &records
            .iter()
            .map(ImageRecord::to_bytes)
            .collect::<Vec<_>>(),
    );

    let read = run_py("read_imagenet.py", &[&path]);
    let read = read.as_array().unwrap();
    assert_eq!(read.len(), records.len());
    for (rec, got) in records.iter().zip(read) {
        assert_eq!(got["label"], rec.label);
        assert_eq!(got["synset"], rec.synset.as_str());
        assert_eq!(got["text"], rec.text.as_str());
        assert_eq!(got["filename"], rec.filename.as_str());
        assert_eq!(got["format"], "JPEG");
        assert_eq!(got["colorspace"], "RGB");
        assert_eq!(got["channels"], 3);
        assert_eq!(got["height"], rec.height);
        assert_eq!(got["width"], rec.width);
        assert_eq!(got["encoded_len"], rec.encoded.len());
        let shape: Vec<i64> = serde_json::from_value(got["decoded_shape"].clone()).unwrap();
        assert_eq!(
            shape,
            vec![rec.height, rec.width, 3],
            "TF decoded our JPEG bytes"
        );
        // TF gives [xmin, ymin, xmax, ymax] per box (f32 values widened to f64).
        let boxes: Vec<[f64; 4]> = serde_json::from_value(got["boxes"].clone()).unwrap();
        let boxes: Vec<[f32; 4]> = boxes.iter().map(|b| b.map(|v| v as f32)).collect();
        let want: Vec<[f32; 4]> = rec
            .bboxes
            .iter()
            .map(|b| [b.xmin, b.ymin, b.xmax, b.ymax])
            .collect();
        assert_eq!(boxes, want);
        assert_eq!(
            got["box_labels"],
            Value::from(vec![rec.label; rec.bboxes.len()])
        );
    }
}

/// Payload i of write_records.py: `(i * 31 + j) % 251` for j in 0..n.
fn python_payload(i: usize, n: usize) -> Vec<u8> {
    (0..n).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

#[test]
fn we_read_what_tensorflow_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let jpegs = run_py("make_jpegs.py", &[dir.path().as_os_str(), "40x30".as_ref()]);
    let jpeg = jpegs[0]["path"].as_str().unwrap();
    let written = run_py("write_records.py", &[dir.path().as_os_str(), jpeg.as_ref()]);

    // Raw payloads, both CRCs verified by our reader.
    let raw = dir.path().join("raw.tfrecord");
    let sizes: Vec<usize> = serde_json::from_value(written["raw_sizes"].clone()).unwrap();
    let records: Vec<_> = RecordReader::open(&raw)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(records.len(), sizes.len());
    let mut offset = 0;
    for (i, (rec, &n)) in records.iter().zip(&sizes).enumerate() {
        assert_eq!(rec.offset, offset);
        assert_eq!(rec.data, python_payload(i, n), "payload {i}");
        offset += framing::framed_len(n as u64);
    }
    assert_eq!(framing::count_records(&raw).unwrap(), sizes.len() as u64);

    // tf.train.Examples with every kind, then one ImageNet Example.
    let examples = dir.path().join("examples.tfrecord");
    let records: Vec<_> = RecordReader::open(&examples)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let generic = written["generic"].as_array().unwrap();
    assert_eq!(records.len(), generic.len() + 1);
    for (i, (rec, want)) in records.iter().zip(generic).enumerate() {
        let ex = Example::from_bytes(&rec.data).unwrap();
        assert_eq!(ours(&ex), theirs(want), "example {i}");
        assert_eq!(ex.get_bytes_list("b").unwrap()[1], "été".as_bytes());
        assert_eq!(ex.get_int64s("i").unwrap()[1], i64::MIN);
        assert!(ex.get_floats("f/empty").unwrap().is_empty());
    }
    let last = &records.last().unwrap().data;
    let image = ImageRecord::from_bytes(last).unwrap();
    let want = &written["imagenet"];
    assert_eq!(image.label, 417);
    assert_eq!(image.height, want["height"].as_i64().unwrap());
    assert_eq!(image.width, want["width"].as_i64().unwrap());
    assert_eq!((image.height, image.width), (30, 40));
    assert_eq!(image.synset, "n02690373");
    assert_eq!(image.text, "airliner");
    assert_eq!(image.filename, "n02690373_1.JPEG");
    assert_eq!(image.encoded, std::fs::read(jpeg).unwrap());
    assert_eq!(
        image.bboxes,
        vec![BBox {
            xmin: 0.25,
            ymin: 0.125,
            xmax: 0.75,
            ymax: 0.5
        }]
    );
    let (encoded, label) = decode_for_training(last).unwrap();
    assert_eq!((encoded, label), (&image.encoded[..], 417));
}

#[test]
fn tensorflow_reads_our_event_file() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = EventWriter::create(dir.path().join("logs")).unwrap();
    let points: Vec<(&str, i64, f32)> = (0..20)
        .flat_map(|s| {
            [
                ("loss", s * 10, 7.0 / (s + 1) as f32),
                ("lr", s * 10, if s == 0 { 0.0 } else { -0.5 * s as f32 }),
            ]
        })
        .collect();
    for &(tag, step, value) in &points {
        w.scalar(tag, step, value).unwrap();
    }
    w.flush().unwrap();
    let path = w.path().to_path_buf();
    w.finish().unwrap();

    let events = run_py("read_events.py", &[&path]);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), points.len() + 1);
    assert_eq!(events[0]["file_version"], "brain.Event:2");
    for (event, &(tag, step, value)) in events[1..].iter().zip(&points) {
        assert_eq!(event["step"], step);
        assert!(event["wall_time"].as_f64().unwrap() > 1.6e9);
        let v = &event["values"][0];
        assert_eq!(v[0], tag);
        assert_eq!(v[1].as_f64().unwrap() as f32, value, "{tag} at {step}");
        assert_eq!(v[2], "simple_value", "zero must still set the oneof");
    }
}

#[test]
fn our_index_matches_dali_tfrecord2idx() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(shard_name("validation", 3, 128));
    let records: Vec<Vec<u8>> = (0..40).map(|i| vec![i as u8; (i * 997) % 5000]).collect();
    write_records(&path, &records);
    let idx = default_index_path(&path);
    RecordIndex::build(&path).unwrap().save(&idx).unwrap();
    let theirs = run_py_text("tfrecord2idx.py", &[&path]);
    assert_eq!(std::fs::read_to_string(&idx).unwrap(), theirs);
    let index = RecordIndex::load(&idx, &path).unwrap();
    assert_eq!(index.len(), records.len());
    assert_eq!(index.read(17).unwrap().data, records[17]);
}
