//! Load on `film-train serve`: CLIENTS concurrent clients each ask QUESTIONS dataset
//! questions over HTTP, for ROUNDS rounds, against a server started in this process.
//! Every reply must be a 200 whose answers are exactly those the model gives when asked
//! directly; the latency of each request and the process's resident memory after each
//! round are reported. Exits with 1 on any wrong or failed reply, or when memory keeps
//! growing after the first round.
//!
//! cargo run --release -p film-train --example serve_load -- --run RUN [--data DIR]
//!     [--clients 50] [--questions 20] [--rounds 5] [--workers N]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::Parser;
use film_train::ask::Asker;
use film_train::serve::{App, Server};
use serde_json::{json, Value};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    run: PathBuf,
    #[arg(long)]
    data: Option<PathBuf>,
    #[arg(long, default_value_t = 50)]
    clients: usize,
    #[arg(long, default_value_t = 20)]
    questions: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long)]
    workers: Option<usize>,
    /// Distinct (image, question) pairs the clients draw from; each is checked against
    /// the model asked directly once, before the load.
    #[arg(long, default_value_t = 100)]
    pairs: usize,
}

/// Growth of resident memory from the end of the second round to the end of the last that
/// counts as "not flat": the first round grows the heap to its working size (the server
/// keeps freed memory, as `film-train` does), later rounds must reuse it.
const MAX_GROWTH_BYTES: u64 = 64 << 20;

fn resident_bytes() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kb * 1024)
}

struct Pair {
    body: String,
    /// The model's answers asked directly: (answer, probability) most likely first.
    want: Vec<(String, f32)>,
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn check(reply: &Value, want: &[(String, f32)]) -> Result<()> {
    let got = reply["answers"].as_array().context("no answers")?;
    if got.len() != want.len() {
        bail!("{} answers, expected {}", got.len(), want.len());
    }
    for (g, (answer, p)) in got.iter().zip(want) {
        let (ga, gp) = (g["answer"].as_str(), g["probability"].as_f64());
        if ga != Some(answer.as_str()) || gp.is_none_or(|gp| (gp - f64::from(*p)).abs() > 1e-6) {
            bail!("answered {g}, the model gives {answer} ({p})");
        }
    }
    Ok(())
}

fn main() -> Result<ExitCode> {
    film_train::runtime::tune_for_training();
    let args = Args::parse();
    let app = App::load(&args.run, args.data.as_deref(), args.workers)?;
    if app.gallery.is_empty() {
        bail!("no dataset images: give --data DIR");
    }
    let direct = Asker::load(&args.run, &Device::Cpu)?;
    // One question per image, spread over the images and their questions.
    let mut pairs = Vec::new();
    for (index, image) in app.gallery.iter().enumerate().take(args.pairs) {
        let picture = clevr::image::decode_png(&image.path)?;
        let (question, _) = &image.questions[index % image.questions.len()];
        let reply = direct.ask(&picture, question)?;
        pairs.push(Pair {
            body: json!({"question": question, "image": index}).to_string(),
            want: reply
                .answers
                .iter()
                .map(|c| (c.answer.clone(), c.probability))
                .collect(),
        });
    }
    drop(direct);
    let server = Server::start(app, "127.0.0.1:0".parse()?)?;
    let url = format!("{}/api/ask", server.url());
    println!(
        "{} clients x {} questions, {} rounds, {} distinct (image, question) pairs, server on {}",
        args.clients,
        args.questions,
        args.rounds,
        pairs.len(),
        server.url()
    );
    let mut all = Vec::new();
    let mut memory = Vec::new();
    let mut failures = 0usize;
    for round in 0..args.rounds {
        let start = Instant::now();
        let results: Vec<(Vec<Duration>, Vec<String>)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..args.clients)
                .map(|client| {
                    let (url, pairs) = (&url, &pairs);
                    s.spawn(move || {
                        let agent = ureq::AgentBuilder::new().build();
                        let mut times = Vec::new();
                        let mut errors = Vec::new();
                        for k in 0..args.questions {
                            let pair = &pairs[(client * args.questions + k + round) % pairs.len()];
                            let t = Instant::now();
                            let result = agent
                                .post(url)
                                .set("content-type", "application/json")
                                .send_string(&pair.body)
                                .map_err(anyhow::Error::from)
                                .and_then(|r| Ok(r.into_json::<Value>()?));
                            times.push(t.elapsed());
                            if let Err(e) = result.and_then(|reply| check(&reply, &pair.want)) {
                                errors.push(format!("client {client}, question {k}: {e:#}"));
                            }
                        }
                        (times, errors)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("client thread"))
                .collect()
        });
        let wall = start.elapsed();
        let mut times: Vec<Duration> = results.iter().flat_map(|r| r.0.iter().copied()).collect();
        for e in results.iter().flat_map(|r| &r.1).take(5) {
            eprintln!("error: {e}");
        }
        failures += results.iter().map(|r| r.1.len()).sum::<usize>();
        times.sort();
        let rss = resident_bytes()?;
        memory.push(rss);
        println!(
            "round {}: {} requests in {:.1} s ({:.1}/s), p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, resident {} MiB",
            round + 1,
            times.len(),
            wall.as_secs_f64(),
            times.len() as f64 / wall.as_secs_f64(),
            percentile(&times, 0.5).as_secs_f64() * 1e3,
            percentile(&times, 0.99).as_secs_f64() * 1e3,
            times.last().map_or(0.0, |t| t.as_secs_f64() * 1e3),
            rss >> 20
        );
        all.extend(times);
    }
    all.sort();
    println!(
        "all rounds: {} requests, {} failed, p50 {:.0} ms, p99 {:.0} ms",
        all.len(),
        failures,
        percentile(&all, 0.5).as_secs_f64() * 1e3,
        percentile(&all, 0.99).as_secs_f64() * 1e3
    );
    server.stop()?;
    let growth = match memory.as_slice() {
        [_, second, .., last] => last.saturating_sub(*second),
        _ => 0,
    };
    if growth > MAX_GROWTH_BYTES {
        eprintln!(
            "error: resident memory grew by {} MiB after the second round",
            growth >> 20
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(if failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
