//! PNG plots drawn with plotters' bitmap backend. Text uses DejaVu Sans embedded in the
//! binary, so plots render the same on a machine without system fonts or fontconfig.

mod heat_overlay;
mod histograms;
mod lines;
mod scatter;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

pub use heat_overlay::{heat_overlay, heat_overlay_png, overlay_size, Captions, HeatGrid};
pub use histograms::{histogram_grid, HistogramColumn, HistogramPanel};
pub use lines::{line_charts, LineChart, Series};
pub use scatter::{scatter_panels, ScatterPanel};

/// DejaVu Sans (Bitstream Vera license, see fonts/LICENSE-DejaVu.txt).
static FONT: &[u8] = include_bytes!("../../fonts/DejaVuSans.ttf");

/// The family name plotters asks for by default; registering our font under it makes
/// every label, title and legend use it.
const FAMILY: &str = "sans-serif";

/// Colours of successive series and classes: a colour-blind-friendly qualitative palette
/// (Okabe–Ito) without its black and yellow, which vanish on white or on the images.
pub const SERIES_COLORS: [RGBColor; 6] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
];

/// The colour of series or class `i`.
pub fn series_color(i: usize) -> RGBColor {
    SERIES_COLORS[i % SERIES_COLORS.len()]
}

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("drawing {plot}: {message}")]
    Draw { plot: PathBuf, message: String },
    #[error("{plot}: nothing to draw ({what})")]
    Empty { plot: PathBuf, what: String },
    #[error("encoding {path} as PNG: {source}")]
    Encode {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error("writing {path}: {message}")]
    Write { path: PathBuf, message: String },
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        plotters::style::register_font(FAMILY, FontStyle::Normal, FONT)
            .unwrap_or_else(|_| panic!("the embedded DejaVu Sans font does not parse"));
    });
}

/// Draws a `size` (width, height) picture with `draw` and writes it to `path` as an RGB
/// PNG, atomically (temporary file and rename), so a reader never sees half a plot.
pub(crate) fn render_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<(), PlotError> {
    let bytes = render_png_bytes(path, size, draw)?;
    crate::run_dir::write_atomic(path, &bytes).map_err(|e| PlotError::Write {
        path: path.to_path_buf(),
        message: format!("{e:#}"),
    })
}

/// Draws a `size` picture with `draw` and returns it encoded as an RGB PNG; `path` names
/// the picture in errors.
pub(crate) fn render_png_bytes(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend, Shift>) -> DrawResult,
) -> Result<Vec<u8>, PlotError> {
    register_font();
    let draw_error = |e: &dyn std::fmt::Display| PlotError::Draw {
        plot: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut pixels = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let area = BitMapBackend::with_buffer(&mut pixels, size).into_drawing_area();
        area.fill(&WHITE).map_err(|e| draw_error(&e))?;
        draw(&area).map_err(|e| draw_error(&e))?;
        area.present().map_err(|e| draw_error(&e))?;
    }
    encode_png(path, size, &pixels)
}

fn encode_png(path: &Path, size: (u32, u32), rgb: &[u8]) -> Result<Vec<u8>, PlotError> {
    let encode_error = |source| PlotError::Encode {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, size.0, size.1);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(encode_error)?;
    writer.write_image_data(rgb).map_err(encode_error)?;
    writer.finish().map_err(encode_error)?;
    Ok(bytes)
}

/// (lo, hi) padded so that a constant series still gets a visible, non-empty axis.
pub(crate) fn padded_range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    let span = hi - lo;
    if span <= f64::EPSILON * lo.abs().max(1.0) {
        let pad = 0.5 * lo.abs().max(1.0);
        (lo - pad, hi + pad)
    } else {
        (lo - 0.05 * span, hi + 0.05 * span)
    }
}

/// A tick label: whole numbers without decimals (steps), others with two.
pub(crate) fn tick_label(v: &f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// `text` broken at spaces into lines no wider than `max_width` pixels in `font`.
pub(crate) fn wrap<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    text: &str,
    font: &TextStyle,
    max_width: u32,
) -> Vec<String> {
    let width = |s: &str| area.estimate_text_size(s, font).map_or(u32::MAX, |(w, _)| w);
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if width(&format!("{line} {word}")) <= max_width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    /// Decodes `path` and returns its (width, height), failing if it is not a PNG.
    pub fn png_size(path: &Path) -> (u32, u32) {
        let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let decoder = png::Decoder::new(std::io::BufReader::new(file));
        let mut reader = decoder
            .read_info()
            .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
        let mut buf = vec![0; reader.output_buffer_size().expect("PNG size fits memory")];
        let info = reader
            .next_frame(&mut buf)
            .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
        (info.width, info.height)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::png_size;
    use super::*;

    #[test]
    fn every_plot_is_a_png_of_its_stated_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);

        let panel = |title: &str| HistogramPanel {
            title: title.into(),
            lo: -1.0,
            hi: 2.0,
            counts: vec![1, 4, 9, 2, 0, 1],
        };
        let column = HistogramColumn {
            x_label: "γ value".into(),
            panels: vec![panel("all"), panel("block 1")],
        };
        histogram_grid(
            &path("h.png"),
            (700, 500),
            "histograms",
            &[column.clone(), column],
        )
        .unwrap();
        assert_eq!(png_size(&path("h.png")), (700, 500));

        let chart = LineChart {
            title: "lines".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            y_range: None,
            legend: SeriesLabelPosition::UpperRight,
            series: vec![Series {
                name: "a".into(),
                color: 0,
                points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0)],
            }],
        };
        line_charts(&path("l.png"), (640, 480), "lines", &[chart.clone(), chart]).unwrap();
        assert_eq!(png_size(&path("l.png")), (640, 480));

        let scatter = ScatterPanel {
            title: "scatter".into(),
            x_label: "PC1".into(),
            y_label: "PC2".into(),
            points: vec![(0.0, 0.0, 0), (1.0, 2.0, 1), (-1.0, 0.5, 1)],
        };
        scatter_panels(&path("s.png"), (800, 400), "scatter", &["one", "two"], &[scatter]).unwrap();
        assert_eq!(png_size(&path("s.png")), (800, 400));

        let image = clevr::image::RgbImage {
            width: 48,
            height: 32,
            pixels: vec![128; 48 * 32 * 3],
        };
        let heat = HeatGrid {
            width: 3,
            height: 2,
            values: vec![0.0, 0.1, 0.2, 0.3, 0.0, 0.4],
        };
        let captions = Captions {
            title: "question",
            subtitle: "answer",
            value_label: "fraction",
        };
        heat_overlay(&path("o.png"), &image, &heat, &captions).unwrap();
        assert_eq!(png_size(&path("o.png")), overlay_size(&image));
        // 48 px scaled by 10 to 480, plus the colour bar, margins and the title.
        assert_eq!(overlay_size(&image), (480 + 150 + 24, 320 + 118 + 24));
    }

    #[test]
    fn nothing_to_draw_is_an_error_not_an_empty_picture() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("empty.png");
        let err = histogram_grid(&out, (100, 100), "t", &[]).unwrap_err();
        assert!(matches!(err, PlotError::Empty { .. }), "{err}");
        let empty = LineChart {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            y_range: None,
            legend: SeriesLabelPosition::UpperRight,
            series: vec![],
        };
        assert!(line_charts(&out, (100, 100), "t", &[empty]).is_err());
        assert!(!out.exists());
    }
}
