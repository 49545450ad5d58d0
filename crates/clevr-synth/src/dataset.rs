//! Writes a dataset in the CLEVR v1.0 layout:
//! `images/{split}/CLEVR_{split}_{index:06}.png`,
//! `scenes/CLEVR_{split}_scenes.json`, `questions/CLEVR_{split}_questions.json`.
//!
//! Deterministic for a seed (every image has its own random stream), parallel
//! (rayon), and atomic: everything is written into `<out>.partial` and
//! renamed to `<out>` at the end, so an interrupted run never leaves a
//! layout that looks complete.

use crate::attributes::Cogent;
use crate::camera::CameraModel;
use crate::png_out::encode_png;
use crate::questions::{generate_questions, QuestionConfig};
use crate::render::{pixel_count, Renderer};
use crate::sampler::{SamplerConfig, SceneSampler};
use crate::scene_graph::{fitted_camera, render_objects, to_scene_graph};
use clevr::scene::{Info, ScenesFile};
use clevr::{Question, Scene};
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// What to generate (the options of `film-train generate`).
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateConfig {
    pub out: PathBuf,
    pub train_images: usize,
    pub val_images: usize,
    pub questions_per_image: usize,
    pub width: u32,
    pub height: u32,
    pub seed: u64,
    pub cogent: Option<Cogent>,
    /// Render and ask about an existing scenes file instead of sampling:
    /// (scenes JSON, split name to write it as).
    pub scenes: Option<(PathBuf, String)>,
}

impl Default for GenerateConfig {
    /// The embedded default dataset (see docs/embedded-dataset.md).
    fn default() -> Self {
        Self {
            out: PathBuf::from("data/clevr-synth"),
            train_images: 4000,
            val_images: 500,
            questions_per_image: 10,
            width: 480,
            height: 320,
            seed: 0,
            cogent: None,
            scenes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot encode PNG: {source}")]
    Png {
        path: PathBuf,
        source: png::EncodingError,
    },
    #[error("{path}: cannot write JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: cannot read scenes: {source}")]
    Scenes {
        path: PathBuf,
        source: clevr::json::JsonError,
    },
    #[error("{path} already exists and is not empty; choose another --out or remove it")]
    OutputExists { path: PathBuf },
    #[error("CLEVR-CoGenT condition B has no train split (only valB, testB): use --train-images 0 with --cogent B")]
    CogentBTrain,
    #[error(
        "--size {width}x{height}: both sides must be at least 16 pixels, and the image at most \
         {} pixels",
        crate::render::MAX_PIXELS
    )]
    BadSize { width: u32, height: u32 },
    #[error("{path}: {source}")]
    Render {
        path: PathBuf,
        source: crate::render::RenderError,
    },
}

/// What was written, for the caller's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerateSummary {
    /// (split, images, questions) per split written.
    pub splits: Vec<(String, usize, usize)>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Generates the dataset described by `config`; `progress` advances by one
/// per image rendered (its length is set here).
pub fn generate(config: &GenerateConfig, progress: &ProgressBar) -> Result<GenerateSummary, GenerateError> {
    if config.width < 16 || config.height < 16 || pixel_count(config.width, config.height).is_err() {
        return Err(GenerateError::BadSize {
            width: config.width,
            height: config.height,
        });
    }
    if config.cogent == Some(Cogent::B) && config.train_images > 0 && config.scenes.is_none() {
        return Err(GenerateError::CogentBTrain);
    }
    let out = &config.out;
    if fs::read_dir(out).is_ok_and(|mut d| d.next().is_some()) {
        return Err(GenerateError::OutputExists { path: out.clone() });
    }
    let partial = partial_dir(out);
    if partial.exists() {
        // Left over from an interrupted run of ours: start again.
        fs::remove_dir_all(&partial).map_err(io_err(&partial))?;
    }
    let renderer = Renderer::default();
    let camera_model = CameraModel::clevr();
    let plans = plan_splits(config, &camera_model, &renderer)?;
    progress.set_length(plans.iter().map(|p| p.scenes.len() as u64).sum());

    let mut summary = GenerateSummary { splits: Vec::new() };
    for (split_number, plan) in plans.iter().enumerate() {
        write_images(&partial, plan, config, &camera_model, &renderer, progress)?;
        let question_config = QuestionConfig {
            per_image: config.questions_per_image,
            ..QuestionConfig::default()
        };
        let seed = config.seed ^ QUESTION_STREAM ^ split_number as u64;
        let questions = generate_questions(&plan.scenes, &plan.split, &question_config, seed);
        write_json(
            &partial
                .join("scenes")
                .join(format!("CLEVR_{}_scenes.json", plan.split)),
            &ScenesFile {
                info: info(&plan.split),
                scenes: plan.scenes.clone(),
            },
        )?;
        write_json(
            &partial
                .join("questions")
                .join(format!("CLEVR_{}_questions.json", plan.split)),
            &QuestionsFile {
                info: info(&plan.split),
                questions: &questions,
            },
        )?;
        summary
            .splits
            .push((plan.split.clone(), plan.scenes.len(), questions.len()));
    }
    if out.exists() {
        // An empty directory (checked above) may be replaced.
        fs::remove_dir(out).map_err(io_err(out))?;
    }
    fs::rename(&partial, out).map_err(io_err(out))?;
    progress.finish();
    Ok(summary)
}

