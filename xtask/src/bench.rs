//! `cargo xtask bench`: run the criterion benchmarks and summarise them: the FiLM op against
//! the memory-bandwidth bound and the naive composition, the convolutions against candle's,
//! the training step in samples/s; with `--torch PYTHON`, the PyTorch reference harness's
//! figures for the same convolution and step, measured in the same run.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Criterion settings for `--quick`: the fewest samples criterion accepts, short windows.
const QUICK_ARGS: &[&str] = &[
    "--warm-up-time",
    "0.3",
    "--measurement-time",
    "1",
    "--sample-size",
    "10",
];

/// The benchmark suites `bench` runs, as (package, bench target).
const SUITES: &[(&str, &str)] = &[
    ("film-layer", "film"),
    ("film-conv", "conv"),
    ("film-train", "step"),
];

/// The conv benchmark's operation count: 2 · N·H·W · C_out · C_in · 3 · 3.
const CONV_FLOPS: f64 = 2.0 * (64 * 14 * 14 * 128 * 128 * 9) as f64;

/// One row of the table and of `bench.json`.
#[derive(Debug, Serialize)]
struct Row {
    /// The criterion id, `{op}/{pass}/{impl}/{dtype}/{layout}/{shape}`.
    name: String,
    op: String,
    shape: Vec<usize>,
    layout: String,
    dtype: String,
    /// "fwd" or "fwd+bwd".
    pass: String,
    /// "naive", "fused" or "copy" (FiLM); "ours", "candle" or "torch-reference".
    #[serde(rename = "impl")]
    implementation: String,
    /// Median time per iteration.
    ns: f64,
    /// Bytes that must move (each input read once, each output written once) per second,
    /// for the FiLM benchmarks.
    gbps: Option<f64>,
    /// Floating-point operations per second, for the convolutions.
    gflops: Option<f64>,
    /// Training samples per second, for the training step.
    samples_per_s: Option<f64>,
    /// `gbps` over the copy of the same bytes.
    copy_fraction: Option<f64>,
    /// Naive time over this row's time, for fused rows.
    speedup_vs_naive: Option<f64>,
    /// candle's time over this row's time, for "ours" rows.
    speedup_vs_candle: Option<f64>,
    /// This row's time over the PyTorch reference's, for "ours" rows (below 1: faster).
    time_vs_torch: Option<f64>,
}

impl Row {
    fn new(name: String, parts: [&str; 5], shape: Vec<usize>, ns: f64) -> Row {
        let [op, pass, implementation, dtype, layout] = parts;
        Row {
            name,
            op: op.into(),
            shape,
            layout: layout.into(),
            dtype: dtype.into(),
            pass: pass.into(),
            implementation: implementation.into(),
            ns,
            gbps: None,
            gflops: None,
            samples_per_s: None,
            copy_fraction: None,
            speedup_vs_naive: None,
            speedup_vs_candle: None,
            time_vs_torch: None,
        }
    }

    /// Sets the rate column that fits the benchmark: bytes, operations or samples.
    fn set_rate(&mut self, amount: f64, unit: Unit) {
        match unit {
            Unit::Bytes => self.gbps = Some(amount / self.ns),
            Unit::Operations => self.gflops = Some(amount / self.ns),
            Unit::Samples => self.samples_per_s = Some(amount / (self.ns * 1e-9)),
        }
    }
}

#[derive(Clone, Copy)]
enum Unit {
    Bytes,
    Operations,
    Samples,
}

/// What criterion writes in `new/benchmark.json`; only the fields we read.
#[derive(Deserialize)]
struct BenchmarkMeta {
    full_id: String,
    /// `{"Bytes": n}` (FiLM) or `{"Elements": n}` (operations, or samples for a step).
    throughput: Option<serde_json::Value>,
}

/// What criterion writes in `new/estimates.json`; only the median.
#[derive(Deserialize)]
struct Estimates {
    median: Estimate,
}

