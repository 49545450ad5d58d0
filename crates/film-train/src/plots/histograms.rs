//! Grids of histograms, one column per quantity and one row per group: the layout of
//! Figure 5 of the FiLM paper (γ left, β right; all blocks on top, then each block).

use std::path::Path;

use plotters::prelude::*;

use super::{render_png, series_color, tick_label, PlotError};

/// One histogram: `counts` in equal bins from `lo` to `hi`.
#[derive(Clone, Debug)]
pub struct HistogramPanel {
    pub title: String,
    pub lo: f64,
    pub hi: f64,
    pub counts: Vec<usize>,
}

/// A column of histograms of one quantity, sharing its x-axis label.
#[derive(Clone, Debug)]
pub struct HistogramColumn {
    pub x_label: String,
    pub panels: Vec<HistogramPanel>,
}

/// Draws `columns` side by side under `title` into a `size` PNG at `path`. Bars show the
/// fraction of values in each bin, so panels with different counts compare.
pub fn histogram_grid(
    path: &Path,
    size: (u32, u32),
    title: &str,
    columns: &[HistogramColumn],
) -> Result<(), PlotError> {
    let rows = columns.iter().map(|c| c.panels.len()).max().unwrap_or(0);
    if rows == 0 {
        return Err(PlotError::Empty {
            plot: path.to_path_buf(),
            what: "no histogram panels".into(),
        });
    }
    render_png(path, size, |root| {
        let body = root.titled(title, ("sans-serif", 26))?;
        let cells = body.split_evenly((rows, columns.len()));
        for (c, column) in columns.iter().enumerate() {
            for (r, panel) in column.panels.iter().enumerate() {
                draw_panel(&cells[r * columns.len() + c], panel, &column.x_label, c)?;
            }
        }
        Ok(())
    })
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &HistogramPanel,
    x_label: &str,
    color: usize,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let total: usize = panel.counts.iter().sum();
    let fractions: Vec<f64> = panel
        .counts
        .iter()
        .map(|&c| c as f64 / total.max(1) as f64)
        .collect();
    let top = fractions.iter().cloned().fold(0.0, f64::max).max(1e-3) * 1.1;
    let (lo, hi) = if panel.hi > panel.lo {
        (panel.lo, panel.hi)
    } else {
        super::padded_range(panel.lo, panel.hi)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 17))
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(56)
        .build_cartesian_2d(lo..hi, 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc(x_label)
        .y_desc("fraction of values")
        .x_labels(7)
        .y_labels(5)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()?;
    let width = (hi - lo) / fractions.len().max(1) as f64;
    let fill = series_color(color).filled();
    chart.draw_series(fractions.iter().enumerate().map(|(i, &f)| {
        let x0 = lo + i as f64 * width;
        Rectangle::new([(x0, 0.0), (x0 + width, f)], fill)
    }))?;
    // The zero line, where the paper's sharp peak of γ sits.
    if lo < 0.0 && hi > 0.0 {
        chart.draw_series(LineSeries::new([(0.0, 0.0), (0.0, top)], BLACK.mix(0.45)))?;
    }
    Ok(())
}
