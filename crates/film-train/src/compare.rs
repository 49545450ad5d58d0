//! `film-train compare`: several runs' validation accuracy on one picture, against the
//! questions each has seen and against its minutes of training, and as a table: the
//! ablation plots of docs/results.md.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use plotters::prelude::SeriesLabelPosition;

use crate::plots::{line_charts, LineChart, Series};
use crate::run_dir::RunDir;

pub const SIZE: (u32, u32) = (1000, 800);

/// One run to compare: its label on the plot and its directory.
#[derive(Clone, Debug, PartialEq)]
pub struct LabelledRun {
    pub label: String,
    pub dir: PathBuf,
}

impl std::str::FromStr for LabelledRun {
    type Err = String;
    /// `LABEL=DIR`, or `DIR` alone (labelled by its folder name).
    fn from_str(s: &str) -> Result<Self, String> {
        let (label, dir) = match s.split_once('=') {
            Some((label, dir)) if !label.is_empty() && !dir.is_empty() => (label.to_string(), dir),
            Some(_) => return Err(format!("{s:?}: expected LABEL=RUN_DIR or RUN_DIR")),
            None => (
                Path::new(s)
                    .file_name()
                    .map_or(s.to_string(), |n| n.to_string_lossy().into_owned()),
                s,
            ),
        };
        Ok(LabelledRun {
            label,
            dir: PathBuf::from(dir),
        })
    }
}

/// One evaluation of a run.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evaluation {
    pub step: u64,
    pub questions: u64,
    pub minutes: f64,
    pub accuracy: f64,
}

/// A run's evaluations, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    pub label: String,
    pub points: Vec<Evaluation>,
}

/// Which validation score of each evaluation a curve reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Score {
    /// `overall`: the model the run scored and kept as best (the weight average in a run
    /// with `--weight-average`).
    Recorded,
    /// `trained_weights.overall`: the weights as trained, which a run with
    /// `--weight-average` scores beside the average.
    TrainedWeights,
}

/// Reads the evaluations of `run` from its `metrics.jsonl`; questions seen are the step
/// times the run's batch size (from its `config.json`).
pub fn read_curve(run: &LabelledRun, score: Score) -> Result<Curve> {
    let dir = RunDir::open(&run.dir)?;
    let batch = dir.read_config()?.training.batch_size as u64;
    let path = dir.metrics_path();
    let points = evaluations(&crate::metrics_file::read(&path)?, batch, &path, score)?;
    if points.is_empty() {
        bail!("{}: no evaluation yet", path.display());
    }
    Ok(Curve {
        label: run.label.clone(),
        points,
    })
}

/// The evaluations of the metrics records read from `path`, for a run of `batch` questions
/// per step.
fn evaluations(
    records: &[crate::metrics_file::Record],
    batch: u64,
    path: &Path,
    score: Score,
) -> Result<Vec<Evaluation>> {
    let mut points = Vec::new();
    for (line, record) in records {
        let field = |name: &str| {
            record[name]
                .as_f64()
                .with_context(|| format!("{}:{line}: no numeric {name:?}", path.display()))
        };
        // A hand-edited or damaged step may be fractional, negative or huge: each would
        // need a guess, and a huge one would overflow the questions count.
        let step = record["step"].as_u64().with_context(|| {
            format!(
                "{}:{line}: \"step\" is not a whole number of steps",
                path.display()
            )
        })?;
        let questions = step.checked_mul(batch).with_context(|| {
            format!(
                "{}:{line}: \"step\" {step} times the batch of {batch} questions is more questions than can be counted",
                path.display()
            )
        })?;
        points.push(Evaluation {
            step,
            questions,
            minutes: field("train_seconds")? / 60.0,
            accuracy: match score {
                Score::Recorded => field("overall")?,
                Score::TrainedWeights => record["trained_weights"]["overall"].as_f64().with_context(|| {
                    format!(
                        "{}:{line}: no numeric \"trained_weights\".\"overall\" (only a run trained with --weight-average scores its trained weights apart)",
                        path.display()
                    )
                })?,
            },
        });
    }
    Ok(points)
}

/// Draws validation accuracy against questions seen (above) and minutes (below).
pub fn draw(curves: &[Curve], out: &Path) -> Result<()> {
    let series = |x: fn(&Evaluation) -> f64| -> Vec<Series> {
        curves
            .iter()
            .enumerate()
            .map(|(i, c)| Series {
                name: c.label.clone(),
                color: i,
                points: c.points.iter().map(|p| (x(p), p.accuracy)).collect(),
            })
            .collect()
    };
    let chart = |title: &str, x_label: &str, series| LineChart {
        title: title.into(),
        x_label: x_label.into(),
        y_label: "validation accuracy".into(),
        y_range: None,
        legend: SeriesLabelPosition::LowerRight,
        series,
    };
    let charts = [
        chart(
            "against questions seen",
            "questions seen (thousands)",
            series(|p| p.questions as f64 / 1000.0),
        ),
        chart("against minutes of training", "minutes", series(|p| p.minutes)),
    ];
    line_charts(out, SIZE, "Validation accuracy", &charts)?;
    Ok(())
}

