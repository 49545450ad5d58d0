//! Asking a trained run about one image: the answers, where the model looks and the FiLM
//! parameters the question produced. `film-train ask` and `film-train serve` both go
//! through [`Asker`], so the page shows exactly what the command prints and draws.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor, D};
use clevr::image::{ImageConfig, ImageError, RgbImage};
use clevr::vocab::{VocabError, Vocabulary};

use crate::analyze::attention::{forward_with_looks_from_params, Look};
use crate::analyze::params::{applied_from_raw, FilmShape};
use crate::data::image_config;
use crate::model::FilmModel;
use crate::plots::{heat_overlay_png, Captions, PlotError};
use crate::run_dir::RunConfig;

/// Answers listed by [`Asker::ask`] and the page: the paper's figures show five.
pub const TOP_ANSWERS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum AskError {
    #[error("the question is empty: type a question about the image")]
    EmptyQuestion,
    #[error(
        "the question has {tokens} tokens, more than the limit of {limit} (CLEVR's questions have \
         a few dozen)"
    )]
    QuestionTooLong { tokens: usize, limit: usize },
    #[error("encoding the question {question:?}: {source}")]
    Encode { question: String, source: VocabError },
    #[error(
        "run {} reads pre-extracted image features, not pixels: only pixel models (presets tiny, \
         mini, paper-raw) can be asked about an image; evaluate it with `film-train eval`",
        run.display()
    )]
    FeaturesRun { run: PathBuf },
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error("running the model of {}: {source:#}", run.display())]
    Model { run: PathBuf, source: anyhow::Error },
    #[error("drawing the heat map: {0}")]
    Plot(#[from] PlotError),
}

/// A word of the question as the tokenizer splits it, and whether the run's vocabulary
/// knows it (an unknown word reaches the model as `<UNK>`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Word {
    pub word: String,
    pub known: bool,
}

/// One candidate answer and the model's probability for it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Candidate {
    pub answer: String,
    pub probability: f32,
}

/// The γ and β one conditioned block applies, per channel, after the run's γ
/// parametrisation (what the block multiplies and adds).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BlockFilm {
    /// 1-based, as the analysis report numbers blocks.
    pub block: usize,
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
}

/// What the model makes of one question about one image.
#[derive(Clone, Debug)]
pub struct Reply {
    pub words: Vec<Word>,
    /// Most likely first, [`TOP_ANSWERS`] of them (fewer if the run has fewer answers).
    pub answers: Vec<Candidate>,
    pub look: Look,
    pub film: Vec<BlockFilm>,
}

impl Reply {
    pub fn unknown_words(&self) -> Vec<String> {
        self.words
            .iter()
            .filter(|w| !w.known)
            .map(|w| w.word.clone())
            .collect()
    }

    /// The line under the heat map's title, as `ask --explain` writes it.
    pub fn subtitle(&self) -> String {
        let top = &self.answers[0];
        format!(
            "model: {} ({:.1}%) · pooled from {} of {} channels",
            top.answer,
            100.0 * top.probability,
            self.look.live_channels,
            self.look.channels
        )
    }
}

/// A trained pixel model loaded once, with what it needs to read a question and an image.
pub struct Asker {
    run: PathBuf,
    pub config: RunConfig,
    pub vocab: Vocabulary,
    model: FilmModel,
    image: ImageConfig,
    shape: FilmShape,
    device: Device,
}

impl Asker {
    /// Loads the run's best model (or last checkpoint) onto `device`.
    pub fn load(run: &Path, device: &Device) -> anyhow::Result<Asker> {
        let (config, vocab, model) = crate::train::load_run(run, device)?;
        Asker::new(run, config, vocab, model, device).map_err(Into::into)
    }

    pub fn new(
        run: &Path,
        config: RunConfig,
        vocab: Vocabulary,
        model: FilmModel,
        device: &Device,
    ) -> Result<Asker, AskError> {
        if let film_vision::Stem::Features { .. } = config.model.vision.stem {
            return Err(AskError::FeaturesRun {
                run: run.to_path_buf(),
            });
        }
        Ok(Asker {
            run: run.to_path_buf(),
            image: image_config(config.model.image_size),
            shape: FilmShape::of(&config.model.vision),
            config,
            vocab,
            model,
            device: device.clone(),
        })
    }

    /// The question's words and whether each is in the vocabulary.
    pub fn words(&self, question: &str) -> Vec<Word> {
        clevr::vocab::question_tokens(question, self.vocab.questions.config())
            .into_iter()
            .map(|word| Word {
                known: self.vocab.questions.id(&word).is_some(),
                word,
            })
            .collect()
    }

