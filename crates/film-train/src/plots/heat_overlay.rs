//! A coarse heat map laid over the image it was computed from, with a colour bar: the
//! picture of Figure 4 of the FiLM paper.

use std::path::Path;

use clevr::image::RgbImage;
use plotters::prelude::*;

use super::{render_png_bytes, PlotError};

/// The longer side the image is scaled up to (by an integer factor) when smaller.
const MIN_IMAGE_SIDE: usize = 480;
/// Room for the question (up to three lines) and the subtitle (up to two).
const TITLE_HEIGHT: u32 = 118;
const COLOR_BAR_WIDTH: u32 = 150;
const MARGIN: u32 = 12;
/// Opacity of the hottest cell; colder cells fade in proportion to their value, so the
/// image stays visible where the model does not look.
const MAX_ALPHA: f64 = 0.75;

/// Non-negative values on a `width` x `height` grid, row-major, top row first. The grid
/// covers the whole image: the network sees the image resized to its input square, so
/// grid cell (row, col) comes from the same fraction of the original image.
#[derive(Clone, Debug)]
pub struct HeatGrid {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

fn scale(image: &RgbImage) -> usize {
    MIN_IMAGE_SIDE
        .div_ceil(image.width.max(image.height).max(1))
        .max(1)
}

/// The size of the PNG [`heat_overlay`] writes for `image`.
pub fn overlay_size(image: &RgbImage) -> (u32, u32) {
    let s = scale(image);
    (
        (image.width * s) as u32 + COLOR_BAR_WIDTH + 2 * MARGIN,
        (image.height * s) as u32 + TITLE_HEIGHT + 2 * MARGIN,
    )
}

/// The words around a heat map: `title` and `subtitle` head the picture, `value_label`
/// names the colour bar.
#[derive(Clone, Copy, Debug)]
pub struct Captions<'a> {
    pub title: &'a str,
    pub subtitle: &'a str,
    pub value_label: &'a str,
}

/// Writes `image` with `heat` over it to `path` ([`overlay_size`] pixels).
pub fn heat_overlay(
    path: &Path,
    image: &RgbImage,
    heat: &HeatGrid,
    captions: &Captions,
) -> Result<(), PlotError> {
    let bytes = heat_overlay_png(path, image, heat, captions)?;
    crate::run_dir::write_atomic(path, &bytes).map_err(|e| PlotError::Write {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })
}

/// The picture [`heat_overlay`] writes, as PNG bytes; `path` only names it in errors.
pub fn heat_overlay_png(
    path: &Path,
    image: &RgbImage,
    heat: &HeatGrid,
    &Captions {
        title,
        subtitle,
        value_label,
    }: &Captions,
) -> Result<Vec<u8>, PlotError> {
    if heat.width == 0 || heat.height == 0 || heat.values.len() != heat.width * heat.height {
        return Err(PlotError::Empty {
            plot: path.to_path_buf(),
            what: format!(
                "a {}x{} heat grid with {} values",
                heat.width,
                heat.height,
                heat.values.len()
            ),
        });
    }
    let s = scale(image);
    let (w, h) = (image.width * s, image.height * s);
    let max = heat.values.iter().cloned().fold(0.0f32, f32::max) as f64;
    render_png_bytes(path, overlay_size(image), |root| {
        let text_width = overlay_size(image).0 - 2 * MARGIN;
        let mut y = MARGIN as i32;
        for (text, sizes, max_lines) in [(title, [20.0, 17.0, 14.0], 3), (subtitle, [15.0, 13.0, 11.0], 2)] {
            let lines = fit(root, text, &sizes, max_lines, text_width);
            for line in &lines.1 {
                root.draw(&Text::new(
                    line.as_str(),
                    (MARGIN as i32, y),
                    ("sans-serif", lines.0),
                ))?;
                y += (lines.0 * 1.3) as i32;
            }
            y += 4;
        }
        let origin = (MARGIN as i32, (TITLE_HEIGHT + MARGIN) as i32);
        let element = BitMapElement::with_owned_buffer(origin, (w as u32, h as u32), upscale(image, s))
            .expect("the upscaled buffer has w * h * 3 bytes");
        root.draw(&element)?;
        for row in 0..heat.height {
            for col in 0..heat.width {
                let v = heat.values[row * heat.width + col] as f64;
                if v <= 0.0 || max <= 0.0 {
                    continue;
                }
                let x0 = origin.0 + (col * w / heat.width) as i32;
                let x1 = origin.0 + ((col + 1) * w / heat.width) as i32;
                let y0 = origin.1 + (row * h / heat.height) as i32;
                let y1 = origin.1 + ((row + 1) * h / heat.height) as i32;
                let color = ViridisRGB.get_color_normalized(v as f32, 0.0, max as f32);
                root.draw(&Rectangle::new(
                    [(x0, y0), (x1, y1)],
                    color.mix(MAX_ALPHA * v / max).filled(),
                ))?;
            }
        }
        let bar_x = origin.0 + w as i32 + MARGIN as i32;
        let bar = root.clone().shrink(
            (bar_x as u32, origin.1 as u32),
            (COLOR_BAR_WIDTH - MARGIN, h as u32),
        );
        draw_color_bar(&bar, max.max(f64::MIN_POSITIVE), value_label)
    })
}

/// The largest of `sizes` at which `text` wraps into at most `max_lines` lines of
/// `width` pixels (the smallest size, cut to `max_lines`, when none does).
fn fit<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    sizes: &[f64],
    max_lines: usize,
    width: u32,
) -> (f64, Vec<String>) {
    let mut last = (0.0, Vec::new());
    for &size in sizes {
        let lines = super::wrap(area, text, &("sans-serif", size).into_text_style(area), width);
        if lines.len() <= max_lines {
            return (size, lines);
        }
        last = (size, lines);
    }
    last.1.truncate(max_lines);
    last
}

fn upscale(image: &RgbImage, s: usize) -> Vec<u8> {
    let (w, h) = (image.width * s, image.height * s);
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let src = ((y / s) * image.width + x / s) * 3;
            out[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&image.pixels[src..src + 3]);
        }
    }
    out
}

fn draw_color_bar<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    max: f64,
    label: &str,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let mut chart = ChartBuilder::on(area)
        .margin_top(6)
        .margin_bottom(6)
        .y_label_area_size(0)
        .right_y_label_area_size(64)
        .build_cartesian_2d(0.0..1.0, 0.0..max)?
        .set_secondary_coord(0.0..1.0, 0.0..max);
    chart
        .configure_secondary_axes()
        .y_desc(label)
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    const STEPS: usize = 64;
    chart.draw_series((0..STEPS).map(|i| {
        let (lo, hi) = (max * i as f64 / STEPS as f64, max * (i + 1) as f64 / STEPS as f64);
        let color = ViridisRGB.get_color_normalized(lo as f32, 0.0, max as f32);
        Rectangle::new([(0.0, lo), (1.0, hi)], color.filled())
    }))?;
    Ok(())
}
