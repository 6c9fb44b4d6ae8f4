//! Input file -> bytes to store: sniff the content, read JPEG dimensions from the frame header,
//! and re-encode what TensorFlow's `decode_jpeg` cannot read (PNG content, CMYK JPEGs).
//!
//! A well-formed RGB or grey JPEG is stored as its original bytes and never decoded: only the
//! markers up to the first scan are read (the frame header gives height, width and the component
//! count), and the end-of-image marker is looked for after that scan, which catches the commonest
//! damage, a file cut short. Anything else is decided here per file: re-encode (counted) or skip (named, counted);
//! this module never fails the whole run, the caller does that for unreadable files.

use image::codecs::jpeg::JpegEncoder;

/// Quality of re-encoded JPEGs (PNG and CMYK inputs only; originals are stored untouched).
pub const REENCODE_QUALITY: u8 = 95;

/// What the frame header says about a JPEG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JpegHeader {
    pub width: u32,
    pub height: u32,
    /// 1 = grey, 3 = YCbCr/RGB, 4 = CMYK/YCCK.
    pub components: u8,
}

/// Why a JPEG's header could not be read. Offsets are byte positions in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("does not start with the JPEG start-of-image marker FF D8")]
    NotJpeg,
    /// `offset` is the first byte past the end that the header needed (a segment's length can
    /// point far past a short file): the message gives the file's own end first.
    #[error("ends at byte {len}, before its image data starts (byte {offset} is needed)")]
    Truncated { offset: usize, len: usize },
    #[error("byte {offset}: expected a marker (FF xx), found {found:#04x}")]
    NotAMarker { offset: usize, found: u8 },
    #[error("byte {offset}: segment length {len} is below 2")]
    BadLength { offset: usize, len: usize },
    #[error("byte {offset}: {what} before any frame header")]
    NoFrame { offset: usize, what: &'static str },
    #[error("byte {offset}: end of image before any image data")]
    NoScan { offset: usize },
    #[error(
        "frame header gives a zero size ({width}x{height}); DNL-sized JPEGs are not supported"
    )]
    ZeroSize { width: u32, height: u32 },
    /// Image data starts at `scan` but no end-of-image marker follows: the file was cut short
    /// (a partial download or copy). Decoders refuse it or fill the rest with grey.
    #[error(
        "cut short: its image data starts at byte {scan} and the file ends at byte {len} \
         without the end-of-image marker FF D9"
    )]
    NoEnd { scan: usize, len: usize },
}

/// Reads markers from the start of `bytes` to the first start-of-scan, returns the frame
/// header's size and component count, and checks that an end-of-image marker follows the scan.
/// Cost for a whole file: the header's few hundred bytes and its last two. Only a file with
/// bytes after its end marker, or a file cut short, is searched backwards for the marker.
pub fn read_header(bytes: &[u8]) -> Result<JpegHeader, HeaderError> {
    if bytes.len() < 2 || bytes[0] != 0xFF || bytes[1] != 0xD8 {
        return Err(HeaderError::NotJpeg);
    }
    let byte_at = |offset: usize| {
        bytes.get(offset).copied().ok_or(HeaderError::Truncated {
            offset,
            len: bytes.len(),
        })
    };
    let u16_at = |offset: usize| -> Result<usize, HeaderError> {
        Ok(usize::from(byte_at(offset)?) << 8 | usize::from(byte_at(offset + 1)?))
    };
    let mut frame = None;
    let mut pos = 2;
    loop {
        let found = byte_at(pos)?;
        if found != 0xFF {
            return Err(HeaderError::NotAMarker { offset: pos, found });
        }
        // Any number of FF fill bytes may precede the marker code.
        while byte_at(pos)? == 0xFF {
            pos += 1;
        }
        let marker = byte_at(pos)?;
        let marker_offset = pos - 1;
        pos += 1;
        match (marker, frame) {
            // Stand-alone markers: TEM, RSTn (no length field).
            (0x01 | 0xD0..=0xD7, _) => continue,
            (0xD9, None) => {
                return Err(HeaderError::NoFrame {
                    offset: marker_offset,
                    what: "end of image",
                })
            }
            (0xD9, Some(_)) => {
                return Err(HeaderError::NoScan {
                    offset: marker_offset,
                })
            }
            (0xDA, None) => {
                return Err(HeaderError::NoFrame {
                    offset: marker_offset,
                    what: "start of scan",
                })
            }
            _ => {}
        }
        let len = u16_at(pos)?;
        if len < 2 {
            return Err(HeaderError::BadLength { offset: pos, len });
        }
        if let (0xDA, Some(header)) = (marker, frame) {
            let scan = pos + len;
            // A file cut inside the scan header is short of its header, like any other.
            let rest = bytes.get(scan..).ok_or(HeaderError::Truncated {
                offset: scan,
                len: bytes.len(),
            })?;
            // Entropy-coded data never holds FF D9 (an FF there is followed by 00 or a restart
            // code). A progressive file cut between two scans could pass if a segment between
            // them held those two bytes; the trainer would then skip it when it fails to decode.
            return match rest {
                [.., 0xFF, 0xD9] => Ok(header),
                _ if rest.windows(2).rev().any(|w| w == [0xFF, 0xD9]) => Ok(header),
                _ => Err(HeaderError::NoEnd {
                    scan,
                    len: bytes.len(),
                }),
            };
        }
        // SOF0..SOF15 except DHT (C4), JPG (C8) and DAC (CC).
        if frame.is_none()
            && (0xC0..=0xCF).contains(&marker)
            && ![0xC4, 0xC8, 0xCC].contains(&marker)
        {
            let height = u16_at(pos + 3)? as u32;
            let width = u16_at(pos + 5)? as u32;
            let components = byte_at(pos + 7)?;
            if width == 0 || height == 0 {
                return Err(HeaderError::ZeroSize { width, height });
            }
            frame = Some(JpegHeader {
                width,
                height,
                components,
            });
        }
        pos += len;
    }
}

