//! A hand-made four-component (Adobe CMYK) baseline JPEG, for `--odd-files`.
//!
//! The `image` crate's encoder writes only grey and RGB, but ImageNet's train set holds 22 CMYK
//! JPEGs that `build-records` must re-encode (TensorFlow's `decode_jpeg` rejects them). This
//! encoder keeps to the smallest valid subset of baseline JPEG: every 8x8 block carries only its
//! DC coefficient (the block's mean), so the picture is a mosaic of the input image, coded with
//! one quantisation table and two tiny Huffman tables. It exists for tests, not for quality.

use image::RgbImage;

/// Quantiser of the DC coefficient: with a DC-only block the decoded sample is DC / 8 + 128,
/// so quantising by 8 makes the coded value exactly `sample - 128`.
const DC_QUANT: u8 = 8;

/// Encode `img` as an Adobe CMYK JPEG (stored inverted, as Photoshop writes it: stored C = R,
/// M = G, Y = B, K = 255, which decoders that honour the Adobe marker show as the RGB image).
/// Width and height are rounded down to whole 8x8 blocks (at least one block).
pub fn encode_cmyk_mosaic(img: &RgbImage) -> Vec<u8> {
    let blocks_x = (img.width() / 8).max(1);
    let blocks_y = (img.height() / 8).max(1);
    let mut out = Vec::new();
    out.extend_from_slice(&[0xFF, 0xD8]); // SOI
                                          // APP14 "Adobe": version 100, flags 0, 0, transform 0 (no colour transform: plain CMYK).
    segment(
        &mut out,
        0xEE,
        &[b'A', b'd', b'o', b'b', b'e', 0, 100, 0, 0, 0, 0, 0],
    );
    let mut dqt = vec![0u8]; // 8-bit precision, table 0
    dqt.extend_from_slice(&[DC_QUANT; 64]);
    segment(&mut out, 0xDB, &dqt);
    let (w, h) = ((blocks_x * 8) as u16, (blocks_y * 8) as u16);
    let mut sof = vec![8, (h >> 8) as u8, h as u8, (w >> 8) as u8, w as u8, 4];
    for id in 1..=4u8 {
        sof.extend_from_slice(&[id, 0x11, 0]); // no subsampling, quant table 0
    }
    segment(&mut out, 0xC0, &sof);
    let dc = dc_table();
    let ac = ac_table();
    segment(
        &mut out,
        0xC4,
        &[&[0x00][..], &dc.bits, &dc.values].concat(),
    );
    segment(
        &mut out,
        0xC4,
        &[&[0x10][..], &ac.bits, &ac.values].concat(),
    );
    let mut sos = vec![4];
    for id in 1..=4u8 {
        sos.extend_from_slice(&[id, 0x00]); // DC table 0, AC table 0
    }
    sos.extend_from_slice(&[0, 63, 0]);
    segment(&mut out, 0xDA, &sos);

    let mut bits = BitWriter::default();
    let mut previous_dc = [0i32; 4];
    for by in 0..blocks_y {
        for bx in 0..blocks_x {
            let mean = block_mean(img, bx, by);
            let cmyk = [mean[0], mean[1], mean[2], 255];
            for (component, &sample) in cmyk.iter().enumerate() {
                let coded = i32::from(sample) - 128;
                let diff = coded - previous_dc[component];
                previous_dc[component] = coded;
                let category = 32 - diff.unsigned_abs().leading_zeros();
                let (code, len) = dc.code(category as u8);
                bits.put(code, len);
                if category > 0 {
                    // Negative differences are sent as diff - 1 in `category` low bits.
                    let raw = if diff < 0 { diff - 1 } else { diff };
                    bits.put(raw as u32 & ((1 << category) - 1), category as u8);
                }
                let (eob, eob_len) = ac.code(0x00);
                bits.put(eob, eob_len);
            }
        }
    }
    out.extend_from_slice(&bits.finish());
    out.extend_from_slice(&[0xFF, 0xD9]); // EOI
    out
}

