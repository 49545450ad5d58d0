//! Fresh training questions every epoch: the built-in question templates ask new
//! questions about the training scenes, so that a long run does not memorise a fixed set.
//!
//! Epoch `e`'s questions depend only on the run's seed and `e`, so a resumed run sees
//! the very questions an uninterrupted one would have. The scenes come from the split's
//! scene file (`scenes/CLEVR_train_scenes.json`), which the embedded dataset and real
//! CLEVR v1.0 and CoGenT both have; CLEVR-Humans has none, so it cannot use this.

use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use clevr::dataset::QuestionSet;
use clevr::vocab::Vocabulary;
use clevr::Scene;
use clevr_synth::templates::{TemplateConfig, TemplateSet, TemplateStream};

/// Keeps epoch seeds apart from the dataset generator's own seeds.
const EPOCH_MIX: u64 = 0xD1B5_4A32_D192_ED03;

/// The training scenes and how to ask about them.
#[derive(Clone)]
pub struct FreshQuestions {
    scenes: Arc<Vec<Scene>>,
    /// The training set's image list: generated questions read the same image cache.
    images: Arc<Vec<String>>,
    templates: Arc<TemplateSet>,
    config: TemplateConfig,
    first: FirstStages,
    seed: u64,
}

/// How many epochs each stage before the full mix lasts, in the order they come; a
/// stage of 0 epochs is skipped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FirstStages {
    pub lookups: u64,
    pub relations: u64,
    pub zero_hop: u64,
}

/// Which templates an epoch's fresh questions come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// The lookups alone ([`TemplateSet::lookups`]).
    Lookups,
    /// The lookups directly or across one relation ([`TemplateSet::relation_lookups`]).
    Relations,
    /// The questions without a relation ([`TemplateSet::zero_hop`]).
    ZeroHop,
    /// Every template.
    Everything,
}

impl FreshQuestions {
    /// Asks `per_image` questions every epoch about those of `scenes` whose images the
    /// training set `images` holds.
    /// The first stages ask some templates alone, each as often as a scene allows: for
    /// `first.lookups` epochs those that look one object up ([`TemplateSet::lookups`]),
    /// then for `first.relations` those that look it up directly or across one relation
    /// ([`TemplateSet::relation_lookups`]), then for `first.zero_hop` those without a
    /// relation ([`TemplateSet::zero_hop`]).
    pub fn new(
        scenes: Vec<Scene>,
        images: &[String],
        per_image: usize,
        first: FirstStages,
        seed: u64,
    ) -> Result<Self> {
        let known: std::collections::HashSet<&str> = images.iter().map(String::as_str).collect();
        let total = scenes.len();
        let scenes: Vec<Scene> = scenes
            .into_iter()
            .filter(|s| known.contains(s.image_filename.as_str()))
            .collect();
        if scenes.is_empty() {
            bail!("fresh questions: none of the {total} training scenes is about an image of the training questions");
        }
        if per_image == 0 {
            bail!("fresh questions: at least one question per image");
        }
        Ok(FreshQuestions {
            scenes: Arc::new(scenes),
            images: Arc::new(images.to_vec()),
            templates: Arc::new(TemplateSet::builtin()),
            config: TemplateConfig {
                per_image,
                ..TemplateConfig::default()
            },
            first,
            seed,
        })
    }

    /// The scenes questions are asked about.
    pub fn scene_count(&self) -> usize {
        self.scenes.len()
    }

    /// Which templates epoch `epoch` asks.
    pub fn stage(&self, epoch: u64) -> Stage {
        let FirstStages {
            lookups,
            relations,
            zero_hop,
        } = self.first;
        let mut stage_start = 0;
        for (stage, epochs) in [
            (Stage::Lookups, lookups),
            (Stage::Relations, relations),
            (Stage::ZeroHop, zero_hop),
        ] {
            stage_start += epochs;
            if epoch < stage_start {
                return stage;
            }
        }
        Stage::Everything
    }

    /// Epoch `epoch`'s questions, as text and programs.
    pub fn questions(&self, epoch: u64) -> Vec<clevr::Question> {
        let only = match self.stage(epoch) {
            Stage::Lookups => self.templates.lookups(),
            Stage::Relations => self.templates.relation_lookups(),
            Stage::ZeroHop => self.templates.zero_hop(),
            Stage::Everything => return self.ask(epoch, &self.config),
        };
        let config = TemplateConfig {
            only: Some(only),
            repeat: true,
            ..self.config.clone()
        };
        self.ask(epoch, &config)
    }

    /// Questions of every kind, for the vocabulary: epoch 0's questions, as a run
    /// without first stages asks them.
    pub fn every_kind(&self) -> Vec<clevr::Question> {
        self.ask(0, &self.config)
    }

    fn ask(&self, epoch: u64, config: &TemplateConfig) -> Vec<clevr::Question> {
        let seed = self.seed ^ (epoch + 1).wrapping_mul(EPOCH_MIX);
        TemplateStream::new(&self.templates, "train", config, seed).ask(&self.scenes)
    }

    /// Epoch `epoch`'s questions, encoded with `vocab` against the training image cache.
    pub fn question_set(&self, epoch: u64, vocab: &Vocabulary) -> Result<QuestionSet> {
        let (set, report) = QuestionSet::from_questions(self.questions(epoch), vocab, &self.images)
            .with_context(|| format!("encoding the fresh questions of epoch {epoch}"))?;
        if !report.skipped.is_empty() {
            eprintln!("fresh questions of epoch {epoch}: {report}");
        }
        if set.is_empty() {
            bail!("epoch {epoch}: the generator asked no question about the training scenes");
        }
        Ok(set)
    }

    /// Starts building epoch `epoch`'s questions on a thread of its own, so that the
    /// training loop does not wait for them at the epoch's start.
    pub fn prepare(&self, epoch: u64, vocab: &Vocabulary) -> Prepared {
        let this = self.clone();
        let vocab = vocab.clone();
        let worker = std::thread::Builder::new()
            .name("fresh-questions".to_string())
            .spawn(move || this.question_set(epoch, &vocab))
            .expect("spawning the question thread");
        Prepared { epoch, worker }
    }
}

/// An epoch's questions in the making.
pub struct Prepared {
    pub epoch: u64,
    worker: JoinHandle<Result<QuestionSet>>,
}

impl Prepared {
    pub fn wait(self) -> Result<QuestionSet> {
        match self.worker.join() {
            Ok(result) => result,
            Err(_) => bail!(
                "the thread generating the questions of epoch {} panicked",
                self.epoch
            ),
        }
    }
}
