//! Source positions of YAML nodes, for errors found after deserialisation.
//!
//! serde_yaml 0.9 reports a line and column only for errors it raises itself (syntax, unknown
//! key, wrong type). Checks that look at several values at once (a gap between two phases, an
//! `exp` ramp through zero) run on the deserialised structs, which carry no positions. This
//! module parses the same text a second time with yaml-rust2's event parser, which marks every
//! event, and records where each node sits under a dotted path such as `phases[2].epoch[0]`.
//! It reads text only; it never decides whether a value is valid.

use std::collections::HashMap;
use std::fmt;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the schedule text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column (in characters).
    pub column: usize,
}

impl Location {
    /// The start of the file: where errors about the whole document point.
    pub const START: Location = Location { line: 1, column: 1 };
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// Where each node of one YAML document starts, keyed by dotted path.
///
/// Mapping entries are recorded at their key (`phases[1].lr` points at `lr:`), sequence items
/// at the item itself (`phases[1]` points at the first character after `- `).
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    marks: HashMap<String, Mark>,
    /// Keys given twice in one mapping: (path, the second one), in text order.
    repeated: Vec<(String, Mark)>,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    location: Location,
    /// Character offset, to tell which of two marks comes first.
    index: usize,
}

impl Mark {
    fn from_marker(marker: Marker) -> Mark {
        // yaml-rust2 0.10 markers: line is 1-based, col is 0-based.
        Mark {
            location: Location {
                line: marker.line(),
                column: marker.col() + 1,
            },
            index: marker.index(),
        }
    }
}

