//! What a JPEG's headers say without decoding a pixel: its size ([`jpeg_size`], to sort a
//! validation set by aspect ratio) and whether its marker structure is whole
//! ([`check_structure`], the check every decode path runs before the decoder).

use zune_jpeg::JpegDecoder;

use crate::decode_error::DecodeError;

/// The (width, height) of a JPEG from its headers alone, without decoding pixels: cheap enough
/// to sort a whole validation set by aspect ratio.
pub fn jpeg_size(jpeg: &[u8]) -> Result<(u32, u32), DecodeError> {
    let mut decoder = JpegDecoder::new(jpeg);
    decoder.decode_headers().map_err(|e| DecodeError::Jpeg {
        cause: e.to_string(),
    })?;
    let side = |v: usize| u32::try_from(v).unwrap_or(0);
    match decoder.dimensions() {
        Some((w, h)) if w > 0 && h > 0 => Ok((side(w), side(h))),
        other => {
            let (w, h) = other.unwrap_or((0, 0));
            Err(DecodeError::Empty {
                width: side(w),
                height: side(h),
            })
        }
    }
}

/// What [`check_structure`] learns on its way through a JPEG's markers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    pub width: u32,
    pub height: u32,
    /// Colour components in the frame (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK).
    pub components: u8,
    /// A progressive (SOF2/SOF6/SOF10/SOF14) frame.
    pub progressive: bool,
    /// Byte offset just past the EOI marker; bytes after it are ignored, as libjpeg does.
    pub end: usize,
}

