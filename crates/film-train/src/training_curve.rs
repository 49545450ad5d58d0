//! `training-curve.png` in a run directory: training loss, training accuracy and
//! validation accuracy against the step, redrawn from `metrics.jsonl` at every evaluation.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use plotters::prelude::SeriesLabelPosition;

use crate::metrics_file::Record;
use crate::plots::{line_charts, LineChart, Series};

pub const FILE_NAME: &str = "training-curve.png";
pub const SIZE: (u32, u32) = (1000, 760);

/// The points of one evaluation record.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Point {
    step: f64,
    train_loss: Option<f64>,
    train_accuracy: Option<f64>,
    val_accuracy: Option<f64>,
}

/// Redraws `RUN/training-curve.png` from `RUN/metrics.jsonl`; returns its path.
pub fn draw(run: &Path) -> Result<PathBuf> {
    let out = run.join(FILE_NAME);
    draw_to(&run.join("metrics.jsonl"), &out)?;
    Ok(out)
}

/// Draws the curve of the metrics file `metrics` to `out`.
pub fn draw_to(metrics: &Path, out: &Path) -> Result<()> {
    let points = points(&crate::metrics_file::read(metrics)?, metrics)?;
    let series = |name: &str, color: usize, value: fn(&Point) -> Option<f64>| Series {
        name: name.into(),
        color,
        points: points.iter().filter_map(|p| Some((p.step, value(p)?))).collect(),
    };
    let charts = [
        LineChart {
            title: "Training loss (mean over the steps since the previous evaluation)".into(),
            x_label: "step".into(),
            y_label: "cross-entropy".into(),
            y_range: None,
            legend: SeriesLabelPosition::UpperRight,
            series: vec![series("training loss", 1, |p| p.train_loss)],
        },
        LineChart {
            title: "Accuracy".into(),
            x_label: "step".into(),
            y_label: "accuracy".into(),
            y_range: Some((0.0, 1.0)),
            // Accuracy rises: the lower right is free by the end of a run.
            legend: SeriesLabelPosition::LowerRight,
            series: vec![
                series("training (batches since previous evaluation)", 1, |p| {
                    p.train_accuracy
                }),
                series("validation", 0, |p| p.val_accuracy),
            ],
        },
    ];
    line_charts(out, SIZE, "Training curve", &charts)?;
    Ok(())
}

/// One point per record of `metrics.jsonl` (read from `path`): `step`, `train_loss`,
/// `train_accuracy` and `overall` (the validation accuracy); a field may be absent or null.
fn points(records: &[Record], path: &Path) -> Result<Vec<Point>> {
    records
        .iter()
        .map(|(line, record)| {
            let step = record["step"]
                .as_f64()
                .with_context(|| format!("{}:{line}: no numeric \"step\"", path.display()))?;
            Ok(Point {
                step,
                train_loss: record["train_loss"].as_f64(),
                train_accuracy: record["train_accuracy"].as_f64(),
                val_accuracy: record["overall"].as_f64(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::testing::png_size;

    fn parse(text: &str) -> Result<Vec<Point>> {
        let path = Path::new("metrics.jsonl");
        points(&crate::metrics_file::parse(text, path)?, path)
    }

    #[test]
    fn parses_records_with_missing_fields() {
        let text = "{\"step\":10,\"overall\":0.5,\"train_loss\":2.0,\"train_accuracy\":0.25}\n\n\
                    {\"step\":20,\"overall\":null}\n";
        let points = parse(text).unwrap();
        assert_eq!(points.len(), 2);
        assert_eq!(points[0].train_loss, Some(2.0));
        assert_eq!(points[1].val_accuracy, None);
        let err = parse("{\"step\":10}\n{\"overall\":0.5}").unwrap_err().to_string();
        assert_eq!(err, "metrics.jsonl:2: no numeric \"step\"");
    }

    #[test]
    fn a_line_torn_by_a_crash_does_not_stop_the_redraw() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":10,\"overall\":0.5}\n{\"step\":20,\"overall\":0.6}\n{\"step\":30,\"ove",
        )
        .unwrap();
        let out = draw(dir.path()).unwrap();
        assert_eq!(png_size(&out), SIZE);
        std::fs::write(
            dir.path().join("metrics.jsonl"),
            "{\"step\":10,\"overall\":0.5}\n{\"step\":20,\"ove\n{\"step\":30,\"overall\":0.6}\n",
        )
        .unwrap();
        let err = format!("{:#}", draw(dir.path()).unwrap_err());
        assert!(err.contains("metrics.jsonl:2: not JSON"), "{err}");
    }

    #[test]
    fn draws_a_png_of_the_stated_size() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (1..=5)
            .map(|i| {
                format!(
                    "{{\"step\":{},\"overall\":{},\"train_loss\":{},\"train_accuracy\":{}}}",
                    100 * i,
                    0.1 * i as f64,
                    3.0 / i as f64,
                    0.15 * i as f64
                )
            })
            .collect();
        std::fs::write(dir.path().join("metrics.jsonl"), lines.join("\n")).unwrap();
        let out = draw(dir.path()).unwrap();
        assert_eq!(png_size(&out), SIZE);
    }
}
