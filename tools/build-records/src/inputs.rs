//! Image folders -> labelled file lists: the first stage of build-records.
//!
//! Owns the ImageFolder layout `<input>/<split>/<synset>/<file>`, the synset list (labels are
//! 1-based positions in it), the optional metadata (synset -> human text) and box files. Lists
//! paths and sizes only; file contents are read later, per shard. Everything here fails before
//! any shard is written, with the file (and line) at fault.

use dawnrun_records::BBox;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

/// Errors reading the input tree and side files. Each names the path (and line) at fault.
#[derive(Debug, thiserror::Error)]
pub enum InputsError {
    #[error("input folder {} does not exist", .0.display())]
    MissingInput(PathBuf),
    #[error("{}: no such folder (expected <input>/<split>/<synset>/<images>; choose splits with --splits)", .0.display())]
    MissingSplit(PathBuf),
    #[error("{}: holds no images (expected <synset>/<images> folders inside)", .0.display())]
    EmptySplit(PathBuf),
    #[error("{}: cannot read", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: file name is not valid UTF-8", .0.display())]
    NotUtf8(PathBuf),
    #[error("{}:{line}: {message}", .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}: {} synset folder(s) not in the label list from {source_of_labels}: {}", .path.display(), .extra.len(), .extra.join(", "))]
    UnknownSynsets {
        path: PathBuf,
        source_of_labels: String,
        extra: Vec<String>,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> InputsError + '_ {
    move |source| InputsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// One file to store, from the listing (content not read yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    pub path: PathBuf,
    /// `<synset>/<file name>`, relative to the split folder: names the file in reports.
    pub rel: String,
    pub synset: String,
    pub size_bytes: u64,
}

/// A split's listing: files sorted by (synset, file name), and entries that are not files.
#[derive(Debug, Clone, Default)]
pub struct SplitListing {
    pub dir: PathBuf,
    pub files: Vec<InputFile>,
    /// Synset folders found, sorted.
    pub synsets: Vec<String>,
    /// (relative name, reason) of entries that are not regular files, e.g. nested folders.
    pub skipped: Vec<(String, String)>,
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, PathBuf, fs::Metadata)>, InputsError> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        let entry = entry.map_err(io_err(dir))?;
        let path = entry.path();
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| InputsError::NotUtf8(path.clone()))?;
        // Follows symlinks: a dangling link is an unreadable file, reported now.
        let meta = fs::metadata(&path).map_err(io_err(&path))?;
        entries.push((name, path, meta));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(entries)
}

/// Lists `<input>/<split>/*/*`. Files directly in the split folder are skipped (they have no
/// synset); hidden entries (dot files) are ignored.
pub fn list_split(input: &Path, split: &str) -> Result<SplitListing, InputsError> {
    if !input.is_dir() {
        return Err(InputsError::MissingInput(input.to_path_buf()));
    }
    let dir = input.join(split);
    if !dir.is_dir() {
        return Err(InputsError::MissingSplit(dir));
    }
    let mut listing = SplitListing {
        dir: dir.clone(),
        ..SplitListing::default()
    };
    for (synset, synset_dir, meta) in sorted_entries(&dir)? {
        if synset.starts_with('.') {
            continue;
        }
        if !meta.is_dir() {
            listing
                .skipped
                .push((synset, "file outside any synset folder".into()));
            continue;
        }
        let mut any = false;
        for (name, path, meta) in sorted_entries(&synset_dir)? {
            if name.starts_with('.') {
                continue;
            }
            let rel = format!("{synset}/{name}");
            if !meta.is_file() {
                listing.skipped.push((
                    rel,
                    "not a regular file (nested folders are not read)".into(),
                ));
                continue;
            }
            any = true;
            listing.files.push(InputFile {
                path,
                rel,
                synset: synset.clone(),
                size_bytes: meta.len(),
            });
        }
        // An empty synset folder stays a class: dropping it would give every later synset
        // another label than the sorted folder list (ImageNet's label order) says.
        if !any {
            listing.skipped.push((
                synset.clone(),
                "synset folder holds no images: kept as a class with none".into(),
            ));
        }
        listing.synsets.push(synset);
    }
    if listing.files.is_empty() {
        return Err(InputsError::EmptySplit(dir));
    }
    Ok(listing)
}

