//! tf.Example, the payload of every training and validation record.
//!
//! The structs mirror TensorFlow's `example.proto` / `feature.proto` field for field, as `prost`
//! derives (no protoc; `Features` by hand, see its doc). `Features.feature` is a `BTreeMap`, not a `HashMap`: prost encodes map
//! entries in iteration order, so a sorted map makes the same Example serialize to the same bytes
//! in every process (build-records promises byte-identical output for a seed).
//!
//! The typed helpers (a builder and `get_*` getters) keep feature kinds straight: asking for an
//! int64 where a bytes list is stored is an [`ExampleError::WrongKind`] naming the key and both kinds.

use std::collections::BTreeMap;
use std::fmt;

use prost::Message;

/// `tensorflow.Example`: one training item, a bag of named features.
#[derive(Clone, PartialEq, Message)]
pub struct Example {
    #[prost(message, optional, tag = "1")]
    pub features: Option<Features>,
}

/// `tensorflow.Features`: feature name to value list.
///
/// `Message` is implemented by hand, not derived: prost's map encoding leaves out a map value
/// equal to its default, so a [`Feature`] with no list set would be written as an entry with
/// no value field, and TensorFlow's fast Example parser (`tf.io.parse_single_example`, 2.13)
/// then rejects the whole record with InvalidArgument. Here every entry carries both its key
/// and its value, as Python protobuf writes them. Decoding is prost's own map merge.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features {
    pub feature: BTreeMap<String, Feature>,
}

/// Wire helpers for [`Features`]: each map entry is a message {1: key, 2: value}.
mod features_wire {
    use super::{Feature, Features};
    use prost::bytes::{Buf, BufMut};
    use prost::encoding::{
        btree_map, encode_key, encode_varint, encoded_len_varint, key_len, message, skip_field,
        string, DecodeContext, WireType,
    };
    use prost::DecodeError;

    const FEATURE_TAG: u32 = 1;

    fn entry_len(key: &String, value: &Feature) -> usize {
        string::encoded_len(1, key) + message::encoded_len(2, value)
    }

    impl prost::Message for Features {
        fn encode_raw(&self, buf: &mut impl BufMut) {
            for (key, value) in &self.feature {
                encode_key(FEATURE_TAG, WireType::LengthDelimited, buf);
                encode_varint(entry_len(key, value) as u64, buf);
                string::encode(1, key, buf);
                message::encode(2, value, buf);
            }
        }

        fn merge_field(
            &mut self,
            tag: u32,
            wire_type: WireType,
            buf: &mut impl Buf,
            ctx: DecodeContext,
        ) -> Result<(), DecodeError> {
            if tag == FEATURE_TAG {
                btree_map::merge(string::merge, message::merge, &mut self.feature, buf, ctx)
            } else {
                skip_field(wire_type, tag, buf, ctx)
            }
        }

        fn encoded_len(&self) -> usize {
            self.feature
                .iter()
                .map(|(key, value)| {
                    let len = entry_len(key, value);
                    key_len(FEATURE_TAG) + encoded_len_varint(len as u64) + len
                })
                .sum()
        }

        fn clear(&mut self) {
            self.feature.clear();
        }
    }
}

/// `tensorflow.Feature`: exactly one of three list kinds (or none, which TF treats as empty).
#[derive(Clone, PartialEq, Message)]
pub struct Feature {
    #[prost(oneof = "ValueKind", tags = "1, 2, 3")]
    pub kind: Option<ValueKind>,
}

/// The oneof inside [`Feature`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ValueKind {
    #[prost(message, tag = "1")]
    BytesList(BytesList),
    #[prost(message, tag = "2")]
    FloatList(FloatList),
    #[prost(message, tag = "3")]
    Int64List(Int64List),
}

/// `tensorflow.BytesList`.
#[derive(Clone, PartialEq, Message)]
pub struct BytesList {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub value: Vec<Vec<u8>>,
}

/// `tensorflow.FloatList`, packed on the wire (prost's proto3 default, TF's `[packed = true]`).
#[derive(Clone, PartialEq, Message)]
pub struct FloatList {
    #[prost(float, repeated, tag = "1")]
    pub value: Vec<f32>,
}

/// `tensorflow.Int64List`, packed on the wire.
#[derive(Clone, PartialEq, Message)]
pub struct Int64List {
    #[prost(int64, repeated, tag = "1")]
    pub value: Vec<i64>,
}

/// The kind of a stored feature, for error messages and inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureKind {
    Bytes,
    Float,
    Int64,
    /// A `Feature` with no list set.
    Unset,
}