#[derive(Deserialize)]
struct Estimate {
    point_estimate: f64,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut quick = false;
    let mut filter = None;
    let mut torch = None;
    let mut torch_script = None;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--quick" => quick = true,
            "--torch" => {
                torch = Some(
                    args.next()
                        .context("--torch needs a Python with PyTorch")?
                        .clone(),
                )
            }
            "--torch-script" => {
                torch_script = Some(PathBuf::from(
                    args.next()
                        .context("--torch-script needs the path of torch_film.py")?,
                ))
            }
            flag if flag.starts_with('-') => bail!("unknown flag {flag:?} for `cargo xtask bench`"),
            pattern => filter = Some(pattern.to_string()),
        }
    }
    let root = super::workspace_root();
    // The PyTorch harness is not part of the repository, so its place must be given.
    let torch_script = match (&torch, torch_script) {
        (None, _) => None,
        (Some(_), None) => {
            bail!("--torch needs --torch-script PATH: the PyTorch reference harness torch_film.py")
        }
        (Some(_), Some(path)) if !path.is_file() => {
            bail!("--torch-script {}: no such file", path.display())
        }
        (Some(_), Some(path)) => Some(path),
    };
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let started = SystemTime::now();
    for (package, bench) in SUITES {
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root)
            .args(["bench", "-p", package, "--bench", bench, "--"]);
        if quick {
            cmd.args(QUICK_ARGS);
        }
        if let Some(filter) = &filter {
            cmd.arg(filter);
        }
        let status = cmd
            .status()
            .with_context(|| format!("starting cargo bench for {package}"))?;
        if !status.success() {
            bail!("cargo bench -p {package} --bench {bench} failed ({status})");
        }
    }
    let mut rows = collect(&target.join("criterion"), started)?;
    if let (Some(python), Some(torch_script)) = (&torch, &torch_script) {
        // Only the reference figures that have one of this run's rows beside them.
        let ran: Vec<_> = rows.iter().map(|r| (r.op.clone(), r.pass.clone())).collect();
        rows.extend(
            torch_reference_rows(python, torch_script)?
                .into_iter()
                .filter(|r| ran.contains(&(r.op.clone(), r.pass.clone()))),
        );
    }
    compare(&mut rows);
    if rows.is_empty() {
        bail!(
            "no benchmark results were written under {}",
            target.join("criterion").display()
        );
    }
    print_table(&rows);
    let out_dir = target.join("xtask");
    fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let json_path = out_dir.join("bench.json");
    fs::write(&json_path, serde_json::to_string_pretty(&rows)?)
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\nwrote {}", json_path.display());
    Ok(())
}

/// Reads every benchmark criterion wrote since `since` and derives the comparisons.
fn collect(criterion_dir: &Path, since: SystemTime) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let mut stack = vec![criterion_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else { continue };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some(row) = read_result(&path, since)? {
                        rows.push(row);
                    }
                } else {
                    stack.push(path);
                }
            }
        }
    }
    Ok(rows)
}

/// Fills the comparison columns: against copy and naive (FiLM), candle and PyTorch (ours).
fn compare(rows: &mut [Row]) {
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    let key = |r: &Row| {
        (
            r.op.clone(),
            r.pass.clone(),
            r.dtype.clone(),
            r.layout.clone(),
            r.shape.clone(),
        )
    };
    let copy_gbps: HashMap<_, f64> = rows
        .iter()
        .filter(|r| r.implementation == "copy")
        .filter_map(|r| Some(((r.dtype.clone(), r.layout.clone(), r.shape.clone()), r.gbps?)))
        .collect();
    let times = |implementation: &str| -> HashMap<_, f64> {
        rows.iter()
            .filter(|r| r.implementation == implementation)
            .map(|r| (key(r), r.ns))
            .collect()
    };
    let (naive, candle, torch) = (times("naive"), times("candle"), times("torch-reference"));
    for row in rows.iter_mut() {
        row.copy_fraction = row.gbps.and_then(|gbps| {
            copy_gbps
                .get(&(row.dtype.clone(), row.layout.clone(), row.shape.clone()))
                .map(|copy| gbps / copy)
        });
        match row.implementation.as_str() {
            "fused" => row.speedup_vs_naive = naive.get(&key(row)).map(|naive| naive / row.ns),
            "ours" => {
                row.speedup_vs_candle = candle.get(&key(row)).map(|candle| candle / row.ns);
                row.time_vs_torch = torch.get(&key(row)).map(|torch| row.ns / torch);
            }
            _ => {}
        }
    }
}

/// Runs the PyTorch reference harness (the conv micro-benchmarks and the `small` train
/// step, on the CPU with as many threads as criterion's runs had) and turns its JSON lines
/// into rows beside ours.
fn torch_reference_rows(python: &str, script: &Path) -> Result<Vec<Row>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .to_string();
    let runs: [&[&str]; 2] = [
        &["--micro-only", "--micro-ops", "conv"],
        &["--config", "small", "--steps", "20", "--modes", "train"],
    ];
    let mut rows = Vec::new();
    for extra in runs {
        let output = Command::new(python)
            .arg(script)
            .args(["--device", "cpu", "--threads", &threads])
            .args(extra)
            .output()
            .with_context(|| format!("starting {python} {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{python} {} {} failed ({}): {}",
                script.display(),
                extra.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(record) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            rows.extend(torch_row(&record));
        }
    }
    Ok(rows)
}

