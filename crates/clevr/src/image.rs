//! PNG decoding, resizing and normalisation of CLEVR images.
//!
//! Decoding gives 8-bit RGB whatever the PNG holds (RGBA, RGB, grey, palette,
//! 16-bit): CLEVR's alpha channel is opaque everywhere, so it is dropped rather
//! than composited. Resizing is separable and antialiased in the manner of
//! Pillow's `resize`: the filter's support widens by the downscale factor so that
//! every source pixel contributes, weights are normalised per output pixel, and
//! each of the two passes rounds and clamps to u8 (matching Pillow to within 1).
//! The default filter is bicubic (Keys, a = -0.5), the filter the FiLM reference
//! used through `scipy.misc.imresize`.

use serde::{Deserialize, Serialize};
use std::io::BufReader;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}: cannot open image: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("{}: not a readable PNG (truncated or corrupt?): {source}", path.display())]
    Decode {
        path: PathBuf,
        source: png::DecodingError,
    },
    #[error(
        "{}: the PNG header claims {width} x {height} pixels, more than the {limit} pixels \
         this loader decodes: a corrupt or hostile file?",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
        limit: u64,
    },
    #[error("{}: unsupported PNG layout {color:?} at {depth:?} after expansion", path.display())]
    Unsupported {
        path: PathBuf,
        color: png::ColorType,
        depth: png::BitDepth,
    },
}

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

impl RgbImage {
    /// Channel-major copy (CHW), the layout of the cache and of image tensors.
    pub fn to_chw(&self) -> Vec<u8> {
        let plane = self.width * self.height;
        let mut out = vec![0u8; 3 * plane];
        for (p, rgb) in self.pixels.chunks_exact(3).enumerate() {
            out[p] = rgb[0];
            out[plane + p] = rgb[1];
            out[2 * plane + p] = rgb[2];
        }
        out
    }
}

/// The most pixels [`decode_png`] decodes. The buffer is sized by the header, so without a
/// bound a file of a hundred bytes could ask for gigabytes; CLEVR's images are 480 x 320.
pub const MAX_PNG_PIXELS: u64 = 8192 * 8192;

/// Reads a PNG file as 8-bit RGB.
pub fn decode_png(path: &Path) -> Result<RgbImage, ImageError> {
    let file = std::fs::File::open(path).map_err(|source| ImageError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    decode_png_from(BufReader::new(file), path, MAX_PNG_PIXELS)
}

/// Decodes a PNG held in memory (an upload, say) as 8-bit RGB, refusing before any pixel
/// buffer is allocated when the header claims more than `max_pixels`; `name` is used in
/// errors.
pub fn decode_png_bytes(bytes: &[u8], name: &Path, max_pixels: u64) -> Result<RgbImage, ImageError> {
    decode_png_from(std::io::Cursor::new(bytes), name, max_pixels.min(MAX_PNG_PIXELS))
}

fn decode_png_from<R: std::io::BufRead + std::io::Seek>(
    reader: R,
    path: &Path,
    max_pixels: u64,
) -> Result<RgbImage, ImageError> {
    let decode_error = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    let mut decoder = png::Decoder::new(reader);
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let header = decoder.read_header_info().map_err(decode_error)?;
    let (width, height) = (header.width, header.height);
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
            limit: max_pixels,
        });
    }
    let mut reader = decoder.read_info().map_err(decode_error)?;
    let (color, depth) = reader.output_color_type();
    let size = reader
        .output_buffer_size()
        .ok_or_else(|| ImageError::Unsupported {
            path: path.to_path_buf(),
            color,
            depth,
        })?;
    let mut buf = vec![0u8; size];
    let info = reader.next_frame(&mut buf).map_err(decode_error)?;
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = match (info.color_type, info.bit_depth) {
        (png::ColorType::Rgb, png::BitDepth::Eight) => 3,
        (png::ColorType::Rgba, png::BitDepth::Eight) => 4,
        (png::ColorType::Grayscale, png::BitDepth::Eight) => 1,
        (png::ColorType::GrayscaleAlpha, png::BitDepth::Eight) => 2,
        (color, depth) => {
            return Err(ImageError::Unsupported {
                path: path.to_path_buf(),
                color,
                depth,
            })
        }
    };
    let mut pixels = Vec::with_capacity(width * height * 3);
    for row in buf.chunks_exact(info.line_size).take(height) {
        for px in row[..width * channels].chunks_exact(channels) {
            match channels {
                1 | 2 => pixels.extend_from_slice(&[px[0], px[0], px[0]]),
                _ => pixels.extend_from_slice(&px[..3]),
            }
        }
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

/// The resampling filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Filter {
    /// Keys cubic with a = -0.5 (Pillow's BICUBIC), support 2.
    Bicubic,
    /// Tent filter (Pillow's BILINEAR), support 1.
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            Filter::Bilinear => (1.0 - x).max(0.0),
        }
    }
}