/// The bytes to store for one input file, or why it is skipped.
#[derive(Debug)]
pub enum Prepared {
    /// `encoded` is a JPEG TensorFlow decodes to `height x width x 3`.
    Ready {
        encoded: Vec<u8>,
        width: u32,
        height: u32,
        /// Set when the input was converted: what it was ("PNG", "CMYK JPEG", ...).
        reencoded_from: Option<String>,
    },
    /// Not stored; the reason names what was found.
    Skip(String),
}

/// Decide what to store for a file's content. Never panics on any input.
pub fn prepare(bytes: Vec<u8>) -> Prepared {
    if bytes.is_empty() {
        return Prepared::Skip("empty file".into());
    }
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return match read_header(&bytes) {
            Ok(h) if h.components == 1 || h.components == 3 => Prepared::Ready {
                encoded: bytes,
                width: h.width,
                height: h.height,
                reencoded_from: None,
            },
            Ok(h) => {
                let what = match h.components {
                    4 => "CMYK JPEG".to_string(),
                    n => format!("{n}-component JPEG"),
                };
                reencode(&bytes, what)
            }
            Err(err) => Prepared::Skip(format!("damaged JPEG: {err}")),
        };
    }
    match image::guess_format(&bytes) {
        Ok(image::ImageFormat::Png) => reencode(&bytes, "PNG".into()),
        Ok(other) => Prepared::Skip(format!(
            "unsupported image format {other:?} (only JPEG and PNG are read)"
        )),
        Err(_) => {
            let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
            Prepared::Skip(format!("not an image (starts with {})", head.join(" ")))
        }
    }
}

