//! Line charts stacked vertically: the training curve (loss above, accuracies below) and
//! accuracy against noise level.

use std::path::Path;

use plotters::prelude::*;

use super::{padded_range, render_png, series_color, tick_label, PlotError};

/// One named line; `color` indexes [`super::SERIES_COLORS`].
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub color: usize,
    pub points: Vec<(f64, f64)>,
}

/// One chart: its axes and lines. `y_range` fixes the y axis (e.g. 0..1 for accuracies);
/// otherwise it fits the data. `legend` is the corner the lines are expected to leave
/// free (a falling loss: upper right; accuracy falling with noise: lower left).
#[derive(Clone, Debug)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub y_range: Option<(f64, f64)>,
    pub legend: SeriesLabelPosition,
    pub series: Vec<Series>,
}

/// Draws `charts` one above the other under `title` into a `size` PNG at `path`.
pub fn line_charts(
    path: &Path,
    size: (u32, u32),
    title: &str,
    charts: &[LineChart],
) -> Result<(), PlotError> {
    if charts
        .iter()
        .all(|c| c.series.iter().all(|s| s.points.is_empty()))
    {
        return Err(PlotError::Empty {
            plot: path.to_path_buf(),
            what: "no points".into(),
        });
    }
    render_png(path, size, |root| {
        let body = root.titled(title, ("sans-serif", 26))?;
        for (area, chart) in body.split_evenly((charts.len(), 1)).iter().zip(charts) {
            draw_chart(area, chart)?;
        }
        Ok(())
    })
}

fn draw_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    chart: &LineChart,
) -> Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    let points = chart.series.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi, y_lo, y_hi) = points.fold(
        (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY),
        |(a, b, c, d), &(x, y)| (a.min(x), b.max(x), c.min(y), d.max(y)),
    );
    let (x_lo, x_hi) = if x_hi > x_lo {
        (x_lo, x_hi)
    } else {
        padded_range(x_lo, x_hi)
    };
    let (y_lo, y_hi) = chart.y_range.unwrap_or_else(|| padded_range(y_lo, y_hi));
    let mut plot = ChartBuilder::on(area)
        .caption(&chart.title, ("sans-serif", 19))
        .margin(10)
        .x_label_area_size(42)
        .y_label_area_size(64)
        .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?;
    plot.configure_mesh()
        .x_desc(&chart.x_label)
        .y_desc(&chart.y_label)
        .x_labels(8)
        .y_labels(6)
        .x_label_formatter(&tick_label)
        .y_label_formatter(&tick_label)
        .draw()?;
    for series in chart.series.iter().filter(|s| !s.points.is_empty()) {
        let color = series_color(series.color);
        plot.draw_series(LineSeries::new(
            series.points.iter().copied(),
            color.stroke_width(2),
        ))?
        .label(&series.name)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], color.stroke_width(2)));
        plot.draw_series(series.points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
    }
    plot.configure_series_labels()
        .position(chart.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .label_font(("sans-serif", 14))
        .draw()?;
    Ok(())
}
