//! Scatter plots side by side, points coloured by class with one legend: the layout of
//! Figure 6 of the FiLM paper (FiLM parameters of the first and last block).

use std::path::Path;

use plotters::prelude::*;

use super::{padded_range, render_png, series_color, tick_label, PlotError};

/// One scatter plot; each point is (x, y, class index into the class names).
#[derive(Clone, Debug)]
pub struct ScatterPanel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub points: Vec<(f64, f64, usize)>,
}

/// Draws `panels` left to right under `title` into a `size` PNG at `path`;
/// `classes` names the colours in the legend.
pub fn scatter_panels(
    path: &Path,
    size: (u32, u32),
    title: &str,
    classes: &[&str],
    panels: &[ScatterPanel],
) -> Result<(), PlotError> {
    if panels.iter().all(|p| p.points.is_empty()) {
        return Err(PlotError::Empty {
            plot: path.to_path_buf(),
            what: "no points".into(),
        });
    }
    render_png(path, size, |root| {
        let body = root.titled(title, ("sans-serif", 26))?;
        for (area, panel) in body.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_panel(area, panel, classes)?;
        }
        Ok(())
    })
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    panel: &ScatterPanel,
    classes: &[&str],
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let (x_lo, x_hi, y_lo, y_hi) = panel.points.iter().fold(
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        |(a, b, c, d), &(x, y, _)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (x_lo, x_hi) = padded_range(x_lo, x_hi);
    let (y_lo, y_hi) = padded_range(y_lo, y_hi);
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, ("sans-serif", 19))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(60)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .draw()?;
    for (class, name) in classes.iter().enumerate() {
        let color = series_color(class);
        let points: Vec<(f64, f64)> = panel
            .points
            .iter()
            .filter(|p| p.2 == class)
            .map(|p| (p.0, p.1))
            .collect();
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.mix(0.7).filled())),
            )?
            .label(*name)
            .legend(move |(x, y)| Circle::new((x + 6, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