/// A Markdown table: for each run, its accuracy at the evaluations nearest to each of
/// `at` questions seen, and its best.
pub fn table(curves: &[Curve], at: &[u64]) -> String {
    let mut out = String::from("| run |");
    for q in at {
        let _ = write!(out, " {}k questions |", q / 1000);
    }
    out.push_str(" best (questions, minutes) |\n|---|");
    out.push_str(&"---|".repeat(at.len() + 1));
    out.push('\n');
    for c in curves {
        let _ = write!(out, "| {} |", c.label);
        for &q in at {
            let reached = c.points.iter().any(|p| p.questions >= q);
            let nearest = c
                .points
                .iter()
                .min_by_key(|p| p.questions.abs_diff(q))
                .filter(|_| reached);
            match nearest {
                Some(p) => {
                    let _ = write!(out, " {:.1} |", 100.0 * p.accuracy);
                }
                None => out.push_str(" — |"),
            }
        }
        let best = c
            .points
            .iter()
            .max_by(|a, b| a.accuracy.total_cmp(&b.accuracy))
            .expect("a curve has points");
        let _ = writeln!(
            out,
            " {:.1} ({}k, {:.1}) |",
            100.0 * best.accuracy,
            best.questions / 1000,
            best.minutes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plots::testing::png_size;

    fn curve(label: &str, accuracies: &[f64]) -> Curve {
        Curve {
            label: label.into(),
            points: accuracies
                .iter()
                .enumerate()
                .map(|(i, &accuracy)| Evaluation {
                    step: 500 * (i as u64 + 1),
                    questions: 32_000 * (i as u64 + 1),
                    minutes: (i + 1) as f64,
                    accuracy,
                })
                .collect(),
        }
    }

    #[test]
    fn labels_parse_and_records_give_questions_and_minutes() {
        let run: LabelledRun = "with curriculum=runs/a".parse().unwrap();
        assert_eq!(run.label, "with curriculum");
        assert_eq!(run.dir, PathBuf::from("runs/a"));
        let bare: LabelledRun = "runs/b".parse().unwrap();
        assert_eq!(bare.label, "b");
        assert!("=runs/a".parse::<LabelledRun>().is_err());

        let text = "{\"step\":500,\"overall\":0.4,\"train_seconds\":90}\n\n{\"step\":1000,\"overall\":0.5,\"train_seconds\":180}\n";
        let parse = |text: &str, batch| {
            let path = Path::new("metrics.jsonl");
            evaluations(
                &crate::metrics_file::parse(text, path)?,
                batch,
                path,
                Score::Recorded,
            )
        };
        let points = parse(text, 64).unwrap();
        assert_eq!(
            points[1],
            Evaluation {
                step: 1000,
                questions: 64_000,
                minutes: 3.0,
                accuracy: 0.5
            }
        );
        let err = parse("{\"step\":1,\"overall\":0.5}", 64).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl:1: no numeric \"train_seconds\""),
            "{err}"
        );
        // Found by tests/fuzz_run_dir.rs: a huge step overflowed the questions count.
        let err = parse(
            "{\"step\":18446744073709551615,\"overall\":0.5,\"train_seconds\":1}",
            64,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("metrics.jsonl:1: \"step\" 18446744073709551615 times the batch of 64"),
            "{err}"
        );
        let err = parse("{\"step\":1e300,\"overall\":0.5,\"train_seconds\":1}", 64)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("metrics.jsonl:1: \"step\" is not a whole number of steps"),
            "{err}"
        );
        // A last line torn by a crash is skipped.
        let torn = format!("{text}{{\"step\":1500,\"ove");
        assert_eq!(parse(&torn, 64).unwrap().len(), 2);
    }

    #[test]
    fn the_trained_weights_curve_of_an_averaged_run() {
        let path = Path::new("metrics.jsonl");
        let trained = |text: &str| {
            evaluations(
                &crate::metrics_file::parse(text, path)?,
                64,
                path,
                Score::TrainedWeights,
            )
        };
        let averaged =
            "{\"step\":500,\"overall\":0.5,\"train_seconds\":60,\"trained_weights\":{\"overall\":0.45}}\n";
        assert_eq!(trained(averaged).unwrap()[0].accuracy, 0.45);
        let plain = "{\"step\":500,\"overall\":0.5,\"train_seconds\":60}\n";
        let err = trained(plain).unwrap_err().to_string();
        assert!(
            err.contains("metrics.jsonl:1: no numeric \"trained_weights\".\"overall\""),
            "{err}"
        );
    }

    #[test]
    fn table_reads_the_nearest_evaluation_and_the_best() {
        let curves = [curve("a", &[0.40, 0.45, 0.52]), curve("b", &[0.41])];
        let t = table(&curves, &[64_000, 96_000]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0],
            "| run | 64k questions | 96k questions | best (questions, minutes) |"
        );
        assert_eq!(lines[2], "| a | 45.0 | 52.0 | 52.0 (96k, 3.0) |");
        assert_eq!(lines[3], "| b | — | — | 41.0 (32k, 1.0) |", "b never reached 64k");
    }

    #[test]
    fn draws_both_charts() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("compare.png");
        draw(&[curve("a", &[0.4, 0.5]), curve("b", &[0.3, 0.6])], &out).unwrap();
        assert_eq!(png_size(&out), SIZE);
    }
}