/// Keeps the random streams of scenes and questions apart.
const QUESTION_STREAM: u64 = 0x5155_4553_5449_4f4e;

fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// The scenes of one split, before rendering.
struct SplitPlan {
    split: String,
    scenes: Vec<Scene>,
    /// Whether cameras come from the scenes' pixel_coords (existing scene
    /// files) rather than from sampling.
    fitted: bool,
    /// Cameras of sampled scenes, by position in `scenes`.
    cameras: Vec<crate::camera::Camera>,
}

fn plan_splits(
    config: &GenerateConfig,
    model: &CameraModel,
    renderer: &Renderer,
) -> Result<Vec<SplitPlan>, GenerateError> {
    if let Some((path, split)) = &config.scenes {
        let file = ScenesFile::read(path).map_err(|source| GenerateError::Scenes {
            path: path.clone(),
            source,
        })?;
        return Ok(vec![SplitPlan {
            split: split.clone(),
            scenes: file
                .scenes
                .into_iter()
                .map(|mut s| {
                    s.split = split.clone();
                    s.image_filename = crate::scene_graph::image_filename(split, s.image_index);
                    s
                })
                .collect(),
            fitted: true,
            cameras: Vec::new(),
        }]);
    }
    let sampler_config = SamplerConfig {
        cogent: config.cogent,
        width: config.width,
        height: config.height,
        ..SamplerConfig::default()
    };
    let sampler = SceneSampler::new(sampler_config, model.clone(), renderer);
    let suffix = config.cogent.map_or("", Cogent::letter);
    let mut plans = Vec::new();
    for (number, (name, count)) in [("train", config.train_images), ("val", config.val_images)]
        .into_iter()
        .enumerate()
    {
        if count == 0 {
            continue;
        }
        let split = format!("{name}{suffix}");
        let sampled: Vec<_> = (0..count)
            .into_par_iter()
            .map(|index| {
                let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                // One independent stream per (split, image): results do not
                // depend on the thread schedule or on the other split's size.
                rng.set_stream(((number as u64) << 40) | index as u64);
                sampler.sample(&mut rng)
            })
            .collect();
        plans.push(SplitPlan {
            scenes: sampled
                .iter()
                .enumerate()
                .map(|(i, s)| to_scene_graph(s, &split, i))
                .collect(),
            cameras: sampled.into_iter().map(|s| s.camera).collect(),
            split,
            fitted: false,
        });
    }
    Ok(plans)
}

fn write_images(
    root: &Path,
    plan: &SplitPlan,
    config: &GenerateConfig,
    model: &CameraModel,
    renderer: &Renderer,
    progress: &ProgressBar,
) -> Result<(), GenerateError> {
    let dir = root.join("images").join(&plan.split);
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    plan.scenes.par_iter().enumerate().try_for_each(|(i, scene)| {
        let camera = if plan.fitted {
            fitted_camera(model, scene, config.width, config.height)
        } else {
            plan.cameras[i].clone()
        };
        let path = dir.join(&scene.image_filename);
        let image = renderer
            .render(&camera, &render_objects(scene))
            .map_err(|source| GenerateError::Render {
                path: path.clone(),
                source,
            })?;
        let file = fs::File::create(&path).map_err(io_err(&path))?;
        let mut writer = BufWriter::new(file);
        encode_png(&image, &mut writer).map_err(|source| GenerateError::Png {
            path: path.clone(),
            source,
        })?;
        writer.flush().map_err(io_err(&path))?;
        progress.inc(1);
        Ok(())
    })
}

fn info(split: &str) -> Info {
    Info {
        split: split.to_string(),
        license: "Generated by clevr-synth (film-rs), MIT OR Apache-2.0".to_string(),
        version: "1.0".to_string(),
        date: String::new(),
    }
}

#[derive(Serialize)]
struct QuestionsFile<'a> {
    info: Info,
    questions: &'a [Question],
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), GenerateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let file = fs::File::create(path).map_err(io_err(path))?;
    let mut writer = BufWriter::new(file);
    serde_json::to_writer(&mut writer, value).map_err(|source| GenerateError::Json {
        path: path.to_path_buf(),
        source,
    })?;
    writer.flush().map_err(io_err(path))
}
