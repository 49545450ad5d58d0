//! PNG encoding of rendered images (RGBA, like CLEVR's files).

use crate::render::Image;
use std::io::Write;

/// Encodes `image` as an RGBA PNG. Fast compression: the renderer is fast
/// enough that the default deflate level would dominate a dataset's make time.
pub fn encode_png(image: &Image, out: impl Write) -> Result<(), png::EncodingError> {
    let mut encoder = png::Encoder::new(out, image.width, image.height);
    encoder.set_color(png::ColorType::Rgba);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&image.rgba)?;
    writer.finish()
}