/// For each output position, the first source index and the normalised weights.
fn coefficients(in_size: usize, out_size: usize, filter: Filter) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f64 / out_size as f64;
    // Downscaling widens the filter so no source pixel is skipped (antialiasing).
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    (0..out_size)
        .map(|x| {
            let center = (x as f64 + 0.5) * scale;
            let first = ((center - support + 0.5).floor().max(0.0)) as usize;
            let last = ((center + support + 0.5).floor() as usize).min(in_size);
            let mut weights: Vec<f64> = (first..last)
                .map(|i| filter.weight((i as f64 - center + 0.5) / filter_scale))
                .collect();
            let total: f64 = weights.iter().sum();
            if total != 0.0 {
                weights.iter_mut().for_each(|w| *w /= total);
            }
            (first, weights.into_iter().map(|w| w as f32).collect())
        })
        .collect()
}

fn to_u8(v: f32) -> u8 {
    v.round().clamp(0.0, 255.0) as u8
}

/// Resizes to `width` × `height` with `filter`.
pub fn resize(image: &RgbImage, width: usize, height: usize, filter: Filter) -> RgbImage {
    if image.width == width && image.height == height {
        return image.clone();
    }
    let horizontal = coefficients(image.width, width, filter);
    let vertical = coefficients(image.height, height, filter);
    // Horizontal pass, then vertical; like Pillow, the intermediate is rounded and
    // clamped to u8, which is where bicubic overshoot near hard edges is cut off.
    let mut rows = vec![0u8; image.height * width * 3];
    for y in 0..image.height {
        let src = &image.pixels[y * image.width * 3..(y + 1) * image.width * 3];
        let dst = &mut rows[y * width * 3..(y + 1) * width * 3];
        for (x, (first, weights)) in horizontal.iter().enumerate() {
            let mut acc = [0f32; 3];
            for (k, w) in weights.iter().enumerate() {
                let p = &src[(first + k) * 3..(first + k) * 3 + 3];
                acc[0] += w * p[0] as f32;
                acc[1] += w * p[1] as f32;
                acc[2] += w * p[2] as f32;
            }
            for (d, a) in dst[x * 3..x * 3 + 3].iter_mut().zip(acc) {
                *d = to_u8(a);
            }
        }
    }
    let row_len = width * 3;
    let mut pixels = vec![0u8; height * row_len];
    for (y, (first, weights)) in vertical.iter().enumerate() {
        let dst = &mut pixels[y * row_len..(y + 1) * row_len];
        for (i, out) in dst.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (k, w) in weights.iter().enumerate() {
                acc += w * rows[(first + k) * row_len + i] as f32;
            }
            *out = to_u8(acc);
        }
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

/// Per-channel normalisation applied when u8 pixels become model input:
/// `x = (v / 255 - mean) / std`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalization {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalization {
    /// The ImageNet statistics the FiLM reference normalises CLEVR images with.
    pub const IMAGENET: Normalization = Normalization {
        mean: [0.485, 0.456, 0.406],
        std: [0.229, 0.224, 0.225],
    };

    /// Only scales to [0, 1].
    pub const UNIT: Normalization = Normalization {
        mean: [0.0; 3],
        std: [1.0; 3],
    };

    /// Normalises a CHW u8 image (or a batch of them) into `out`; `plane` is H · W.
    pub fn apply_chw(&self, chw: &[u8], plane: usize, out: &mut [f32]) {
        for (c, (src, dst)) in chw.chunks(plane).zip(out.chunks_mut(plane)).enumerate() {
            // One multiply-add per value: v · 1/(255 σ) − μ/σ.
            let scale = 1.0 / (255.0 * self.std[c % 3]);
            let shift = self.mean[c % 3] / self.std[c % 3];
            for (o, &v) in dst.iter_mut().zip(src) {
                *o = v as f32 * scale - shift;
            }
        }
    }
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization::IMAGENET
    }
}

/// How images become model input: target size, filter, normalisation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    pub width: usize,
    pub height: usize,
    pub filter: Filter,
    pub normalization: Normalization,
}

impl Default for ImageConfig {
    /// The paper's raw-pixel input: 224 × 224, bicubic, ImageNet statistics.
    fn default() -> Self {
        ImageConfig {
            width: 224,
            height: 224,
            filter: Filter::Bicubic,
            normalization: Normalization::IMAGENET,
        }
    }
}

/// Decodes and resizes one file to the configured size, CHW u8.
pub fn load_resized_chw(path: &Path, config: &ImageConfig) -> Result<Vec<u8>, ImageError> {
    let image = decode_png(path)?;
    Ok(resize(&image, config.width, config.height, config.filter).to_chw())
}

