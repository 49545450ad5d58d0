//! Decodes, resizes and writes one PNG with the loader's resampler, for checking
//! it against Pillow (`scripts/compare_resize.py`):
//! `cargo run -p clevr --example resize_png -- IN.png OUT.png WIDTH HEIGHT bicubic|bilinear`

use clevr::image::{decode_png, resize, write_png, Filter};
use std::path::Path;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, width, height, filter] = args.as_slice() else {
        return Err("usage: resize_png IN.png OUT.png WIDTH HEIGHT bicubic|bilinear".into());
    };
    let filter = match filter.as_str() {
        "bicubic" => Filter::Bicubic,
        "bilinear" => Filter::Bilinear,
        other => return Err(format!("unknown filter {other:?}").into()),
    };
    let image = decode_png(Path::new(input))?;
    let resized = resize(&image, width.parse()?, height.parse()?, filter);
    write_png(Path::new(output), &resized)?;
    Ok(())
}