/// Decode with the `image` crate and encode as an RGB JPEG.
fn reencode(bytes: &[u8], what: String) -> Prepared {
    let rgb = match image::load_from_memory(bytes) {
        Ok(img) => img.to_rgb8(),
        Err(err) => return Prepared::Skip(format!("{what} that cannot be decoded: {err}")),
    };
    let mut encoded = Vec::new();
    if let Err(err) =
        JpegEncoder::new_with_quality(&mut encoded, REENCODE_QUALITY).encode_image(&rgb)
    {
        return Prepared::Skip(format!("{what} that cannot be re-encoded: {err}"));
    }
    Prepared::Ready {
        encoded,
        width: rgb.width(),
        height: rgb.height(),
        reencoded_from: Some(what),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, ImageFormat, RgbImage};

    fn jpeg_of(w: u32, h: u32) -> Vec<u8> {
        let img = RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let mut out = Vec::new();
        JpegEncoder::new_with_quality(&mut out, 80)
            .encode_image(&img)
            .unwrap();
        out
    }

    #[test]
    fn header_gives_the_encoded_size_for_many_sizes() {
        for w in [1, 7, 8, 9, 16, 100, 333] {
            for h in [1, 5, 64, 257] {
                let bytes = jpeg_of(w, h);
                assert_eq!(
                    read_header(&bytes),
                    Ok(JpegHeader {
                        width: w,
                        height: h,
                        components: 3
                    }),
                    "{w}x{h}"
                );
            }
        }
        let grey = GrayImage::from_fn(31, 17, |x, _| image::Luma([x as u8]));
        let mut out = Vec::new();
        JpegEncoder::new(&mut out).encode_image(&grey).unwrap();
        assert_eq!(read_header(&out).unwrap().components, 1);
    }

    #[test]
    fn header_skips_app_segments_and_fill_bytes() {
        let bytes = jpeg_of(40, 30);
        // SOI, an APP1 segment with 5 payload bytes, fill bytes, then the rest of the file.
        let mut padded = vec![
            0xFF, 0xD8, 0xFF, 0xE1, 0x00, 0x07, 1, 2, 3, 4, 5, 0xFF, 0xFF,
        ];
        padded.extend_from_slice(&bytes[2..]);
        assert_eq!(read_header(&padded).unwrap().width, 40);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = jpeg_of(50, 20);
        let sos = (0..bytes.len() - 1)
            .find(|&i| bytes[i] == 0xFF && bytes[i + 1] == 0xDA)
            .unwrap();
        // The scan header of a 3-component baseline JPEG: FF DA, then 12 bytes.
        let scan = sos + 14;
        for cut in 0..bytes.len() {
            let e = read_header(&bytes[..cut]).unwrap_err();
            if cut >= scan {
                // Past the scan header, the message says where the image data starts and ends.
                assert_eq!(e, HeaderError::NoEnd { scan, len: cut });
                assert!(e.to_string().starts_with("cut short: "), "{e}");
            } else if cut > sos {
                assert!(
                    matches!(e, HeaderError::Truncated { len, .. } if len == cut),
                    "{e}"
                );
            }
        }
        assert!(read_header(&bytes).is_ok());
        // A frame header and then the end of the image: no image data at all.
        let mut no_scan = bytes[..sos].to_vec();
        no_scan.extend_from_slice(&[0xFF, 0xD9]);
        assert_eq!(
            read_header(&no_scan),
            Err(HeaderError::NoScan { offset: sos })
        );
        // A scan header whose length is below 2, as any other segment's.
        let mut bad = bytes.clone();
        bad[sos + 2..sos + 4].copy_from_slice(&[0, 1]);
        assert_eq!(
            read_header(&bad),
            Err(HeaderError::BadLength {
                offset: sos + 2,
                len: 1
            })
        );
        // Bytes after the end marker (padding, a camera's trailer) are allowed, as decoders do.
        for tail in [&b"\0\0\0"[..], b"trailer \xFF\xD8 more"] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(tail);
            assert!(read_header(&longer).is_ok());
        }
        // A 21-byte file whose APP0 segment claims 1000 bytes: the message leads with the end.
        let mut short = b"\xFF\xD8\xFF\xE0\x03\xE8".to_vec();
        short.resize(21, 0);
        let e = read_header(&short).unwrap_err();
        assert_eq!(
            e,
            HeaderError::Truncated {
                offset: 1004,
                len: 21
            }
        );
        assert!(e.to_string().starts_with("ends at byte 21, "), "{e}");
    }

    #[test]
    fn garbage_after_soi_is_reported_with_its_offset() {
        assert_eq!(
            read_header(b"\xFF\xD8\x00"),
            Err(HeaderError::NotAMarker {
                offset: 2,
                found: 0
            })
        );
        assert!(matches!(
            read_header(b"\xFF\xD8\xFF\xDA\x00\x02"),
            Err(HeaderError::NoFrame { .. })
        ));
        assert_eq!(read_header(b"GIF89a"), Err(HeaderError::NotJpeg));
    }

    #[test]
    fn prepare_keeps_jpegs_and_reencodes_png() {
        let jpeg = jpeg_of(20, 10);
        match prepare(jpeg.clone()) {
            Prepared::Ready {
                encoded,
                width: 20,
                height: 10,
                reencoded_from: None,
            } => assert_eq!(encoded, jpeg),
            other => panic!("{other:?}"),
        }
        let img = RgbImage::from_fn(12, 34, |x, _| image::Rgb([x as u8 * 10, 0, 0]));
        let mut png = Vec::new();
        img.write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        match prepare(png) {
            Prepared::Ready {
                encoded,
                width: 12,
                height: 34,
                reencoded_from: Some(what),
            } => {
                assert_eq!(what, "PNG");
                assert_eq!(read_header(&encoded).unwrap().components, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn prepare_skips_non_images_with_a_reason() {
        let mut cut_jpeg = jpeg_of(30, 30);
        cut_jpeg.truncate(cut_jpeg.len() - 40);
        for (bytes, needle) in [
            (&b""[..], "empty"),
            (b"hello world", "not an image"),
            (b"\xFF\xD8\xFF\xE0\x00", "damaged JPEG"),
            (&cut_jpeg[..], "damaged JPEG: cut short"),
            (b"GIF89a\x01\x00\x01\x00", "unsupported image format"),
        ] {
            match prepare(bytes.to_vec()) {
                Prepared::Skip(reason) => assert!(reason.contains(needle), "{reason}"),
                other => panic!("{other:?}"),
            }
        }
    }
}
