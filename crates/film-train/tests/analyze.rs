//! End to end on the tiny CLEVR-format fixture: train a `tiny` run, analyse it, ask it
//! with --explain, and check that every promised file is there and every picture is a
//! PNG of the stated size.

use std::path::{Path, PathBuf};

use candle_core::Device;
use clap::Parser;
use film_train::analyze::{self, report};
use film_train::presets;
use film_train::train::{train, TrainRequest};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini")
}

/// (width, height) of the PNG at `path`, and whether any pixel is not white.
fn decode(path: &Path) -> ((u32, u32), bool) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader
        .next_frame(&mut buf)
        .unwrap_or_else(|e| panic!("{} does not decode: {e}", path.display()));
    let drawn = buf[..info.buffer_size()].iter().any(|&b| b != 255);
    ((info.width, info.height), drawn)
}

fn assert_png(path: &Path, size: (u32, u32)) {
    let (got, drawn) = decode(path);
    assert_eq!(got, size, "{}", path.display());
    assert!(drawn, "{} is blank", path.display());
}

#[test]
fn analyze_and_explain_a_tiny_run() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let request = TrainRequest {
        data: fixture(),
        preset: presets::by_name("tiny").unwrap(),
        out: run.clone(),
        epochs: Some(8),
        minutes: None,
        seed: 3,
        val_limit: None,
        cache_dir: Some(dir.path().join("cache")),
        features_dir: None,
        quiet: true,
    };
    train(&request, &Device::Cpu).unwrap();
    // Redrawn at every evaluation.
    assert_png(&run.join("training-curve.png"), film_train::training_curve::SIZE);

    let out = dir.path().join("analysis");
    let cli = film_train::cli::Cli::try_parse_from([
        "film-train",
        "analyze",
        "--run",
        run.to_str().unwrap(),
        "--data",
        fixture().to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--noise",
        "0.5,2",
        "--examples",
        "2",
        "--cache-dir",
        dir.path().join("cache").to_str().unwrap(),
        "--quiet",
    ])
    .unwrap();
    film_train::cli::run(cli).unwrap();
    let report = std::fs::read_to_string(out.join(report::REPORT)).unwrap();

    let blocks = presets::by_name("tiny").unwrap().model.vision.num_blocks;
    let mut pictures = vec![
        (report::HISTOGRAMS.to_string(), analyze::histograms_size(blocks)),
        (report::NOISE.to_string(), analyze::NOISE_SIZE),
        (report::EMBEDDINGS.to_string(), analyze::EMBEDDING_SIZE),
        ("training-curve.png".to_string(), film_train::training_curve::SIZE),
    ];
    let image = clevr::image::decode_png(&fixture().join("images/val/CLEVR_val_000000.png")).unwrap();
    let looks: Vec<_> = std::fs::read_dir(out.join("looks"))
        .unwrap()
        .map(|e| format!("looks/{}", e.unwrap().file_name().to_str().unwrap()))
        .collect();
    assert_eq!(looks.len(), 2, "{looks:?}");
    pictures.extend(
        looks
            .into_iter()
            .map(|l| (l, film_train::plots::overlay_size(&image))),
    );
    for (file, size) in &pictures {
        assert_png(&out.join(file), *size);
        assert!(
            report.contains(&format!("({file})")),
            "report.md does not link {file}"
        );
    }
    for row in ["| all blocks | γ |", "| block 1 | β |", "| block 2 | γ |"] {
        assert!(report.contains(row), "report.md lacks the row {row}");
    }
    for ablation in [
        "γ replaced by its training mean",
        "β replaced by its training mean",
        "σ = 2 on β",
    ] {
        assert!(
            report.contains(ablation),
            "report.md lacks the ablation {ablation}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join(report::JSON)).unwrap()).unwrap();
    // None, two means, two noise levels on each of γ and β.
    assert_eq!(json["ablations"].as_array().unwrap().len(), 7);
    let n = json["questions"].as_u64().unwrap();
    assert_eq!(json["ablations"][0]["accuracy"]["n"].as_u64(), Some(n));
    // The unablated pass runs the network stage by stage; it must score exactly as `eval`.
    let (config, vocab, model) = film_train::train::load_run(&run, &Device::Cpu).unwrap();
    let source = film_train::data::ImageSource::for_model(
        &config.model,
        &fixture(),
        Some(&dir.path().join("cache")),
        None,
    );
    let split = film_train::data::load_split(&fixture(), "val", &vocab, &source).unwrap();
    let eval = film_train::evaluate::evaluate(&model, &split, 64, None, &Device::Cpu).unwrap();
    assert_eq!(eval.overall.total as u64, n);
    assert_eq!(
        json["ablations"][0]["accuracy"]["overall"].as_f64(),
        eval.overall.accuracy()
    );

    let explained = dir.path().join("explain.png");
    let cli = film_train::cli::Cli::try_parse_from([
        "film-train",
        "ask",
        "--run",
        run.to_str().unwrap(),
        "--image",
        fixture()
            .join("images/val/CLEVR_val_000000.png")
            .to_str()
            .unwrap(),
        "Is there a red cube?",
        "--explain",
        explained.to_str().unwrap(),
    ])
    .unwrap();
    film_train::cli::run(cli).unwrap();
    assert_png(&explained, film_train::plots::overlay_size(&image));
}
