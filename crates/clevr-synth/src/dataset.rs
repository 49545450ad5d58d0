//! Writes a dataset in the CLEVR v1.0 layout:
//! `images/{split}/CLEVR_{split}_{index:06}.png`,
//! `scenes/CLEVR_{split}_scenes.json`, `questions/CLEVR_{split}_questions.json`.
//!
//! Deterministic for a seed (every image has its own random stream), parallel
//! (rayon), and atomic: everything is written into `<out>.partial` and
//! renamed to `<out>` at the end, so an interrupted run never leaves a
//! layout that looks complete.
//!
//! Streaming: scenes are sampled, rendered, written and asked about a batch at
//! a time, and the scenes and questions files are written record by record,
//! so memory does not grow with `--train-images`. (A `--scenes` file given as
//! input is read whole, as every reader of scene files does.)

use crate::attributes::Cogent;
use crate::camera::Camera;
use crate::camera::CameraModel;
use crate::png_out::encode_png;
use crate::render::{pixel_count, Renderer};
use crate::sampler::{SamplerConfig, SceneSampler};
use crate::scene_graph::{fitted_camera, render_objects, to_scene_graph};
use crate::templates::{TemplateConfig, TemplateError, TemplateSet, TemplateStream};
use clevr::scene::{Info, ScenesFile};
use clevr::Scene;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::fs;
use std::io::{BufWriter, Write};
use std::ops::Range;
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
    /// A folder of question templates in the official generator's format, asked instead
    /// of the built-in ones.
    pub templates: Option<PathBuf>,
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
            templates: None,
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
    #[error(transparent)]
    Templates(#[from] TemplateError),
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
    generate_in_batches(config, progress, BATCH)
}

/// [`generate`], holding `batch` scenes at a time.
fn generate_in_batches(
    config: &GenerateConfig,
    progress: &ProgressBar,
    batch: usize,
) -> Result<GenerateSummary, GenerateError> {
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
    let sampler = SceneSampler::new(
        SamplerConfig {
            cogent: config.cogent,
            width: config.width,
            height: config.height,
            ..SamplerConfig::default()
        },
        camera_model.clone(),
        &renderer,
    );
    let plans = plan_splits(config)?;
    progress.set_length(plans.iter().map(|p| p.len() as u64).sum());
    let template_set = match &config.templates {
        Some(folder) => TemplateSet::read_dir(folder)?,
        None => TemplateSet::builtin(),
    };
    let template_config = TemplateConfig {
        per_image: config.questions_per_image,
        ..TemplateConfig::default()
    };

    let mut summary = GenerateSummary { splits: Vec::new() };
    for (split_number, plan) in plans.iter().enumerate() {
        let split = &plan.split;
        let images = partial.join("images").join(split);
        fs::create_dir_all(&images).map_err(io_err(&images))?;
        let mut scenes_file = RecordsWriter::create(
            &partial.join("scenes").join(format!("CLEVR_{split}_scenes.json")),
            &info(split),
            "scenes",
        )?;
        let mut questions_file = RecordsWriter::create(
            &partial
                .join("questions")
                .join(format!("CLEVR_{split}_questions.json")),
            &info(split),
            "questions",
        )?;
        let seed = config.seed ^ QUESTION_STREAM ^ split_number as u64;
        let mut asker = TemplateStream::new(&template_set, split, &template_config, seed);
        // The questions about one batch are asked (on one thread: the answer balance is
        // sequential) while the next batch renders on the others.
        let mut unasked: Vec<Scene> = Vec::new();
        for start in (0..plan.len()).step_by(batch) {
            let range = start..(start + batch).min(plan.len());
            let (rendered, asked) = rayon::join(
                || -> Result<Vec<Scene>, GenerateError> {
                    let rendered = plan.scenes(range, &sampler, &camera_model, config);
                    write_images(&images, &rendered, &renderer, progress)?;
                    Ok(rendered.into_iter().map(|(scene, _)| scene).collect())
                },
                || asker.ask(&unasked),
            );
            for question in asked {
                questions_file.push(&question)?;
            }
            unasked = rendered?;
            for scene in &unasked {
                scenes_file.push(scene)?;
            }
        }
        for question in asker.ask(&unasked) {
            questions_file.push(&question)?;
        }
        let images = scenes_file.finish()?;
        let questions = questions_file.finish()?;
        summary.splits.push((split.clone(), images, questions));
    }
    if out.exists() {
        // An empty directory (checked above) may be replaced.
        fs::remove_dir(out).map_err(io_err(out))?;
    }
    clevr::atomic::replace(&partial, out).map_err(io_err(out))?;
    progress.finish();
    Ok(summary)
}

