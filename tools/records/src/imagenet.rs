//! ImageNet records: the tf.Example layout of TensorFlow's `build_imagenet_data.py`.
//!
//! `build-records` writes [`ImageRecord`]s, the trainer's input pipeline reads them back (through
//! [`decode_for_training`] on the hot path), and Python TensorFlow reads the same shards with the
//! usual feature spec. The `KEY_*` constants are that file format; changing one breaks every
//! existing shard.

use crate::example::{self, Example};

pub const KEY_HEIGHT: &str = "image/height";
pub const KEY_WIDTH: &str = "image/width";
pub const KEY_COLORSPACE: &str = "image/colorspace";
pub const KEY_CHANNELS: &str = "image/channels";
pub const KEY_LABEL: &str = "image/class/label";
pub const KEY_SYNSET: &str = "image/class/synset";
pub const KEY_TEXT: &str = "image/class/text";
pub const KEY_BBOX_XMIN: &str = "image/object/bbox/xmin";
pub const KEY_BBOX_XMAX: &str = "image/object/bbox/xmax";
pub const KEY_BBOX_YMIN: &str = "image/object/bbox/ymin";
pub const KEY_BBOX_YMAX: &str = "image/object/bbox/ymax";
pub const KEY_BBOX_LABEL: &str = "image/object/bbox/label";
pub const KEY_FORMAT: &str = "image/format";
pub const KEY_FILENAME: &str = "image/filename";
pub const KEY_ENCODED: &str = "image/encoded";

/// Value of `image/colorspace`: build-records re-encodes CMYK and grey images as RGB.
pub const COLORSPACE: &str = "RGB";
/// Value of `image/channels`.
pub const CHANNELS: i64 = 3;
/// Value of `image/format`: every stored image is a JPEG (PNGs are re-encoded).
pub const FORMAT: &str = "JPEG";

/// One bounding box, in fractions of the image size (0..=1), as in the ImageNet box files.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BBox {
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
}

/// One ImageNet image with its labels, as stored in a shard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ImageRecord {
    /// The original JPEG bytes (or the RGB re-encode of a PNG/CMYK file).
    pub encoded: Vec<u8>,
    /// Pixels, from the JPEG header.
    pub height: i64,
    /// Pixels, from the JPEG header.
    pub width: i64,
    /// 1-based position of `synset` in the sorted synset list; 0 is reserved for background.
    pub label: i64,
    /// WordNet id, e.g. "n01440764".
    pub synset: String,
    /// Human-readable class name; empty when unknown.
    pub text: String,
    /// Base name of the source file.
    pub filename: String,
    /// Boxes for this image; each is stored with `label` in `image/object/bbox/label`.
    pub bboxes: Vec<BBox>,
}

/// Errors of the ImageNet layer; the caller adds the file and the record offset.
#[derive(Debug, thiserror::Error)]
pub enum ImagenetError {
    #[error(transparent)]
    Example(#[from] example::ExampleError),
    #[error(
        "bounding-box lists disagree in length: xmin {xmin}, ymin {ymin}, xmax {xmax}, ymax {ymax}"
    )]
    BBoxLengths {
        xmin: usize,
        ymin: usize,
        xmax: usize,
        ymax: usize,
    },
    #[error("malformed protobuf in {what}")]
    Wire { what: &'static str },
}

impl ImageRecord {
    /// The tf.Example `build_imagenet_data.py` would write for this image.
    pub fn to_example(&self) -> Example {
        let n = self.bboxes.len();
        let coord = |f: fn(&BBox) -> f32| self.bboxes.iter().map(f).collect::<Vec<f32>>();
        Example::builder()
            .int64(KEY_HEIGHT, self.height)
            .int64(KEY_WIDTH, self.width)
            .string(KEY_COLORSPACE, COLORSPACE)
            .int64(KEY_CHANNELS, CHANNELS)
            .int64(KEY_LABEL, self.label)
            .string(KEY_SYNSET, &self.synset)
            .string(KEY_TEXT, &self.text)
            .floats(KEY_BBOX_XMIN, coord(|b| b.xmin))
            .floats(KEY_BBOX_XMAX, coord(|b| b.xmax))
            .floats(KEY_BBOX_YMIN, coord(|b| b.ymin))
            .floats(KEY_BBOX_YMAX, coord(|b| b.ymax))
            .int64s(KEY_BBOX_LABEL, vec![self.label; n])
            .string(KEY_FORMAT, FORMAT)
            .string(KEY_FILENAME, &self.filename)
            .bytes(KEY_ENCODED, self.encoded.clone())
            .build()
    }