impl fmt::Display for FeatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FeatureKind::Bytes => "bytes_list",
            FeatureKind::Float => "float_list",
            FeatureKind::Int64 => "int64_list",
            FeatureKind::Unset => "no list",
        })
    }
}

/// Errors of the tf.Example layer. They name the feature key; the caller adds the file and the
/// record offset (this layer sees only bytes).
#[derive(Debug, thiserror::Error)]
pub enum ExampleError {
    #[error("not a tf.Example")]
    Decode(#[from] prost::DecodeError),
    #[error("feature {key:?} missing")]
    Missing { key: String },
    #[error("feature {key:?} is a {found}, expected a {expected}")]
    WrongKind {
        key: String,
        expected: FeatureKind,
        found: FeatureKind,
    },
    #[error("feature {key:?} ({kind}) holds {found} values, expected exactly 1")]
    NotScalar {
        key: String,
        kind: FeatureKind,
        found: usize,
    },
    #[error("feature {key:?} is not UTF-8 text")]
    NotUtf8 { key: String },
}

impl Feature {
    /// Which list this feature holds.
    pub fn kind(&self) -> FeatureKind {
        match &self.kind {
            Some(ValueKind::BytesList(_)) => FeatureKind::Bytes,
            Some(ValueKind::FloatList(_)) => FeatureKind::Float,
            Some(ValueKind::Int64List(_)) => FeatureKind::Int64,
            None => FeatureKind::Unset,
        }
    }

    /// Number of values in the list (0 when unset).
    pub fn len(&self) -> usize {
        match &self.kind {
            Some(ValueKind::BytesList(l)) => l.value.len(),
            Some(ValueKind::FloatList(l)) => l.value.len(),
            Some(ValueKind::Int64List(l)) => l.value.len(),
            None => 0,
        }
    }

    /// True when the feature holds no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn bytes_list(value: Vec<Vec<u8>>) -> Self {
        Feature {
            kind: Some(ValueKind::BytesList(BytesList { value })),
        }
    }
    fn float_list(value: Vec<f32>) -> Self {
        Feature {
            kind: Some(ValueKind::FloatList(FloatList { value })),
        }
    }
    fn int64_list(value: Vec<i64>) -> Self {
        Feature {
            kind: Some(ValueKind::Int64List(Int64List { value })),
        }
    }
}

/// Builds an [`Example`] feature by feature; a later call with the same key replaces the earlier.
#[derive(Debug, Default, Clone)]
pub struct ExampleBuilder {
    feature: BTreeMap<String, Feature>,
}

impl ExampleBuilder {
    fn put(mut self, key: impl Into<String>, feature: Feature) -> Self {
        self.feature.insert(key.into(), feature);
        self
    }
    /// One bytes value.
    pub fn bytes(self, key: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.put(key, Feature::bytes_list(vec![value.into()]))
    }
    /// A bytes list (may be empty).
    pub fn bytes_list(self, key: impl Into<String>, values: Vec<Vec<u8>>) -> Self {
        self.put(key, Feature::bytes_list(values))
    }
    /// One UTF-8 string, stored as bytes (TF has no string kind).
    pub fn string(self, key: impl Into<String>, value: &str) -> Self {
        self.bytes(key, value.as_bytes())
    }
    /// A list of strings, stored as a bytes list.
    pub fn strings<S: AsRef<str>>(self, key: impl Into<String>, values: &[S]) -> Self {
        let list = values
            .iter()
            .map(|s| s.as_ref().as_bytes().to_vec())
            .collect();
        self.put(key, Feature::bytes_list(list))
    }
    /// One int64 value.
    pub fn int64(self, key: impl Into<String>, value: i64) -> Self {
        self.put(key, Feature::int64_list(vec![value]))
    }
    /// An int64 list (may be empty).
    pub fn int64s(self, key: impl Into<String>, values: impl Into<Vec<i64>>) -> Self {
        self.put(key, Feature::int64_list(values.into()))
    }
    /// One float value.
    pub fn float(self, key: impl Into<String>, value: f32) -> Self {
        self.put(key, Feature::float_list(vec![value]))
    }
    /// A float list (may be empty).
    pub fn floats(self, key: impl Into<String>, values: impl Into<Vec<f32>>) -> Self {
        self.put(key, Feature::float_list(values.into()))
    }
    /// Any prepared feature.
    pub fn feature(self, key: impl Into<String>, feature: Feature) -> Self {
        self.put(key, feature)
    }
    /// The finished Example.
    pub fn build(self) -> Example {
        Example {
            features: Some(Features {
                feature: self.feature,
            }),
        }
    }
}

impl Example {
    /// Starts an empty Example.
    pub fn builder() -> ExampleBuilder {
        ExampleBuilder::default()
    }