impl SourceMap {
    /// Index `text`. A text yaml-rust2 cannot parse yields an empty map (every lookup then
    /// answers [`Location::START`]); callers parse with serde_yaml first, which reports syntax
    /// errors with their own positions.
    pub fn build(text: &str) -> SourceMap {
        let mut recorder = Recorder::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recorder, false).is_err() {
            return SourceMap::default();
        }
        SourceMap {
            marks: recorder.marks,
            repeated: recorder.repeated,
        }
    }

    /// The first key given twice in one mapping: its path, where it first stands and where it
    /// stands again. serde_yaml refuses such a file but points at the mapping's start.
    pub fn repeated_key(&self) -> Option<(&str, Location, Location)> {
        let (path, again) = self.repeated.first()?;
        Some((path, self.marks.get(path)?.location, again.location))
    }

    /// Where `path` starts; if it is absent (a defaulted field), where its nearest present
    /// ancestor starts, down to the start of the file.
    pub fn locate(&self, path: &str) -> Location {
        let mut path = path;
        loop {
            if let Some(mark) = self.marks.get(path) {
                return mark.location;
            }
            match parent(path) {
                Some(up) => path = up,
                None => return Location::START,
            }
        }
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
fn parent(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    let cut = path.rfind(['.', '[']).unwrap_or(0);
    Some(&path[..cut])
}

fn join_key(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

enum Frame {
    /// `pending_key` is Some between a key and its value.
    Map {
        path: String,
        pending_key: Option<String>,
    },
    Seq {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Recorder {
    stack: Vec<Frame>,
    marks: HashMap<String, Mark>,
    repeated: Vec<(String, Mark)>,
}

impl Recorder {
    fn record(&mut self, path: String, mark: Mark) {
        self.marks.entry(path).or_insert(mark);
    }

    /// The path of a value node starting at `mark` (collections are pushed by the caller).
    fn value_path(&mut self, mark: Mark) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Map { path, pending_key }) => match pending_key.take() {
                Some(key) => join_key(path, &key),
                // A collection used as a mapping key: not in our format; give it a path no
                // lookup asks for.
                None => format!("{path}.?"),
            },
            Some(Frame::Seq { path, next_index }) => {
                let item = format!("{path}[{next_index}]");
                *next_index += 1;
                self.record(item.clone(), mark);
                item
            }
        }
    }

    fn scalar(&mut self, value: String, mark: Mark) {
        if let Some(Frame::Map {
            path,
            pending_key: pending @ None,
        }) = self.stack.last_mut()
        {
            let key_path = join_key(path, &value);
            let map_path = path.clone();
            *pending = Some(value);
            // A block mapping inside a sequence item is marked at its first value by
            // yaml-rust2, after its first key; the key is where the item visibly starts.
            if let Some(item) = self.marks.get_mut(&map_path) {
                if mark.index < item.index {
                    *item = mark;
                }
            }
            if self.marks.contains_key(&key_path) {
                self.repeated.push((key_path, mark));
            } else {
                self.record(key_path, mark);
            }
        } else {
            self.value_path(mark);
        }
    }
}

impl MarkedEventReceiver for Recorder {
    fn on_event(&mut self, event: Event, marker: Marker) {
        let mark = Mark::from_marker(marker);
        match event {
            Event::Scalar(value, ..) => self.scalar(value, mark),
            Event::Alias(_) => {
                self.value_path(mark);
            }
            Event::SequenceStart(..) => {
                let path = self.value_path(mark);
                self.stack.push(Frame::Seq {
                    path,
                    next_index: 0,
                });
            }
            Event::MappingStart(..) => {
                let path = self.value_path(mark);
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                self.stack.pop();
            }
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(map: &SourceMap, path: &str) -> (usize, usize) {
        let l = map.locate(path);
        (l.line, l.column)
    }

    #[test]
    fn block_and_flow_phases_are_located() {
        let text = "run:\n  depth: 50\nphases:\n  - {epoch: [0, 6], lr: [1.0, 2.0]}\n  - epoch: [6, 21]\n    lr: [2.0, 0.45]\n";
        let map = SourceMap::build(text);
        assert_eq!(at(&map, "run"), (1, 1));
        assert_eq!(at(&map, "run.depth"), (2, 3));
        assert_eq!(at(&map, "phases"), (3, 1));
        assert_eq!(at(&map, "phases[0]"), (4, 5));
        assert_eq!(at(&map, "phases[0].epoch"), (4, 6));
        assert_eq!(at(&map, "phases[0].epoch[1]"), (4, 17));
        assert_eq!(at(&map, "phases[0].lr"), (4, 21));
        assert_eq!(at(&map, "phases[1]"), (5, 5));
        assert_eq!(at(&map, "phases[1].epoch[0]"), (5, 13));
        assert_eq!(at(&map, "phases[1].lr"), (6, 5));
    }

    #[test]
    fn missing_paths_fall_back_to_the_nearest_ancestor() {
        let text = "phases:\n  - epoch: [0, 1]\n";
        let map = SourceMap::build(text);
        assert_eq!(at(&map, "phases[0].min_scale"), (2, 5));
        assert_eq!(at(&map, "phases[7].lr[1]"), (1, 1));
        assert_eq!(at(&map, "eval.image_size"), (1, 1));
    }

    #[test]
    fn the_nth_item_of_a_long_list_is_on_its_own_line() {
        for n in 1..40 {
            let mut text = String::from("# comment\nphases:\n");
            for i in 0..n {
                text.push_str(&format!(
                    "  - epoch: [{i}, {}]\n    lr_method: exp\n",
                    i + 1
                ));
            }
            let map = SourceMap::build(&text);
            for i in 0..n {
                assert_eq!(at(&map, &format!("phases[{i}]")), (3 + 2 * i, 5));
                assert_eq!(at(&map, &format!("phases[{i}].lr_method")), (4 + 2 * i, 5));
            }
        }
    }

    #[test]
    fn a_key_given_twice_is_found_at_its_second_place() {
        let text = "run:\n  depth: 18\n  seed: 3\n  depth: 50\nphases:\n  - {lr: [1, 2], epoch: [0, 1], lr: [3, 4]}\n";
        let map = SourceMap::build(text);
        let (path, first, again) = map.repeated_key().unwrap();
        assert_eq!(path, "run.depth");
        assert_eq!((first.line, first.column), (2, 3));
        assert_eq!((again.line, again.column), (4, 3));
        // The first value stays the one located.
        assert_eq!(at(&map, "run.depth"), (2, 3));
        let map = SourceMap::build("phases:\n  - {lr: [1, 2], epoch: [0, 1], lr: [3, 4]}\n");
        let (path, first, again) = map.repeated_key().unwrap();
        assert_eq!((path, first.column, again.column), ("phases[0].lr", 6, 33));
        assert!(SourceMap::build("a: 1\nb: {a: 2}\n")
            .repeated_key()
            .is_none());
    }

    #[test]
    fn unparsable_text_gives_the_file_start() {
        let map = SourceMap::build("a: [1, 2\n");
        assert_eq!(at(&map, "a"), (1, 1));
    }
}