/// Scenes sampled, rendered, written and asked about together: the generator holds one
/// batch's scenes and images at a time, never a split's.
const BATCH: usize = 256;

/// Keeps the random streams of scenes and questions apart.
const QUESTION_STREAM: u64 = 0x5155_4553_5449_4f4e;

fn partial_dir(out: &Path) -> PathBuf {
    let mut name = out.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".partial");
    out.with_file_name(name)
}

/// One split to write: its name and where its scenes come from.
struct SplitPlan {
    split: String,
    source: SceneSource,
}

enum SceneSource {
    /// `count` scenes sampled from the split's random streams; `number` keeps the
    /// streams of train (0) and val (1) apart.
    Sampled { number: u64, count: usize },
    /// The scenes of an existing file, renamed into the split; their cameras are fitted
    /// to the objects' pixel coordinates.
    Given(Vec<Scene>),
}

impl SplitPlan {
    fn len(&self) -> usize {
        match &self.source {
            SceneSource::Sampled { count, .. } => *count,
            SceneSource::Given(scenes) => scenes.len(),
        }
    }

    /// The scenes at `range` of the split, with the camera each is rendered from.
    fn scenes(
        &self,
        range: Range<usize>,
        sampler: &SceneSampler,
        model: &CameraModel,
        config: &GenerateConfig,
    ) -> Vec<(Scene, Camera)> {
        match &self.source {
            SceneSource::Sampled { number, .. } => range
                .into_par_iter()
                .map(|index| {
                    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
                    // One independent stream per (split, image): results do not
                    // depend on the thread schedule, the batch or the other split's size.
                    rng.set_stream((number << 40) | index as u64);
                    let sampled = sampler.sample(&mut rng);
                    (to_scene_graph(&sampled, &self.split, index), sampled.camera)
                })
                .collect(),
            SceneSource::Given(scenes) => scenes[range]
                .par_iter()
                .map(|scene| {
                    let camera = fitted_camera(model, scene, config.width, config.height);
                    (scene.clone(), camera)
                })
                .collect(),
        }
    }
}

fn plan_splits(config: &GenerateConfig) -> Result<Vec<SplitPlan>, GenerateError> {
    if let Some((path, split)) = &config.scenes {
        let file = ScenesFile::read(path).map_err(|source| GenerateError::Scenes {
            path: path.clone(),
            source,
        })?;
        let scenes = file
            .scenes
            .into_iter()
            .map(|mut s| {
                s.split = split.clone();
                s.image_filename = crate::scene_graph::image_filename(split, s.image_index);
                s
            })
            .collect();
        return Ok(vec![SplitPlan {
            split: split.clone(),
            source: SceneSource::Given(scenes),
        }]);
    }
    let suffix = config.cogent.map_or("", Cogent::letter);
    Ok([("train", config.train_images), ("val", config.val_images)]
        .into_iter()
        .zip(0u64..)
        .filter(|((_, count), _)| *count > 0)
        .map(|((name, count), number)| SplitPlan {
            split: format!("{name}{suffix}"),
            source: SceneSource::Sampled { number, count },
        })
        .collect())
}