    /// Parses serialized bytes (a record's data).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ExampleError> {
        Ok(Example::decode(bytes)?)
    }

    /// Serializes to bytes (a record's data); deterministic, see the module doc.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    /// All features, sorted by key (empty when `features` is unset).
    pub fn features(&self) -> impl Iterator<Item = (&str, &Feature)> {
        self.features
            .iter()
            .flat_map(|f| f.feature.iter())
            .map(|(k, v)| (k.as_str(), v))
    }

    /// The feature stored under `key`, if any.
    pub fn feature(&self, key: &str) -> Option<&Feature> {
        self.features.as_ref()?.feature.get(key)
    }

    /// True when a feature is stored under `key` (possibly empty).
    pub fn has(&self, key: &str) -> bool {
        self.feature(key).is_some()
    }

    fn require(&self, key: &str) -> Result<&Feature, ExampleError> {
        self.feature(key)
            .ok_or_else(|| ExampleError::Missing { key: key.into() })
    }

    /// The list under `key` if `pick` accepts its kind, else a typed error.
    fn list<'a, T>(
        &'a self,
        key: &str,
        expected: FeatureKind,
        pick: impl FnOnce(&'a ValueKind) -> Option<&'a [T]>,
    ) -> Result<&'a [T], ExampleError> {
        let feature = self.require(key)?;
        feature
            .kind
            .as_ref()
            .and_then(pick)
            .ok_or_else(|| ExampleError::WrongKind {
                key: key.into(),
                expected,
                found: feature.kind(),
            })
    }

    /// The whole bytes list under `key`.
    pub fn get_bytes_list(&self, key: &str) -> Result<&[Vec<u8>], ExampleError> {
        self.list(key, FeatureKind::Bytes, |kind| match kind {
            ValueKind::BytesList(l) => Some(&l.value[..]),
            _ => None,
        })
    }

    /// The whole float list under `key`.
    pub fn get_floats(&self, key: &str) -> Result<&[f32], ExampleError> {
        self.list(key, FeatureKind::Float, |kind| match kind {
            ValueKind::FloatList(l) => Some(&l.value[..]),
            _ => None,
        })
    }

    /// The whole int64 list under `key`.
    pub fn get_int64s(&self, key: &str) -> Result<&[i64], ExampleError> {
        self.list(key, FeatureKind::Int64, |kind| match kind {
            ValueKind::Int64List(l) => Some(&l.value[..]),
            _ => None,
        })
    }

    /// The single bytes value under `key` (a list of exactly one).
    pub fn get_bytes(&self, key: &str) -> Result<&[u8], ExampleError> {
        scalar(key, FeatureKind::Bytes, self.get_bytes_list(key)?).map(Vec::as_slice)
    }

    /// The single bytes value under `key`, as UTF-8 text.
    pub fn get_str(&self, key: &str) -> Result<&str, ExampleError> {
        std::str::from_utf8(self.get_bytes(key)?)
            .map_err(|_| ExampleError::NotUtf8 { key: key.into() })
    }

    /// The single int64 value under `key`.
    pub fn get_int64(&self, key: &str) -> Result<i64, ExampleError> {
        scalar(key, FeatureKind::Int64, self.get_int64s(key)?).copied()
    }

    /// The single float value under `key`.
    pub fn get_float(&self, key: &str) -> Result<f32, ExampleError> {
        scalar(key, FeatureKind::Float, self.get_floats(key)?).copied()
    }
}

