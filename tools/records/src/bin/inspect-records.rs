//! inspect-records: count, verify and peek into TFRecord files.
//!
//! Reads every record of every file given, checking both CRCs, and prints one line per file
//! (records, bytes). `--show N` prints the first N tf.Examples' features; `--index` writes a
//! DALI-style `.idx` beside each file (or in `--index-dir`). A damaged or unreadable file is
//! reported with its path and byte offset, the other files are still checked, and the exit
//! status is 2.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Parser;
use dawnrun_records::example::{Example, Feature, ValueKind};
use dawnrun_records::framing::{framed_len, RecordReader};
use dawnrun_records::index::{default_index_path, RecordIndex};

#[derive(Parser, Debug)]
#[command(version, about = "Count, verify (both CRCs) and show TFRecord files")]
struct Args {
    /// TFRecord files to check.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Print the features of the first N records of each file.
    #[arg(long, value_name = "N", default_value_t = 0)]
    show: usize,
    /// Write a tfrecord2idx index `<file>.idx` beside each file.
    #[arg(long)]
    index: bool,
    /// Write the indexes into DIR instead (implies --index).
    #[arg(long, value_name = "DIR")]
    index_dir: Option<PathBuf>,
}

/// What the run does, validated from [`Args`].
struct Inspect {
    show: usize,
    /// `None`: no index; `Some(None)`: beside each file; `Some(Some(dir))`: in `dir`.
    index: Option<Option<PathBuf>>,
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = Args::parse();
    let inspect = Inspect {
        show: args.show,
        index: match (args.index, args.index_dir) {
            (_, Some(dir)) => Some(Some(dir)),
            (true, None) => Some(None),
            (false, None) => None,
        },
    };
    if let Some(Some(dir)) = &inspect.index {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create index directory", dir.display()))?;
    }
    let mut failed = 0;
    for file in &args.files {
        if let Err(e) = inspect_file(file, &inspect) {
            eprintln!("error: {e:#}");
            failed += 1;
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} files damaged or unreadable",
            args.files.len()
        );
    }
    Ok(())
}

/// Reads all of `path`, verifying every record; prints the summary, shown records and index.
fn inspect_file(path: &Path, inspect: &Inspect) -> anyhow::Result<()> {
    let mut reader = RecordReader::open(path)?;
    let mut data = Vec::new();
    let mut entries = Vec::new();
    let mut data_bytes = 0u64;
    let mut shown = String::new();
    while let Some(offset) = reader.next_into(&mut data)? {
        if entries.len() < inspect.show {
            show_record(&mut shown, entries.len(), offset, &data);
        }
        entries.push((offset, framed_len(data.len() as u64)));
        data_bytes += data.len() as u64;
    }
    println!(
        "{}: {} records, {} bytes ({} data bytes), all CRCs ok",
        path.display(),
        entries.len(),
        reader.position(),
        data_bytes
    );
    print!("{shown}");
    if let Some(dir) = &inspect.index {
        let idx_path = match dir {
            None => default_index_path(path),
            Some(dir) => {
                let name = path.file_name().context("file name")?;
                default_index_path(dir.join(name))
            }
        };
        let index = RecordIndex {
            path: path.to_path_buf(),
            entries,
        };
        index.save(&idx_path)?;
        println!("  index: {}", idx_path.display());
    }
    Ok(())
}

/// Appends record `i`'s features to `out`, one line each, sorted by key.
fn show_record(out: &mut String, i: usize, offset: u64, data: &[u8]) {
    let _ = writeln!(out, "  record {i} at byte {offset} ({} bytes):", data.len());
    match Example::from_bytes(data) {
        Ok(ex) if ex.features().next().is_none() => {
            let _ = writeln!(out, "    (no features)");
        }
        Ok(ex) => {
            for (key, feature) in ex.features() {
                let _ = writeln!(out, "    {key}: {}", describe(feature));
            }
        }
        Err(e) => {
            let _ = writeln!(out, "    {:#}", anyhow::Error::from(e));
        }
    }
}

/// At most this many values of a list are printed.
const SHOW_VALUES: usize = 8;
/// Bytes values at most this long that are printable UTF-8 are shown as text.
const SHOW_TEXT_BYTES: usize = 120;
/// Leading bytes shown in hex for binary values.
const SHOW_PREFIX_BYTES: usize = 12;

fn describe(feature: &Feature) -> String {
    let (kind, values): (&str, Vec<String>) = match &feature.kind {
        None => return "(no list)".to_owned(),
        Some(ValueKind::BytesList(l)) => {
            ("bytes", l.value.iter().map(|v| describe_bytes(v)).collect())
        }
        Some(ValueKind::FloatList(l)) => {
            ("float", l.value.iter().map(|v| format!("{v:?}")).collect())
        }
        Some(ValueKind::Int64List(l)) => ("int64", l.value.iter().map(i64::to_string).collect()),
    };
    let more = values.len().saturating_sub(SHOW_VALUES);
    let mut text = format!("{kind}[{}] ", values.len());
    if values.len() == 1 {
        text = format!("{kind} ");
    }
    text.push('[');
    text.push_str(&values[..values.len().min(SHOW_VALUES)].join(", "));
    if more > 0 {
        let _ = write!(text, ", … {more} more");
    }
    text.push(']');
    text
}

fn describe_bytes(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(s) if value.len() <= SHOW_TEXT_BYTES && !s.chars().any(char::is_control) => {
            format!("{s:?}")
        }
        _ => {
            let prefix: Vec<String> = value
                .iter()
                .take(SHOW_PREFIX_BYTES)
                .map(|b| format!("{b:02x}"))
                .collect();
            let ellipsis = if value.len() > SHOW_PREFIX_BYTES {
                " …"
            } else {
                ""
            };
            format!("<{} bytes: {}{ellipsis}>", value.len(), prefix.join(" "))
        }
    }
}