/// Reads a synset list file: one synset per line, in label order (label = line position among
/// non-blank lines, 1-based). Duplicates are an error.
pub fn read_synsets_file(path: &Path) -> Result<Vec<String>, InputsError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut seen = HashMap::new();
    let mut synsets = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let synset = line.trim();
        if synset.is_empty() {
            continue;
        }
        if let Some(first) = seen.insert(synset.to_string(), i + 1) {
            return Err(InputsError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: format!("synset {synset} repeats line {first}"),
            });
        }
        synsets.push(synset.to_string());
    }
    if synsets.is_empty() {
        return Err(InputsError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: "no synsets".into(),
        });
    }
    Ok(synsets)
}

/// The label order: the `--synsets` file when given, else the sorted synsets of the train split
/// when it is listed, else the sorted union of the listed splits. Every listed split's synsets
/// must be in it; the error names the extra ones.
pub fn label_order(
    synsets_file: Option<(&Path, Vec<String>)>,
    listings: &[(String, SplitListing)],
) -> Result<Vec<String>, InputsError> {
    let (order, source_of_labels) = match synsets_file {
        Some((path, list)) => (list, path.display().to_string()),
        None => match listings.iter().find(|(split, _)| split == "train") {
            Some((_, train)) => (train.synsets.clone(), train.dir.display().to_string()),
            None => {
                let all: BTreeSet<&String> =
                    listings.iter().flat_map(|(_, l)| &l.synsets).collect();
                (
                    all.into_iter().cloned().collect(),
                    "the listed splits".into(),
                )
            }
        },
    };
    let known: BTreeSet<&String> = order.iter().collect();
    for (_, listing) in listings {
        let extra: Vec<String> = listing
            .synsets
            .iter()
            .filter(|s| !known.contains(s))
            .cloned()
            .collect();
        if !extra.is_empty() {
            return Err(InputsError::UnknownSynsets {
                path: listing.dir.clone(),
                source_of_labels,
                extra,
            });
        }
    }
    Ok(order)
}

/// `synset -> label` (1-based position in `order`; 0 stays reserved for background).
pub fn labels(order: &[String]) -> HashMap<String, i64> {
    order
        .iter()
        .enumerate()
        .map(|(i, s)| (s.clone(), i as i64 + 1))
        .collect()
}

/// Reads `<synset>\t<human text>` lines (ImageNet's synset-to-words format).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, InputsError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut texts = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let Some((synset, human)) = line.split_once('\t') else {
            return Err(InputsError::Parse {
                path: path.to_path_buf(),
                line: i + 1,
                message: "expected <synset><TAB><text>".into(),
            });
        };
        texts.insert(synset.trim().to_string(), human.trim().to_string());
    }
    Ok(texts)
}