    /// The question's token ids, refusing an empty or over-long question.
    pub fn encode(&self, question: &str) -> Result<Vec<u32>, AskError> {
        if clevr::vocab::question_tokens(question, self.vocab.questions.config()).is_empty() {
            return Err(AskError::EmptyQuestion);
        }
        let ids = self
            .vocab
            .questions
            .encode(question)
            .map_err(|source| AskError::Encode {
                question: question.to_string(),
                source,
            })?;
        let limit = clevr::dataset::MAX_QUESTION_TOKENS;
        if ids.len() > limit {
            return Err(AskError::QuestionTooLong {
                tokens: ids.len(),
                limit,
            });
        }
        Ok(ids)
    }

    /// The model's input for `image`: resized to the run's square and normalised.
    fn image_tensor(&self, image: &RgbImage) -> candle_core::Result<Tensor> {
        let chw =
            clevr::image::resize(image, self.image.width, self.image.height, self.image.filter).to_chw();
        let plane = self.image.width * self.image.height;
        let mut pixels = vec![0f32; chw.len()];
        self.image.normalization.apply_chw(&chw, plane, &mut pixels);
        Tensor::from_vec(pixels, (1, 3, self.image.height, self.image.width), &self.device)
    }

    fn model_error(&self, source: impl Into<anyhow::Error>) -> AskError {
        AskError::Model {
            run: self.run.clone(),
            source: source.into(),
        }
    }

    /// Asks `question` about `image`.
    pub fn ask(&self, image: &RgbImage, question: &str) -> Result<Reply, AskError> {
        let ids = self.encode(question)?;
        let run = || -> anyhow::Result<Reply> {
            let images = self.image_tensor(image)?;
            let len = ids.len();
            let questions = Tensor::from_vec(ids.clone(), (1, len), &self.device)?;
            let raw = self.model.film_params(&questions, &[len])?;
            let (logits, mut looks) = forward_with_looks_from_params(&self.model, &images, &raw)?;
            let applied = applied_from_raw(&self.model, &self.shape, &raw)?;
            let probs = candle_nn::ops::softmax(&logits, D::Minus1)?
                .squeeze(0)?
                .to_vec1::<f32>()?;
            let c = self.shape.channels;
            let film = self
                .shape
                .blocks
                .iter()
                .enumerate()
                .map(|(b, &k)| BlockFilm {
                    block: k + 1,
                    gamma: applied.gamma[b * c..(b + 1) * c].to_vec(),
                    beta: applied.beta[b * c..(b + 1) * c].to_vec(),
                })
                .collect();
            Ok(Reply {
                words: self.words(question),
                answers: self.ranked(&probs, TOP_ANSWERS),
                look: looks.swap_remove(0),
                film,
            })
        };
        run().map_err(|e| self.model_error(e))
    }

    /// The model's top answer and its probability for each of `questions` about one image:
    /// the image goes through the stem once for all of them.
    pub fn answer_all(&self, image: &RgbImage, questions: &[&str]) -> Result<Vec<Candidate>, AskError> {
        if questions.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = questions
            .iter()
            .map(|q| self.encode(q))
            .collect::<Result<Vec<_>, _>>()?;
        let run = || -> anyhow::Result<Vec<Candidate>> {
            let lengths: Vec<usize> = encoded.iter().map(Vec::len).collect();
            let width = lengths.iter().copied().max().unwrap_or(0);
            let mut padded = vec![clevr::vocab::NULL_ID; encoded.len() * width];
            for (row, ids) in padded.chunks_exact_mut(width).zip(&encoded) {
                row[..ids.len()].copy_from_slice(ids);
            }
            let tokens = Tensor::from_vec(padded, (encoded.len(), width), &self.device)?;
            let rows = Tensor::zeros(encoded.len(), candle_core::DType::U32, &self.device)?;
            let images = self.image_tensor(image)?;
            let logits = self
                .model
                .forward_shared_t(&images, &rows, &tokens, &lengths, false)?
                .logits;
            let probs = candle_nn::ops::softmax(&logits, D::Minus1)?.to_vec2::<f32>()?;
            Ok(probs.iter().map(|p| self.ranked(p, 1).swap_remove(0)).collect())
        };
        run().map_err(|e| self.model_error(e))
    }

    fn ranked(&self, probs: &[f32], n: usize) -> Vec<Candidate> {
        let mut ranked: Vec<(usize, f32)> = probs.iter().copied().enumerate().collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        ranked
            .into_iter()
            .take(n)
            .map(|(id, probability)| Candidate {
                answer: self.vocab.answers.answer(id as u32).unwrap_or("?").to_string(),
                probability,
            })
            .collect()
    }

    /// The heat map of `reply` over `image`, titled with `question`, as `ask --explain`
    /// draws it, as PNG bytes.
    pub fn explain_png(&self, image: &RgbImage, question: &str, reply: &Reply) -> Result<Vec<u8>, AskError> {
        let captions = Captions {
            title: question,
            subtitle: &reply.subtitle(),
            value_label: reply.look.value_label(),
        };
        Ok(heat_overlay_png(
            Path::new("heat map"),
            image,
            &reply.look.heat,
            &captions,
        )?)
    }
}