    /// Serialized [`ImageRecord::to_example`], ready for `RecordWriter::write`.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_example().to_bytes()
    }

    /// Reads an ImageNet Example. `image/encoded`, `image/height`, `image/width` and
    /// `image/class/label` are required; synset, text, filename and boxes default to empty when
    /// absent (other converters omit them), but must have the right kind when present.
    pub fn from_example(ex: &Example) -> Result<Self, ImagenetError> {
        let opt_str = |key: &str| -> Result<String, ImagenetError> {
            Ok(if ex.has(key) {
                ex.get_str(key)?.to_owned()
            } else {
                String::new()
            })
        };
        let opt_floats = |key: &str| -> Result<&[f32], ImagenetError> {
            Ok(if ex.has(key) {
                ex.get_floats(key)?
            } else {
                &[]
            })
        };
        let (xmin, ymin) = (opt_floats(KEY_BBOX_XMIN)?, opt_floats(KEY_BBOX_YMIN)?);
        let (xmax, ymax) = (opt_floats(KEY_BBOX_XMAX)?, opt_floats(KEY_BBOX_YMAX)?);
        if !(xmin.len() == ymin.len() && xmin.len() == xmax.len() && xmin.len() == ymax.len()) {
            return Err(ImagenetError::BBoxLengths {
                xmin: xmin.len(),
                ymin: ymin.len(),
                xmax: xmax.len(),
                ymax: ymax.len(),
            });
        }
        let bboxes = (0..xmin.len())
            .map(|i| BBox {
                xmin: xmin[i],
                ymin: ymin[i],
                xmax: xmax[i],
                ymax: ymax[i],
            })
            .collect();
        Ok(ImageRecord {
            encoded: ex.get_bytes(KEY_ENCODED)?.to_vec(),
            height: ex.get_int64(KEY_HEIGHT)?,
            width: ex.get_int64(KEY_WIDTH)?,
            label: ex.get_int64(KEY_LABEL)?,
            synset: opt_str(KEY_SYNSET)?,
            text: opt_str(KEY_TEXT)?,
            filename: opt_str(KEY_FILENAME)?,
            bboxes,
        })
    }

    /// Parses a record's data into an ImageRecord.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ImagenetError> {
        Self::from_example(&Example::from_bytes(bytes)?)
    }
}

/// The training hot path: `(JPEG bytes, 1-based label)` straight from a record's data, borrowing
/// the JPEG from `bytes` instead of decoding the whole Example (no map, no copies of the other
/// features). Same answers as [`ImageRecord::from_bytes`] on every well-formed Example: when a
/// key repeats, the last entry wins, as in protobuf map merging.
pub fn decode_for_training(bytes: &[u8]) -> Result<(&[u8], i64), ImagenetError> {
    let mut encoded = None;
    let mut label = None;
    for field in wire::Fields::new(bytes) {
        let (tag, value) = field.map_err(|()| ImagenetError::Wire { what: "Example" })?;
        let wire::Value::Len(features) = value else {
            continue;
        };
        if tag != 1 {
            continue;
        }
        for field in wire::Fields::new(features) {
            let (tag, value) = field.map_err(|()| ImagenetError::Wire { what: "Features" })?;
            let (1, wire::Value::Len(entry)) = (tag, value) else {
                continue;
            };
            let (key, feature) = wire::map_entry(entry).map_err(|()| ImagenetError::Wire {
                what: "Features map entry",
            })?;
            if key == KEY_ENCODED.as_bytes() {
                encoded = Some(wire::feature_bytes(feature, KEY_ENCODED)?);
            } else if key == KEY_LABEL.as_bytes() {
                label = Some(wire::feature_int64(feature, KEY_LABEL)?);
            }
        }
    }
    let missing = |key: &str| example::ExampleError::Missing { key: key.into() };
    let encoded = encoded.ok_or_else(|| missing(KEY_ENCODED))?;
    let label = label.ok_or_else(|| missing(KEY_LABEL))?;
    Ok((encoded, label))
}