/// Walks the marker structure of `jpeg` without decoding pixels, the check every decode path
/// runs before the decoder: SOI first; every marker segment whole; the frame header (SOFn)
/// present once, with non-zero sides and at most `max_pixels` pixels (checked as soon as the
/// SOF is read, so a forged 65535 x 65535 header costs nothing); each scan's entropy-coded data
/// followed by a marker; and an EOI marker after the last scan. Bytes after EOI are ignored.
///
/// Why: libjpeg (and so TurboJPEG) only warns on a file cut short ("Premature end of JPEG
/// file") and fills the missing blocks, and zune-jpeg (0.4, even in strict mode) decodes such
/// files too, while TensorFlow's `tf.io.decode_jpeg` refuses them. Requiring the EOI marker is
/// the rule that matches TensorFlow on truncated files; `tests/jpeg_verdicts.rs` compares the
/// two on generated files.
///
/// Known disagreements with TensorFlow 2.13 (the contract test lists them by name): a file
/// whose only damage is a missing final `0xD9` byte (so it ends in a lone `0xFF`) is refused
/// here. TensorFlow decodes some of these (with restart markers, or 4-component CMYK) and
/// refuses others (plain baseline): libjpeg's fake-EOI insertion at end of input succeeds or
/// not depending on how far its Huffman decoder had read ahead, which a structural check cannot
/// reproduce. Refusing them all never trains on a cut file.
///
/// Garbage bytes (without `0xFF`) inside the entropy-coded data pass this check: libjpeg-turbo
/// warns ("bad Huffman code") and decodes the damaged pixels, as TensorFlow does (the
/// zune-jpeg path refuses those that form an invalid Huffman code).
pub fn check_structure(jpeg: &[u8], max_pixels: u64) -> Result<Structure, DecodeError> {
    let err = |offset: usize, what: &'static str| DecodeError::Structure { offset, what };
    if jpeg.len() < 2 || jpeg[0] != 0xFF || jpeg[1] != 0xD8 {
        return Err(err(0, "no SOI marker: not a JPEG"));
    }
    let mut frame: Option<Structure> = None;
    let mut scans = 0usize;
    let mut i = 2;
    loop {
        // Find the next marker. libjpeg skips (with a warning) bytes that are not one.
        while i < jpeg.len() && jpeg[i] != 0xFF {
            i += 1;
        }
        // Fill bytes: any number of 0xFF before the marker code.
        while i < jpeg.len() && jpeg[i] == 0xFF {
            i += 1;
        }
        if i >= jpeg.len() {
            return Err(err(
                jpeg.len(),
                "file ends before the EOI marker (truncated)",
            ));
        }
        let marker = jpeg[i];
        let at = i - 1;
        i += 1;
        match marker {
            0xD9 => {
                let Some(mut frame) = frame else {
                    return Err(err(at, "EOI before any frame header"));
                };
                if scans == 0 {
                    return Err(err(at, "EOI before any scan"));
                }
                frame.end = i;
                return Ok(frame);
            }
            0xD8 => return Err(err(at, "a second SOI marker")),
            // Restart markers between segments and TEM carry no length.
            0xD0..=0xD7 | 0x01 => continue,
            0x02..=0xBF => return Err(err(at, "not a JPEG marker")),
            _ => {}
        }
        if i + 2 > jpeg.len() {
            return Err(err(jpeg.len(), "file ends inside a segment length"));
        }
        let length = usize::from(u16::from_be_bytes([jpeg[i], jpeg[i + 1]]));
        if length < 2 {
            return Err(err(i, "segment length below 2"));
        }
        let body = &jpeg[i + 2..];
        if length - 2 > body.len() {
            return Err(err(at, "file ends inside a marker segment (truncated)"));
        }
        let body = &body[..length - 2];
        i += length;
        match marker {
            // SOFn: every frame type except DHT (C4), JPG (C8) and DAC (CC).
            0xC0..=0xCF if !matches!(marker, 0xC4 | 0xC8 | 0xCC) => {
                if frame.is_some() {
                    return Err(err(at, "a second frame header (SOF)"));
                }
                if body.len() < 6 {
                    return Err(err(at, "frame header (SOF) too short"));
                }
                let height = u32::from(u16::from_be_bytes([body[1], body[2]]));
                let width = u32::from(u16::from_be_bytes([body[3], body[4]]));
                let components = body[5];
                if width == 0 || height == 0 {
                    return Err(DecodeError::Empty { width, height });
                }
                let pixels = u64::from(width) * u64::from(height);
                if pixels > max_pixels {
                    return Err(DecodeError::TooLarge {
                        width,
                        height,
                        pixels,
                        limit: max_pixels,
                    });
                }
                if components == 0 || body.len() < 6 + 3 * usize::from(components) {
                    return Err(err(at, "frame header (SOF) lists too few components"));
                }
                frame = Some(Structure {
                    width,
                    height,
                    components,
                    progressive: matches!(marker, 0xC2 | 0xC6 | 0xCA | 0xCE),
                    end: 0,
                });
            }
            0xDA => {
                if frame.is_none() {
                    return Err(err(at, "scan (SOS) before the frame header"));
                }
                scans += 1;
                // Entropy-coded data runs to the next marker that is neither a stuffed 0xFF00
                // nor a restart marker.
                loop {
                    match memchr::memchr(0xFF, &jpeg[i..]) {
                        None => {
                            return Err(err(
                                jpeg.len(),
                                "file ends inside the entropy-coded data (truncated, no EOI)",
                            ))
                        }
                        Some(p) => i += p,
                    }
                    match jpeg.get(i + 1) {
                        None => {
                            return Err(err(
                                jpeg.len(),
                                "file ends inside the entropy-coded data (truncated, no EOI)",
                            ))
                        }
                        Some(0x00) | Some(0xD0..=0xD7) => i += 2,
                        Some(0xFF) => i += 1,
                        Some(_) => break,
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole grey `w` x `h` baseline JPEG of noise, so the entropy-coded data is most of it.
    fn grey_jpeg(w: u32, h: u32) -> Vec<u8> {
        let pixels: Vec<u8> = (0..u64::from(w * h))
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let mut out = Vec::new();
        image::codecs::jpeg::JpegEncoder::new(&mut out)
            .encode(&pixels, w, h, image::ExtendedColorType::L8)
            .expect("encoding a test JPEG");
        out
    }

    fn structure_error(jpeg: &[u8]) -> (usize, &'static str) {
        match check_structure(jpeg, u64::MAX) {
            Err(DecodeError::Structure { offset, what }) => (offset, what),
            other => panic!("expected a structure error, got {other:?}"),
        }
    }

    #[test]
    fn a_whole_file_passes_and_says_its_frame() {
        let jpeg = grey_jpeg(96, 64);
        let s = check_structure(&jpeg, 96 * 64).unwrap();
        assert_eq!((s.width, s.height, s.components), (96, 64, 1));
        assert!(!s.progressive);
        assert_eq!(s.end, jpeg.len(), "the encoder ends on EOI");
        assert_eq!(jpeg_size(&jpeg).unwrap(), (96, 64));
        // Bytes after EOI are ignored, as libjpeg ignores them.
        let mut padded = jpeg.clone();
        padded.extend_from_slice(b"trailing bytes \xff\xd8");
        assert_eq!(check_structure(&padded, u64::MAX).unwrap().end, jpeg.len());
    }

    #[test]
    fn a_cut_file_is_refused_at_its_end() {
        let jpeg = grey_jpeg(96, 64);
        // Without its EOI marker, and cut inside the entropy-coded data.
        for cut in [jpeg.len() - 2, jpeg.len() * 3 / 4, jpeg.len() * 2 / 3] {
            let (offset, what) = structure_error(&jpeg[..cut]);
            assert_eq!(offset, cut, "{what}");
            assert!(
                what.contains("truncated") || what.contains("ends"),
                "{what}"
            );
        }
        assert_eq!(structure_error(b"GIF89a").0, 0);
        assert_eq!(structure_error(&[]).0, 0);
    }

    #[test]
    fn a_header_above_the_pixel_limit_is_refused_before_any_scan() {
        let jpeg = grey_jpeg(96, 64);
        match check_structure(&jpeg, 96 * 64 - 1) {
            Err(DecodeError::TooLarge { pixels, limit, .. }) => {
                assert_eq!((pixels, limit), (6144, 6143))
            }
            other => panic!("{other:?}"),
        }
        // Cut right after the frame header: the limit is still what refuses it.
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        let len = usize::from(u16::from_be_bytes([jpeg[sof + 2], jpeg[sof + 3]]));
        let header = &jpeg[..sof + 2 + len];
        assert!(matches!(
            check_structure(header, 100),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(structure_error(header).0, header.len());
    }
}