fn write_images(
    dir: &Path,
    batch: &[(Scene, Camera)],
    renderer: &Renderer,
    progress: &ProgressBar,
) -> Result<(), GenerateError> {
    batch.par_iter().try_for_each(|(scene, camera)| {
        let path = dir.join(&scene.image_filename);
        let image = renderer
            .render(camera, &render_objects(scene))
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

/// A CLEVR file `{"info": …, "<field>": [record, …]}` written one record at a time, in
/// the bytes `serde_json::to_writer` gives for the whole struct (compact, `info` first),
/// so a streamed file is the file an in-memory writer would have written.
struct RecordsWriter {
    path: PathBuf,
    writer: BufWriter<fs::File>,
    records: usize,
}

impl RecordsWriter {
    fn create(path: &Path, info: &Info, field: &str) -> Result<Self, GenerateError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let file = fs::File::create(path).map_err(io_err(path))?;
        let mut out = RecordsWriter {
            path: path.to_path_buf(),
            writer: BufWriter::new(file),
            records: 0,
        };
        out.write(b"{\"info\":")?;
        out.serialize(info)?;
        out.write(format!(",\"{field}\":[").as_bytes())?;
        Ok(out)
    }

    fn push(&mut self, record: &impl Serialize) -> Result<(), GenerateError> {
        if self.records > 0 {
            self.write(b",")?;
        }
        self.serialize(record)?;
        self.records += 1;
        Ok(())
    }

    /// Closes the array and the object and syncs the file; returns the records written.
    fn finish(mut self) -> Result<usize, GenerateError> {
        self.write(b"]}")?;
        let file = self.writer.into_inner().map_err(|e| GenerateError::Io {
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        file.sync_all().map_err(io_err(&self.path))?;
        Ok(self.records)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), GenerateError> {
        self.writer.write_all(bytes).map_err(io_err(&self.path))
    }

    fn serialize(&mut self, value: &impl Serialize) -> Result<(), GenerateError> {
        serde_json::to_writer(&mut self.writer, value).map_err(|source| GenerateError::Json {
            path: self.path.clone(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clevr::Question;

    /// The files written batch by batch are those of the in-memory writer this module had
    /// before it streamed: every scene of a split sampled first, then all its questions
    /// asked at once, each file serialized whole. Batches of 4 make the train split cross
    /// two boundaries and end in a short batch.
    #[test]
    fn streamed_files_are_those_written_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let config = GenerateConfig {
            out: dir.path().join("out"),
            train_images: 11,
            val_images: 5,
            questions_per_image: 3,
            width: 16,
            height: 16,
            seed: 9,
            cogent: None,
            scenes: None,
            templates: None,
        };
        let summary = generate_in_batches(&config, &ProgressBar::hidden(), 4).unwrap();
        let renderer = Renderer::default();
        let model = CameraModel::clevr();
        let sampler = SceneSampler::new(
            SamplerConfig {
                width: 16,
                height: 16,
                ..SamplerConfig::default()
            },
            model.clone(),
            &renderer,
        );
        let set = TemplateSet::builtin();
        let question_config = TemplateConfig {
            per_image: 3,
            ..TemplateConfig::default()
        };
        #[derive(Serialize)]
        struct QuestionsFile<'a> {
            info: Info,
            questions: &'a [Question],
        }
        for (number, split, count) in [(0u64, "train", 11), (1, "val", 5)] {
            let plan = SplitPlan {
                split: split.to_string(),
                source: SceneSource::Sampled { number, count },
            };
            let scenes: Vec<Scene> = plan
                .scenes(0..count, &sampler, &model, &config)
                .into_iter()
                .map(|(scene, _)| scene)
                .collect();
            let seed = config.seed ^ QUESTION_STREAM ^ number;
            let questions = TemplateStream::new(&set, split, &question_config, seed).ask(&scenes);
            assert_eq!(
                summary.splits[number as usize],
                (split.to_string(), count, questions.len())
            );
            let expected_scenes = serde_json::to_vec(&ScenesFile {
                info: info(split),
                scenes,
            })
            .unwrap();
            let expected_questions = serde_json::to_vec(&QuestionsFile {
                info: info(split),
                questions: &questions,
            })
            .unwrap();
            let read = |kind: &str| {
                std::fs::read(config.out.join(format!("{kind}/CLEVR_{split}_{kind}.json"))).unwrap()
            };
            assert!(read("scenes") == expected_scenes, "{split} scenes differ");
            assert!(
                read("questions") == expected_questions,
                "{split} questions differ"
            );
        }
    }
}