/// Reads a box file as `build_imagenet_data.py` takes it: `<file name>,xmin,ymin,xmax,ymax` per
/// line, coordinates relative to the image size, several lines per image allowed. A first line
/// that does not parse as numbers is taken as a header.
pub fn read_bboxes(path: &Path) -> Result<HashMap<String, Vec<BBox>>, InputsError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    let mut boxes: BTreeMap<String, Vec<BBox>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let parse_err = |message: String| InputsError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let fields: Vec<&str> = line.split(',').map(str::trim).collect();
        if fields.len() != 5 {
            return Err(parse_err(format!(
                "expected 5 comma-separated fields, found {}",
                fields.len()
            )));
        }
        let coords: Result<Vec<f32>, _> = fields[1..].iter().map(|f| f.parse::<f32>()).collect();
        let coords = match coords {
            Ok(c) => c,
            Err(_) if i == 0 => continue,
            Err(e) => return Err(parse_err(format!("bad coordinate: {e}"))),
        };
        if coords.iter().any(|c| !(0.0..=1.0).contains(c))
            || coords[0] > coords[2]
            || coords[1] > coords[3]
        {
            return Err(parse_err(format!(
                "box {coords:?} is not 0 <= xmin <= xmax <= 1, 0 <= ymin <= ymax <= 1"
            )));
        }
        boxes.entry(fields[0].to_string()).or_default().push(BBox {
            xmin: coords[0],
            ymin: coords[1],
            xmax: coords[2],
            ymax: coords[3],
        });
    }
    Ok(boxes.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(dir: &str, synsets: &[&str]) -> SplitListing {
        SplitListing {
            dir: PathBuf::from(dir),
            synsets: synsets.iter().map(|s| s.to_string()).collect(),
            ..SplitListing::default()
        }
    }

    #[test]
    fn labels_are_one_based_sorted_positions() {
        for n in 1..50 {
            let mut names: Vec<String> = (0..n)
                .map(|i| format!("n{:08}", (i * 7919) % 100_003))
                .collect();
            names.sort();
            let listings = vec![(
                "train".to_string(),
                listing("t", &names.iter().map(String::as_str).collect::<Vec<_>>()),
            )];
            let order = label_order(None, &listings).unwrap();
            let labels = labels(&order);
            for (i, name) in names.iter().enumerate() {
                assert_eq!(labels[name], i as i64 + 1);
            }
        }
    }

    #[test]
    fn validation_synsets_outside_train_are_named() {
        let listings = vec![
            ("train".to_string(), listing("in/train", &["a", "b"])),
            (
                "validation".to_string(),
                listing("in/validation", &["a", "c", "d"]),
            ),
        ];
        let err = label_order(None, &listings).unwrap_err().to_string();
        assert!(
            err.contains("in/validation") && err.contains("c, d") && err.contains("in/train"),
            "{err}"
        );
    }

    #[test]
    fn synsets_file_order_wins_and_may_hold_more() {
        let listings = vec![("train".to_string(), listing("t", &["a", "b"]))];
        let order = label_order(
            Some((Path::new("s.txt"), vec!["c".into(), "b".into(), "a".into()])),
            &listings,
        )
        .unwrap();
        assert_eq!(labels(&order)["a"], 3);
        let err = label_order(Some((Path::new("s.txt"), vec!["a".into()])), &listings).unwrap_err();
        assert!(err.to_string().contains("s.txt"), "{err}");
    }

    #[test]
    fn validation_only_uses_its_own_sorted_synsets() {
        let listings = vec![("validation".to_string(), listing("v", &["b", "a"]))];
        assert_eq!(label_order(None, &listings).unwrap(), vec!["a", "b"]);
    }

    #[test]
    fn side_files_parse_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let boxes = dir.path().join("boxes.csv");
        fs::write(&boxes, "filename,xmin,ymin,xmax,ymax\na.JPEG,0.1,0.2,0.5,0.9\na.JPEG,0,0,1,1\nb.JPEG,0.3,0.3,0.4,0.4\n").unwrap();
        let parsed = read_bboxes(&boxes).unwrap();
        assert_eq!(parsed["a.JPEG"].len(), 2);
        assert_eq!(parsed["b.JPEG"][0].xmax, 0.4);
        fs::write(&boxes, "a.JPEG,0.1,0.2,0.5,0.9\nb.JPEG,0.1,x,0.5,0.9\n").unwrap();
        let err = read_bboxes(&boxes).unwrap_err().to_string();
        assert!(err.contains("boxes.csv:2:"), "{err}");

        let synsets = dir.path().join("synsets.txt");
        fs::write(&synsets, "n1\nn2\n\nn1\n").unwrap();
        let err = read_synsets_file(&synsets).unwrap_err().to_string();
        assert!(
            err.contains("synsets.txt:4:") && err.contains("repeats line 1"),
            "{err}"
        );

        let meta = dir.path().join("meta.txt");
        fs::write(&meta, "n1\tfirst thing\nn2\tsecond\n").unwrap();
        assert_eq!(read_metadata(&meta).unwrap()["n1"], "first thing");
        fs::write(&meta, "n1 no tab\n").unwrap();
        assert!(read_metadata(&meta)
            .unwrap_err()
            .to_string()
            .contains("meta.txt:1:"));
    }
}