/// Writes an 8-bit RGB PNG (used for fixtures and by tests).
pub fn write_png(path: &Path, image: &RgbImage) -> std::io::Result<()> {
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut encoder = png::Encoder::new(file, image.width as u32, image.height as u32);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(std::io::Error::other)?;
    writer
        .write_image_data(&image.pixels)
        .map_err(std::io::Error::other)?;
    writer.finish().map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::reference_file;

    fn gradient(width: usize, height: usize) -> RgbImage {
        let mut pixels = Vec::new();
        for y in 0..height {
            for x in 0..width {
                pixels.extend_from_slice(&[
                    (x * 255 / (width - 1)) as u8,
                    (y * 255 / (height - 1)) as u8,
                    77,
                ]);
            }
        }
        RgbImage {
            width,
            height,
            pixels,
        }
    }

    #[test]
    fn weights_sum_to_one_and_cover_the_source() {
        for filter in [Filter::Bicubic, Filter::Bilinear] {
            for (i, o) in [(480, 224), (320, 224), (10, 30), (7, 7)] {
                let c = coefficients(i, o, filter);
                assert_eq!(c.len(), o);
                for (first, w) in &c {
                    assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-5);
                    assert!(first + w.len() <= i);
                }
            }
        }
    }

    #[test]
    fn constant_images_stay_constant_and_gradients_stay_monotone() {
        let flat = RgbImage {
            width: 48,
            height: 32,
            pixels: [10u8, 200, 99].repeat(48 * 32),
        };
        let small = resize(&flat, 20, 20, Filter::Bicubic);
        assert!(small.pixels.chunks(3).all(|p| p == [10, 200, 99]));
        let g = resize(&gradient(96, 64), 32, 32, Filter::Bilinear);
        let red_row: Vec<u8> = (0..32).map(|x| g.pixels[(16 * 32 + x) * 3]).collect();
        assert!(red_row.windows(2).all(|w| w[0] <= w[1]), "{red_row:?}");
        assert!(red_row[0] < 10 && red_row[31] > 245, "{red_row:?}");
    }

    #[test]
    fn png_round_trip_and_chw_layout() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        let image = gradient(6, 4);
        write_png(&path, &image).unwrap();
        let back = decode_png(&path).unwrap();
        assert_eq!(back, image);
        let chw = back.to_chw();
        assert_eq!(chw[5], image.pixels[5 * 3]); // red of pixel 5
        assert_eq!(chw[24 + 5], image.pixels[5 * 3 + 1]); // green plane
    }

    #[test]
    fn truncated_and_non_png_files_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.png");
        write_png(&path, &gradient(40, 30)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let err = decode_png(&cut).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("cut.png"), "{err}");
        let text = dir.path().join("text.png");
        std::fs::write(&text, "hello").unwrap();
        assert!(matches!(decode_png(&text), Err(ImageError::Decode { .. })));
        assert!(matches!(
            decode_png(&dir.path().join("none.png")),
            Err(ImageError::Open { .. })
        ));
    }

    #[test]
    fn a_header_claiming_a_huge_image_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.png");
        write_png(&path, &gradient(2, 2)).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        // IHDR is the first chunk: length and type at 8..16, width and height at 16..24,
        // its CRC (over type and data) at 29..33.
        assert_eq!(&bytes[12..16], b"IHDR");
        bytes[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        bytes[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let crc = crc32fast::hash(&bytes[12..29]);
        bytes[29..33].copy_from_slice(&crc.to_be_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(bytes.len() < 100, "{} bytes on disk", bytes.len());
        let err = decode_png(&path).unwrap_err();
        assert!(matches!(err, ImageError::TooLarge { .. }), "{err}");
        assert!(
            err.to_string().contains(
                "huge.png: the PNG header claims 60000 x 60000 pixels, more than the 67108864 pixels"
            ),
            "{err}"
        );
    }

    #[test]
    fn bytes_decode_as_the_file_does_under_their_own_pixel_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.png");
        write_png(&path, &gradient(40, 30)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let name = Path::new("upload");
        assert_eq!(
            decode_png_bytes(&bytes, name, 40 * 30).unwrap(),
            decode_png(&path).unwrap()
        );
        let err = decode_png_bytes(&bytes, name, 40 * 30 - 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "upload: the PNG header claims 40 x 30 pixels, more than the 1199 pixels this loader \
             decodes: a corrupt or hostile file?"
        );
        let err = decode_png_bytes(b"GIF89a not a png", name, 1 << 20).unwrap_err();
        assert!(matches!(err, ImageError::Decode { .. }), "{err}");
    }

    #[test]
    fn real_rgba_images_decode_to_rgb() {
        let path = reference_file("images/CLEVR_val_000010.png");
        let image = decode_png(&path).unwrap();
        assert_eq!(
            (image.width, image.height, image.pixels.len()),
            (480, 320, 480 * 320 * 3)
        );
        let chw = load_resized_chw(&path, &ImageConfig::default()).unwrap();
        assert_eq!(chw.len(), 3 * 224 * 224);
    }

    #[test]
    fn normalization_uses_the_channel_of_each_value() {
        let chw = [255u8, 0, 255, 0, 255, 0];
        let mut out = [0f32; 6];
        Normalization::IMAGENET.apply_chw(&chw, 2, &mut out);
        assert!((out[0] - (1.0 - 0.485) / 0.229).abs() < 1e-5);
        assert!((out[2] - (1.0 - 0.456) / 0.224).abs() < 1e-5);
        assert!((out[5] - (0.0 - 0.406) / 0.225).abs() < 1e-5);
    }
}