fn scalar<'a, T>(key: &str, kind: FeatureKind, list: &'a [T]) -> Result<&'a T, ExampleError> {
    match list {
        [one] => Ok(one),
        _ => Err(ExampleError::NotScalar {
            key: key.into(),
            kind,
            found: list.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Lcg;

    /// An Example with every kind, sizes driven by the seed (including empty lists).
    fn sample(seed: u64) -> Example {
        let n = (seed % 4) as usize;
        let big = Lcg::new(seed).bytes((seed as usize * 100_003) % 3_000_000);
        Example::builder()
            .bytes("b/one", vec![1, 2, 3])
            .bytes("b/big", big)
            .bytes_list("b/empty", vec![])
            .bytes_list("b/many", (0..n).map(|i| vec![i as u8; i]).collect())
            .string("s/text", "héllo wörld")
            .strings("s/list", &["a", "", "ccc"][..n.min(3)])
            .int64("i/one", -(seed as i64) * 1_000_000_007)
            .int64s(
                "i/many",
                (0..n as i64).map(|i| i64::MIN + i).collect::<Vec<_>>(),
            )
            .int64s("i/empty", Vec::new())
            .float("f/one", seed as f32 * 0.25)
            .floats("f/many", (0..n).map(|i| i as f32 / 3.0).collect::<Vec<_>>())
            .floats("f/empty", Vec::new())
            .feature("unset", Feature::default())
            .build()
    }

    #[test]
    fn round_trip_every_kind_many_seeds() {
        for seed in 0..12 {
            let ex = sample(seed);
            let bytes = ex.to_bytes();
            let back = Example::from_bytes(&bytes).unwrap();
            assert_eq!(back, ex, "seed {seed}");
            // Deterministic encoding.
            assert_eq!(back.to_bytes(), bytes);
            assert_eq!(back.get_bytes("b/one").unwrap(), &[1, 2, 3]);
            assert_eq!(back.get_str("s/text").unwrap(), "héllo wörld");
            assert_eq!(
                back.get_int64("i/one").unwrap(),
                -(seed as i64) * 1_000_000_007
            );
            assert_eq!(back.get_float("f/one").unwrap(), seed as f32 * 0.25);
            assert!(back.get_bytes_list("b/empty").unwrap().is_empty());
            assert!(back.get_int64s("i/empty").unwrap().is_empty());
            assert!(back.get_floats("f/empty").unwrap().is_empty());
            let n = (seed % 4) as usize;
            assert_eq!(back.get_int64s("i/many").unwrap().len(), n);
            assert_eq!(back.get_floats("f/many").unwrap().len(), n);
            assert_eq!(back.get_bytes_list("b/many").unwrap().len(), n);
            assert_eq!(back.feature("unset").unwrap().kind(), FeatureKind::Unset);
        }
    }

    #[test]
    fn wrong_kind_names_key_and_kinds() {
        let ex = sample(1);
        let err = ex.get_int64("b/one").unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature \"b/one\" is a bytes_list, expected a int64_list"
        );
        let err = ex.get_floats("i/one").unwrap_err();
        assert!(matches!(
            err,
            ExampleError::WrongKind {
                expected: FeatureKind::Float,
                found: FeatureKind::Int64,
                ..
            }
        ));
        let err = ex.get_bytes("unset").unwrap_err();
        assert!(err.to_string().contains("no list"), "{err}");
    }

    #[test]
    fn missing_and_not_scalar_and_not_utf8() {
        let ex = Example::builder()
            .int64s("two", vec![1, 2])
            .bytes("bin", vec![0xff, 0xfe])
            .build();
        assert!(
            matches!(ex.get_int64("nope"), Err(ExampleError::Missing { key }) if key == "nope")
        );
        assert!(matches!(
            ex.get_int64("two"),
            Err(ExampleError::NotScalar { found: 2, .. })
        ));
        assert!(matches!(
            ex.get_str("bin"),
            Err(ExampleError::NotUtf8 { .. })
        ));
        assert!(!ex.has("nope") && ex.has("two"));
        let empty = Example::default();
        assert!(matches!(
            empty.get_bytes("x"),
            Err(ExampleError::Missing { .. })
        ));
        assert_eq!(empty.features().count(), 0);
    }

    #[test]
    fn garbage_is_a_decode_error() {
        let err = Example::from_bytes(&[0x0a, 0xff, 0xff, 0xff]).unwrap_err();
        assert!(matches!(err, ExampleError::Decode(_)), "{err}");
    }

    /// An unset Feature is still written as an (empty) value: TF rejects entries without one.
    #[test]
    fn unset_feature_entry_keeps_its_value_field() {
        let ex = Example::builder().feature("u", Feature::default()).build();
        // Example{1: Features{1: entry{1: "u", 2: <empty>}}}
        assert_eq!(
            ex.to_bytes(),
            vec![0x0a, 7, 0x0a, 5, 0x0a, 1, b'u', 0x12, 0]
        );
        assert_eq!(Example::from_bytes(&ex.to_bytes()).unwrap(), ex);
        // An entry without a value field still decodes (as an unset Feature).
        let no_value = [0x0a, 5, 0x0a, 3, 0x0a, 1, b'u'];
        assert_eq!(Example::from_bytes(&no_value).unwrap(), ex);
    }

    /// The wire layout TF expects: float and int64 lists packed (wire type 2 at tag 1).
    #[test]
    fn lists_are_packed() {
        let ints = Int64List {
            value: vec![1, 2, 3],
        };
        assert_eq!(ints.encode_to_vec(), vec![0x0a, 3, 1, 2, 3]);
        let floats = FloatList {
            value: vec![1.0, 2.0],
        };
        let bytes = floats.encode_to_vec();
        assert_eq!(&bytes[..2], &[0x0a, 8]);
    }
}
