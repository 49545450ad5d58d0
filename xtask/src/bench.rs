//! `cargo xtask bench`: run the criterion benchmarks and summarise them against the
//! memory-bandwidth bound and the naive composition.

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
const SUITES: &[(&str, &str)] = &[("film-layer", "film")];

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
    /// "naive", "fused" or "copy".
    #[serde(rename = "impl")]
    implementation: String,
    /// Median time per iteration.
    ns: f64,
    /// Bytes that must move (each input read once, each output written once) per second.
    gbps: f64,
    /// `gbps` over the copy of the same bytes.
    copy_fraction: Option<f64>,
    /// Naive time over this row's time, for fused rows.
    speedup_vs_naive: Option<f64>,
}

/// What criterion writes in `new/benchmark.json`; only the fields we read.
#[derive(Deserialize)]
struct BenchmarkMeta {
    full_id: String,
    /// `{"Bytes": n}` for our benchmarks.
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
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            flag if flag.starts_with('-') => bail!("unknown flag {flag:?} for `cargo xtask bench`"),
            pattern => filter = Some(pattern.to_string()),
        }
    }
    let root = super::workspace_root();
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
    let rows = collect(&target.join("criterion"), started)?;
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
        .map(|r| ((r.dtype.clone(), r.layout.clone(), r.shape.clone()), r.gbps))
        .collect();
    let naive_ns: HashMap<_, f64> = rows
        .iter()
        .filter(|r| r.implementation == "naive")
        .map(|r| (key(r), r.ns))
        .collect();
    for row in &mut rows {
        row.copy_fraction = copy_gbps
            .get(&(row.dtype.clone(), row.layout.clone(), row.shape.clone()))
            .map(|copy| row.gbps / copy);
        if row.implementation == "fused" {
            row.speedup_vs_naive = naive_ns.get(&key(row)).map(|naive| naive / row.ns);
        }
    }
    Ok(rows)
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
    let Some(bytes) = meta
        .throughput
        .as_ref()
        .and_then(|t| t.get("Bytes"))
        .and_then(|b| b.as_u64())
    else {
        bail!("benchmark {} has no byte throughput", meta.full_id);
    };
    let ns = estimates.median.point_estimate;
    Ok(Some(Row {
        name: meta.full_id.clone(),
        op: op.into(),
        shape,
        layout: layout.into(),
        dtype: dtype.into(),
        pass: pass.into(),
        implementation: implementation.into(),
        ns,
        gbps: bytes as f64 / ns,
        copy_fraction: None,
        speedup_vs_naive: None,
    }))
}

fn print_table(rows: &[Row]) {
    println!(
        "\n{:<20} {:<18} {:<15} {:<8} {:<6} {:>11} {:>8} {:>7} {:>9}",
        "op", "shape", "layout", "pass", "impl", "time", "GB/s", "%copy", "vs naive"
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
        let copy = r
            .copy_fraction
            .map(|f| format!("{:.0}%", 100.0 * f))
            .unwrap_or_default();
        let speedup = r.speedup_vs_naive.map(|s| format!("{s:.1}x")).unwrap_or_default();
        println!(
            "{:<20} {:<18} {:<15} {:<8} {:<6} {:>11} {:>8.2} {:>7} {:>9}",
            r.op, shape, r.layout, r.pass, r.implementation, time, r.gbps, copy, speedup
        );
    }
}