/// Just enough of the protobuf wire format to pull two features out of an Example without
/// decoding the rest. Field layout: Example{1: Features}, Features{1: entry{1: key, 2: Feature}},
/// Feature{1: BytesList, 2: FloatList, 3: Int64List}, each list {1: values}.
mod wire {
    use super::ImagenetError;
    use crate::example::{self, FeatureKind};

    pub enum Value<'a> {
        Varint(u64),
        Len(&'a [u8]),
        Fixed,
    }

    /// Iterates over `(tag, value)` of one message; `Err(())` on malformed bytes, then stops.
    pub struct Fields<'a> {
        rest: &'a [u8],
    }

    impl<'a> Fields<'a> {
        pub fn new(bytes: &'a [u8]) -> Self {
            Fields { rest: bytes }
        }

        fn field(&mut self) -> Result<(u32, Value<'a>), ()> {
            let key = varint(&mut self.rest)?;
            let tag = u32::try_from(key >> 3).map_err(|_| ())?;
            let value = match key & 7 {
                0 => Value::Varint(varint(&mut self.rest)?),
                1 => Value::Fixed.skip(&mut self.rest, 8)?,
                2 => {
                    let len = usize::try_from(varint(&mut self.rest)?).map_err(|_| ())?;
                    if len > self.rest.len() {
                        return Err(());
                    }
                    let (body, rest) = self.rest.split_at(len);
                    self.rest = rest;
                    Value::Len(body)
                }
                5 => Value::Fixed.skip(&mut self.rest, 4)?,
                _ => return Err(()),
            };
            Ok((tag, value))
        }
    }

    impl<'a> Value<'a> {
        fn skip(self, rest: &mut &'a [u8], n: usize) -> Result<Self, ()> {
            if rest.len() < n {
                return Err(());
            }
            *rest = &rest[n..];
            Ok(self)
        }
    }

    impl<'a> Iterator for Fields<'a> {
        type Item = Result<(u32, Value<'a>), ()>;
        fn next(&mut self) -> Option<Self::Item> {
            if self.rest.is_empty() {
                return None;
            }
            let item = self.field();
            if item.is_err() {
                self.rest = &[];
            }
            Some(item)
        }
    }

    fn varint(rest: &mut &[u8]) -> Result<u64, ()> {
        let mut value = 0u64;
        for (i, &b) in rest.iter().enumerate().take(10) {
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                *rest = &rest[i + 1..];
                return Ok(value);
            }
        }
        Err(())
    }

    /// A map entry's key bytes and value message.
    pub fn map_entry(entry: &[u8]) -> Result<(&[u8], &[u8]), ()> {
        let (mut key, mut value): (&[u8], &[u8]) = (&[], &[]);
        for field in Fields::new(entry) {
            match field? {
                (1, Value::Len(k)) => key = k,
                (2, Value::Len(v)) => value = v,
                _ => {}
            }
        }
        Ok((key, value))
    }

    /// The last list set in a Feature: its kind and body.
    fn feature_list(feature: &[u8]) -> Result<(FeatureKind, &[u8]), ImagenetError> {
        let mut found = (FeatureKind::Unset, &[][..]);
        for field in Fields::new(feature) {
            let field = field.map_err(|()| ImagenetError::Wire { what: "Feature" })?;
            found = match field {
                (1, Value::Len(body)) => (FeatureKind::Bytes, body),
                (2, Value::Len(body)) => (FeatureKind::Float, body),
                (3, Value::Len(body)) => (FeatureKind::Int64, body),
                _ => continue,
            };
        }
        Ok(found)
    }

    fn expect_kind(
        key: &str,
        expected: FeatureKind,
        found: FeatureKind,
    ) -> Result<(), ImagenetError> {
        if expected == found {
            return Ok(());
        }
        Err(example::ExampleError::WrongKind {
            key: key.into(),
            expected,
            found,
        }
        .into())
    }

    fn not_scalar(key: &str, kind: FeatureKind, found: usize) -> ImagenetError {
        example::ExampleError::NotScalar {
            key: key.into(),
            kind,
            found,
        }
        .into()
    }

    /// The single value of a BytesList feature.
    pub fn feature_bytes<'a>(feature: &'a [u8], key: &str) -> Result<&'a [u8], ImagenetError> {
        let (kind, list) = feature_list(feature)?;
        expect_kind(key, FeatureKind::Bytes, kind)?;
        let mut values = Vec::with_capacity(1);
        for field in Fields::new(list) {
            if let (1, Value::Len(v)) =
                field.map_err(|()| ImagenetError::Wire { what: "BytesList" })?
            {
                values.push(v);
            }
        }
        match values[..] {
            [one] => Ok(one),
            _ => Err(not_scalar(key, kind, values.len())),
        }
    }

    /// The single value of an Int64List feature, packed or not.
    pub fn feature_int64(feature: &[u8], key: &str) -> Result<i64, ImagenetError> {
        let (kind, list) = feature_list(feature)?;
        expect_kind(key, FeatureKind::Int64, kind)?;
        let malformed = || ImagenetError::Wire { what: "Int64List" };
        let mut values = Vec::with_capacity(1);
        for field in Fields::new(list) {
            match field.map_err(|()| malformed())? {
                (1, Value::Varint(v)) => values.push(v as i64),
                (1, Value::Len(mut packed)) => {
                    while !packed.is_empty() {
                        values.push(varint(&mut packed).map_err(|()| malformed())? as i64);
                    }
                }
                _ => {}
            }
        }
        match values[..] {
            [one] => Ok(one),
            _ => Err(not_scalar(key, kind, values.len())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{Feature, Int64List, ValueKind};
    use crate::testutil::Lcg;
    use prost::Message;

    fn sample(seed: u64) -> ImageRecord {
        let mut rng = Lcg::new(seed);
        let nbox = (seed % 4) as usize;
        ImageRecord {
            encoded: (0..(rng.next() % 200_000)).map(|i| i as u8).collect(),
            height: (rng.next() % 2000) as i64 + 1,
            width: (rng.next() % 2000) as i64 + 1,
            label: (rng.next() % 1000) as i64 + 1,
            synset: format!("n{:08}", rng.next() % 100_000_000),
            text: if seed & 1 == 0 {
                "tench, Tinca tinca".into()
            } else {
                String::new()
            },
            filename: format!("n0144_{seed}.JPEG"),
            bboxes: (0..nbox)
                .map(|i| BBox {
                    xmin: 0.1 * i as f32,
                    ymin: 0.05,
                    xmax: 0.5 + 0.1 * i as f32,
                    ymax: 0.9,
                })
                .collect(),
        }
    }

    #[test]
    fn round_trip_many_seeds() {
        for seed in 0..20 {
            let rec = sample(seed);
            let bytes = rec.to_bytes();
            assert_eq!(ImageRecord::from_bytes(&bytes).unwrap(), rec, "seed {seed}");
            let (encoded, label) = decode_for_training(&bytes).unwrap();
            assert_eq!(encoded, &rec.encoded[..]);
            assert_eq!(label, rec.label);
        }
    }

    #[test]
    fn writes_every_build_imagenet_data_key() {
        let ex = sample(3).to_example();
        let keys: Vec<&str> = ex.features().map(|(k, _)| k).collect();
        let mut want = vec![
            KEY_HEIGHT,
            KEY_WIDTH,
            KEY_COLORSPACE,
            KEY_CHANNELS,
            KEY_LABEL,
            KEY_SYNSET,
            KEY_TEXT,
            KEY_BBOX_XMIN,
            KEY_BBOX_XMAX,
            KEY_BBOX_YMIN,
            KEY_BBOX_YMAX,
            KEY_BBOX_LABEL,
            KEY_FORMAT,
            KEY_FILENAME,
            KEY_ENCODED,
        ];
        want.sort();
        assert_eq!(keys, want);
        assert_eq!(ex.get_str(KEY_COLORSPACE).unwrap(), "RGB");
        assert_eq!(ex.get_int64(KEY_CHANNELS).unwrap(), 3);
        assert_eq!(ex.get_str(KEY_FORMAT).unwrap(), "JPEG");
        assert_eq!(
            ex.get_int64s(KEY_BBOX_LABEL).unwrap(),
            &[sample(3).label; 3]
        );
    }

    #[test]
    fn minimal_example_reads_with_defaults() {
        let ex = Example::builder()
            .bytes(KEY_ENCODED, vec![0xff, 0xd8])
            .int64(KEY_HEIGHT, 10)
            .int64(KEY_WIDTH, 20)
            .int64(KEY_LABEL, 7)
            .build();
        let rec = ImageRecord::from_example(&ex).unwrap();
        assert_eq!((rec.height, rec.width, rec.label), (10, 20, 7));
        assert!(rec.synset.is_empty() && rec.bboxes.is_empty());
    }

    #[test]
    fn errors_name_the_key() {
        let mut ex = sample(1).to_example();
        let map = &mut ex.features.as_mut().unwrap().feature;
        map.remove(KEY_LABEL);
        let bytes = ex.to_bytes();
        let err = ImageRecord::from_bytes(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "feature \"image/class/label\" missing");
        let err = decode_for_training(&bytes).unwrap_err();
        assert_eq!(err.to_string(), "feature \"image/class/label\" missing");

        let ex = Example::builder()
            .string(KEY_LABEL, "seven")
            .bytes(KEY_ENCODED, vec![1])
            .build();
        let err = decode_for_training(&ex.to_bytes()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "feature \"image/class/label\" is a bytes_list, expected a int64_list"
        );
        let ex = Example::builder()
            .int64s(KEY_LABEL, vec![1, 2])
            .bytes(KEY_ENCODED, vec![1])
            .build();
        let err = decode_for_training(&ex.to_bytes()).unwrap_err();
        assert!(err.to_string().contains("holds 2 values"), "{err}");

        let mut ex = sample(2).to_example();
        let map = &mut ex.features.as_mut().unwrap().feature;
        map.insert(KEY_BBOX_YMAX.into(), Feature::default());
        let err = ImageRecord::from_example(&ex).unwrap_err();
        assert!(err.to_string().contains(KEY_BBOX_YMAX), "{err}");
    }

    #[test]
    fn fast_path_reads_unpacked_int64_and_last_duplicate() {
        // Unpacked Int64List: tag 1, wire type 0 (older writers may do this).
        let unpacked = [0x08, 42];
        assert_eq!(Int64List::decode(&unpacked[..]).unwrap().value, vec![42]);
        let feature = Feature {
            kind: Some(ValueKind::Int64List(Int64List { value: vec![42] })),
        };
        let mut feature_bytes = feature.encode_to_vec();
        // Replace the packed body (0a 01 2a) with the unpacked one (08 2a).
        assert_eq!(feature_bytes, vec![0x1a, 3, 0x0a, 1, 42]);
        feature_bytes = vec![0x1a, 2, 0x08, 42];
        let entry = |key: &str, value: &[u8]| {
            let mut e = vec![0x0a, key.len() as u8];
            e.extend_from_slice(key.as_bytes());
            e.extend_from_slice(&[0x12, value.len() as u8]);
            e.extend_from_slice(value);
            e
        };
        let enc_feature = [0x0a, 4, 0x0a, 2, 0xff, 0xd8];
        let mut features = Vec::new();
        for e in [
            entry(KEY_LABEL, &[0x1a, 3, 0x0a, 1, 5]),
            entry(KEY_ENCODED, &enc_feature),
            entry(KEY_LABEL, &feature_bytes),
        ] {
            features.push(0x0a);
            features.push(e.len() as u8);
            features.extend_from_slice(&e);
        }
        let mut example = vec![0x0a, features.len() as u8];
        example.extend_from_slice(&features);
        let (encoded, label) = decode_for_training(&example).unwrap();
        assert_eq!((encoded, label), (&[0xff, 0xd8][..], 42));
        let full = ImageRecord::from_example(&Example::from_bytes(&example).unwrap());
        assert!(full.is_err()); // no height: the full reader is stricter
        assert_eq!(
            Example::from_bytes(&example)
                .unwrap()
                .get_int64(KEY_LABEL)
                .unwrap(),
            42
        );
    }

    #[test]
    fn fast_path_never_panics_on_damage() {
        let mut rec = sample(5);
        rec.encoded.truncate(50);
        let bytes = rec.to_bytes();
        assert!(decode_for_training(&bytes).is_ok());
        for cut in 0..bytes.len() {
            // The Features field encloses everything, so any cut breaks it.
            assert!(decode_for_training(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut rng = Lcg::new(99);
        for _ in 0..20_000 {
            let mut damaged = bytes.clone();
            let i = (rng.next() as usize) % damaged.len();
            damaged[i] ^= rng.next() as u8 | 1;
            let _ = decode_for_training(&damaged);
        }
    }
}