fn segment(out: &mut Vec<u8>, marker: u8, payload: &[u8]) {
    let len = (payload.len() + 2) as u16;
    out.extend_from_slice(&[0xFF, marker, (len >> 8) as u8, len as u8]);
    out.extend_from_slice(payload);
}

fn block_mean(img: &RgbImage, bx: u32, by: u32) -> [u8; 3] {
    let mut sum = [0u32; 3];
    let mut n = 0;
    for y in by * 8..(by * 8 + 8).min(img.height()) {
        for x in bx * 8..(bx * 8 + 8).min(img.width()) {
            let p = img.get_pixel(x, y).0;
            for c in 0..3 {
                sum[c] += u32::from(p[c]);
            }
            n += 1;
        }
    }
    sum.map(|s| (s / n.max(1)) as u8)
}

/// A Huffman table as JPEG stores it (code counts per length 1..=16, symbols in code order).
struct Huffman {
    bits: [u8; 16],
    values: Vec<u8>,
}

impl Huffman {
    /// Canonical code of `symbol` as (code, length), assigned as the JPEG standard does.
    fn code(&self, symbol: u8) -> (u32, u8) {
        let mut code = 0u32;
        let mut k = 0;
        for (len_minus_1, &count) in self.bits.iter().enumerate() {
            for _ in 0..count {
                if self.values[k] == symbol {
                    return (code, len_minus_1 as u8 + 1);
                }
                code += 1;
                k += 1;
            }
            code <<= 1;
        }
        unreachable!("symbol {symbol:#04x} is in every table this module builds")
    }
}

/// The standard luminance DC table (ITU T.81 K.3): categories 0..=11.
fn dc_table() -> Huffman {
    Huffman {
        bits: [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0],
        values: (0..=11).collect(),
    }
}

/// Only end-of-block is ever sent; two 2-bit codes avoid a one-code table.
fn ac_table() -> Huffman {
    Huffman {
        bits: [0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        values: vec![0x00, 0x01],
    }
}

/// MSB-first bit packer with JPEG byte stuffing (0xFF is followed by 0x00).
#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    acc: u32,
    filled: u8,
}

impl BitWriter {
    fn put(&mut self, value: u32, len: u8) {
        for i in (0..len).rev() {
            self.acc = (self.acc << 1) | ((value >> i) & 1);
            self.filled += 1;
            if self.filled == 8 {
                self.push_byte();
            }
        }
    }

    fn push_byte(&mut self) {
        let byte = self.acc as u8;
        self.bytes.push(byte);
        if byte == 0xFF {
            self.bytes.push(0x00);
        }
        self.acc = 0;
        self.filled = 0;
    }

    /// Pad the last byte with 1 bits, as the standard asks.
    fn finish(mut self) -> Vec<u8> {
        while self.filled != 0 {
            self.put(1, 1);
        }
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::ImageDecoder;

    #[test]
    fn image_crate_reads_it_back_as_the_block_means() {
        for (w, h) in [(8, 8), (64, 48), (37, 90)] {
            let img =
                RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 4) as u8, (y * 2) as u8, 200]));
            let bytes = encode_cmyk_mosaic(&img);
            let decoder =
                image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&bytes)).unwrap();
            assert_eq!(decoder.dimensions(), (w / 8 * 8, h / 8 * 8));
            let decoded = image::load_from_memory(&bytes).unwrap().to_rgb8();
            let mean = block_mean(&img, 0, 0);
            let got = decoded.get_pixel(3, 3).0;
            for c in 0..3 {
                assert!(
                    got[c].abs_diff(mean[c]) <= 3,
                    "{w}x{h}: {got:?} vs {mean:?}"
                );
            }
        }
    }

    #[test]
    fn huffman_codes_are_canonical() {
        let dc = dc_table();
        assert_eq!(dc.code(0), (0b00, 2));
        assert_eq!(dc.code(1), (0b010, 3));
        assert_eq!(dc.code(5), (0b110, 3));
        assert_eq!(dc.code(6), (0b1110, 4));
        assert_eq!(dc.code(11), (0b1_1111_1110, 9));
    }
}