/// One torch_film.py record as a row, if it is one we compare against.
fn torch_row(record: &serde_json::Value) -> Option<Row> {
    let what = record.get("what")?.as_str()?;
    let ms = record.get("median_ms")?.as_f64()?;
    let (op, pass, shape, unit, amount) = match what {
        "conv2d_fwd" => (
            "conv3x3-128",
            "fwd",
            vec![64, 128, 14, 14],
            Unit::Operations,
            CONV_FLOPS,
        ),
        "conv2d_fwd_bwd" => (
            "conv3x3-128",
            "fwd+bwd",
            vec![64, 128, 14, 14],
            Unit::Operations,
            3.0 * CONV_FLOPS,
        ),
        "conv2d_bwd_input(conv_transpose2d)" => (
            "conv3x3-128",
            "bwd-input",
            vec![64, 128, 14, 14],
            Unit::Operations,
            CONV_FLOPS,
        ),
        "conv2d_bwd_weight" => (
            "conv3x3-128",
            "bwd-weight",
            vec![64, 128, 14, 14],
            Unit::Operations,
            CONV_FLOPS,
        ),
        "train_step" if record.get("config")?.as_str()? == "small" => {
            let batch = record.get("batch")?.as_u64()? as usize;
            (
                "train-step-mini",
                "fwd+bwd",
                vec![batch, 3, 64, 64],
                Unit::Samples,
                batch as f64,
            )
        }
        _ => return None,
    };
    let shape_id = shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("x");
    let name = format!("{op}/{pass}/torch-reference/f32/channels-first/{shape_id}");
    let mut row = Row::new(
        name,
        [op, pass, "torch-reference", "f32", "channels-first"],
        shape,
        ms * 1e6,
    );
    row.set_rate(amount, unit);
    Some(row)
}

/// One benchmark's result from its `new/` directory, if it was written since `since`.
fn read_result(dir: &Path, since: SystemTime) -> Result<Option<Row>> {
    let meta_path = dir.join("benchmark.json");
    let estimates_path = dir.join("estimates.json");
    let Ok(modified) = fs::metadata(&estimates_path).and_then(|m| m.modified()) else {
        return Ok(None);
    };
    if modified < since {
        return Ok(None);
    }
    let read = |path: &Path| fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
    let meta: BenchmarkMeta = serde_json::from_str(&read(&meta_path)?)
        .with_context(|| format!("parsing {}", meta_path.display()))?;
    let estimates: Estimates = serde_json::from_str(&read(&estimates_path)?)
        .with_context(|| format!("parsing {}", estimates_path.display()))?;
    let parts: Vec<&str> = meta.full_id.split('/').collect();
    let [op, pass, implementation, dtype, layout, shape] = parts[..] else {
        // Not one of ours: ids of other suites have other forms.
        return Ok(None);
    };
    let shape = shape
        .split('x')
        .map(|d| {
            d.parse::<usize>()
                .with_context(|| format!("bad shape in benchmark id {}", meta.full_id))
        })
        .collect::<Result<Vec<_>>>()?;
    let throughput = meta.throughput.as_ref();
    let amount = |kind: &str| throughput.and_then(|t| t.get(kind)).and_then(|n| n.as_u64());
    let (amount, unit) = match (amount("Bytes"), amount("Elements")) {
        (Some(bytes), _) => (bytes, Unit::Bytes),
        (None, Some(samples)) if op.starts_with("train-step") => (samples, Unit::Samples),
        (None, Some(operations)) => (operations, Unit::Operations),
        (None, None) => bail!("benchmark {} has no throughput", meta.full_id),
    };
    let mut row = Row::new(
        meta.full_id.clone(),
        [op, pass, implementation, dtype, layout],
        shape,
        estimates.median.point_estimate,
    );
    row.set_rate(amount as f64, unit);
    Ok(Some(row))
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<18} {:<16} {:<15} {:<10} {:<16} {:>11} {:>15} {:>6} {:>9} {:>10}",
        "op", "shape", "layout", "pass", "impl", "time", "rate", "%copy", "speed-up", "vs torch"
    );
    for r in rows {
        let shape = r
            .shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        let time = if r.ns >= 1e6 {
            format!("{:.2} ms", r.ns / 1e6)
        } else {
            format!("{:.1} µs", r.ns / 1e3)
        };
        let rate = match (r.gbps, r.gflops, r.samples_per_s) {
            (Some(gbps), _, _) => format!("{gbps:.2} GB/s"),
            (_, Some(gflops), _) => format!("{gflops:.1} GFLOP/s"),
            (_, _, Some(samples)) => format!("{samples:.0} samples/s"),
            _ => String::new(),
        };
        let copy = r
            .copy_fraction
            .map(|f| format!("{:.0}%", 100.0 * f))
            .unwrap_or_default();
        // Over the naive composition for fused FiLM rows, over candle for "ours" rows.
        let speedup = r
            .speedup_vs_naive
            .or(r.speedup_vs_candle)
            .map(|s| format!("{s:.1}x"))
            .unwrap_or_default();
        let torch = r
            .time_vs_torch
            .map(|t| format!("{t:.2}x time"))
            .unwrap_or_default();
        println!(
            "{:<18} {:<16} {:<15} {:<10} {:<16} {:>11} {:>15} {:>6} {:>9} {:>10}",
            r.op, shape, r.layout, r.pass, r.implementation, time, rate, copy, speedup, torch
        );
    }
}
