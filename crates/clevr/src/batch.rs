//! Seeded, shuffled batches of questions and images as candle tensors, built on
//! a background thread so the training loop does not wait on image work.
//!
//! Order: epoch `e` with seed `s` is a shuffle of all question positions by
//! `StdRng::seed_from_u64(s ^ e·φ)` (rand 0.9's StdRng, ChaCha12), so the same seed
//! gives the same batches on every run and machine with this rand version. With
//! [`BatchConfig::questions_per_image`] above 1, the shuffle keeps that many questions
//! of one image together, so that a model can run its image stem once for all of them.
//! A batch holds each of its distinct images once, and `image_rows` says which image
//! each question reads.
//! Questions are padded with `<NULL>` (0) to the longest question of the batch;
//! `lengths` holds each question's true length (with `<START>` and `<END>`).
//! With [`BatchConfig::mirror`], about half of a batch's images are mirrored left to
//! right and the words `left` and `right` swapped in their questions (see [`Mirror`]).

use crate::cache::ImageCache;
use crate::dataset::{QuestionSet, NO_ANSWER};
use crate::features::FeatureFile;
use crate::image::Normalization;
use crate::vocab::NULL_ID;
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Mixes the epoch into the seed (the golden-ratio constant spreads small integers).
const EPOCH_MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// Keeps a curriculum epoch's draws apart from the plain shuffle of the same epoch.
const CURRICULUM_MIX: u64 = 0x2545_F491_4F6C_DD1D;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("batch tensors: {0}")]
    Tensor(#[from] candle_core::Error),
    #[error(
        "question set and image cache disagree: question {question} uses image slot {slot}, cache has {cached} images"
    )]
    ImageSlot {
        question: usize,
        slot: usize,
        cached: usize,
    },
    #[error(
        "{}: question {question} is about image_index {image_index}, but the file holds features of {rows} images",
        path.display()
    )]
    FeatureRow {
        path: std::path::PathBuf,
        question: usize,
        image_index: usize,
        rows: usize,
    },
    #[error("batch_size must be at least 1")]
    EmptyBatch,
    #[error(
        "mirroring needs pixels: a pre-extracted feature map mirrored is not the feature map of the mirrored image"
    )]
    MirrorNeedsPixels,
    #[error(
        "the batch thread panicked building batch {batch} of {batches} (questions at positions {}): {message}",
        list_positions(positions)
    )]
    WorkerPanicked {
        batch: usize,
        batches: usize,
        positions: Vec<usize>,
        message: String,
    },
    #[error("the batch thread stopped after {delivered} of {batches} batches without saying why")]
    WorkerVanished { delivered: usize, batches: usize },
}

/// The first few question positions of a batch, for an error message.
fn list_positions(positions: &[usize]) -> String {
    const SHOWN: usize = 8;
    let mut list: Vec<String> = positions.iter().take(SHOWN).map(usize::to_string).collect();
    if positions.len() > SHOWN {
        list.push(format!("… {} in all", positions.len()));
    }
    list.join(", ")
}

/// The message of a caught panic (`panic!` payloads are `&str` or `String`).
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string())
}

/// How batches are cut and produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchConfig {
    pub batch_size: usize,
    pub seed: u64,
    /// Shuffle each epoch (training); off gives file order (evaluation).
    pub shuffle: bool,
    /// Leave out the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    /// Batches built ahead of the consumer.
    pub prefetch: usize,
    /// Questions about one image kept together in a shuffled epoch (1: a plain shuffle of
    /// all questions). A batch of `batch_size` questions then holds about
    /// `batch_size / questions_per_image` distinct images.
    pub questions_per_image: usize,
    /// Mirror about half of the images left to right, with their questions to match.
    pub mirror: Option<Mirror>,
}

/// Left-right mirroring of training images, a free doubling of the scenes: the mirror
/// image of a CLEVR scene is a CLEVR scene in which every `left` relation is a `right`
/// one and the reverse (CLEVR's relations are offsets along the camera's left and right
/// directions), and colours, shapes, materials, sizes, counts and front/behind are
/// unchanged; so a question about the mirrored image is the question with the two words
/// swapped, and its answer is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mirror {
    /// The vocabulary ids of `left` and `right`, swapped in a mirrored image's questions.
    pub left: u32,
    pub right: u32,
    /// Decides which images are mirrored, each image on its own: all questions about one
    /// image in a batch see it the same way, and another seed (a training loop gives each
    /// epoch its own) mirrors another half.
    pub seed: u64,
}

impl Mirror {
    /// Whether the image with key `key` is mirrored.
    fn mirrors(&self, key: usize) -> bool {
        rand::rngs::StdRng::seed_from_u64(self.seed ^ (key as u64).wrapping_mul(EPOCH_MIX)).random()
    }

    fn swap(&self, token: u32) -> u32 {
        if token == self.left {
            self.right
        } else if token == self.right {
            self.left
        } else {
            token
        }
    }
}

impl Default for BatchConfig {
    /// The paper's batch size of 64, shuffled, two batches ahead.
    fn default() -> Self {
        BatchConfig {
            batch_size: 64,
            seed: 0,
            shuffle: true,
            drop_last: false,
            prefetch: 2,
            questions_per_image: 1,
            mirror: None,
        }
    }
}

/// One batch. All tensors are on the CPU; the training loop moves them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Question ids, `(N, T)` u32, padded with `<NULL>` = 0.
    pub questions: Tensor,
    /// True question lengths, `(N,)` u32.
    pub lengths: Tensor,
    /// The batch's distinct images, normalised, `(M, 3, H, W)` f32 with `M <= N`, or with
    /// [`ImageInputs::Features`] their feature maps, `(M, C, H, W)` f32; in the order the
    /// questions first use them.
    pub images: Tensor,
    /// The row of `images` that each question is about, `(N,)` u32.
    pub image_rows: Tensor,
    /// Answer ids `(N,)` u32; `None` when any question of the batch has no answer
    /// (test split), so an unanswered question can never reach a loss as an id.
    pub answers: Option<Tensor>,
    /// [`crate::QuestionType::index`] per question, `(N,)` u8, 255 when unknown.
    pub types: Tensor,
    /// Positions of the questions in the [`QuestionSet`].
    pub positions: Vec<usize>,
    /// Whether each row of `images` is mirrored (all false without
    /// [`BatchConfig::mirror`]); its questions have `left` and `right` swapped.
    pub mirrored: Vec<bool>,
}

impl Batch {
    /// One image per question, `(N, …)`: `images` repeated as `image_rows` says, for code
    /// that wants the image of each question in the question's row.
    pub fn question_images(&self) -> candle_core::Result<Tensor> {
        self.images.index_select(&self.image_rows, 0)
    }

    /// The questions' true lengths as numbers, for the question encoder's
    /// padding-skipping recurrence.
    pub fn question_lengths(&self) -> candle_core::Result<Vec<usize>> {
        Ok(self
            .lengths
            .to_vec1::<u32>()?
            .into_iter()
            .map(|l| l as usize)
            .collect())
    }
}

/// Easy questions first: the first `steps` training steps draw their batches from the
/// easiest questions, a pool growing linearly from `start_fraction` of them to all.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Curriculum {
    pub steps: u64,
    pub start_fraction: f64,
}

impl Curriculum {
    /// How many of `groups` (sorted easiest first) step `step` draws from: never fewer
    /// than `at_least`, so that a batch is not one group repeated.
    pub fn pool(&self, step: u64, groups: usize, at_least: usize) -> usize {
        let progress = (step as f64 / self.steps.max(1) as f64).min(1.0);
        let fraction = self.start_fraction + (1.0 - self.start_fraction) * progress;
        ((fraction * groups as f64).ceil() as usize)
            .max(at_least)
            .clamp(1, groups.max(1))
    }
}

/// Where a batch's image tensor comes from.
#[derive(Clone, Debug)]
pub enum ImageInputs {
    /// Resized pixels from the preprocessing cache, normalised per channel.
    Pixels {
        cache: Arc<ImageCache>,
        normalization: Normalization,
    },
    /// Pre-extracted feature maps; a question reads the row of its `image_index`.
    Features(Arc<FeatureFile>),
}

/// Builds batches of a question set against its images or their features.
#[derive(Clone)]
pub struct Batcher {
    questions: Arc<QuestionSet>,
    inputs: ImageInputs,
    config: BatchConfig,
}

impl Batcher {
    pub fn new(
        questions: Arc<QuestionSet>,
        images: Arc<ImageCache>,
        normalization: Normalization,
        config: BatchConfig,
    ) -> Result<Self, BatchError> {
        if let Some((question, &slot)) = questions
            .image_slot
            .iter()
            .enumerate()
            .find(|(_, &s)| s as usize >= images.len())
        {
            return Err(BatchError::ImageSlot {
                question,
                slot: slot as usize,
                cached: images.len(),
            });
        }
        Self::with_inputs(
            questions,
            ImageInputs::Pixels {
                cache: images,
                normalization,
            },
            config,
        )
    }

    /// Batches whose image tensor holds each question's pre-extracted feature map.
    pub fn with_features(
        questions: Arc<QuestionSet>,
        features: Arc<FeatureFile>,
        config: BatchConfig,
    ) -> Result<Self, BatchError> {
        let rows = features.rows();
        if let Some((question, &image_index)) = questions
            .image_index
            .iter()
            .enumerate()
            .find(|(_, &i)| i as usize >= rows)
        {
            return Err(BatchError::FeatureRow {
                path: features.path().to_path_buf(),
                question,
                image_index: image_index as usize,
                rows,
            });
        }
        Self::with_inputs(questions, ImageInputs::Features(features), config)
    }

    fn with_inputs(
        questions: Arc<QuestionSet>,
        inputs: ImageInputs,
        config: BatchConfig,
    ) -> Result<Self, BatchError> {
        if config.batch_size == 0 {
            return Err(BatchError::EmptyBatch);
        }
        if config.mirror.is_some() && matches!(inputs, ImageInputs::Features(_)) {
            return Err(BatchError::MirrorNeedsPixels);
        }
        Ok(Batcher {
            questions,
            inputs,
            config,
        })
    }

    /// The questions this batcher cuts into batches.
    pub fn questions(&self) -> &QuestionSet {
        &self.questions
    }

    /// Question positions of `epoch`, cut into batches.
    pub fn plan(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.questions.len()).collect();
        if self.config.shuffle {
            let mut rng = rand::rngs::StdRng::seed_from_u64(self.config.seed ^ epoch.wrapping_mul(EPOCH_MIX));
            if self.config.questions_per_image > 1 {
                order = self.grouped_shuffle(&mut rng);
            } else {
                order.shuffle(&mut rng);
            }
        }
        order
            .chunks(self.config.batch_size)
            .filter(|c| !self.config.drop_last || c.len() == self.config.batch_size)
            .map(<[usize]>::to_vec)
            .collect()
    }

    /// All question positions, shuffled in groups of up to `questions_per_image` questions
    /// about one image: each image's questions are shuffled and cut into groups, then the
    /// groups of all images are shuffled.
    fn grouped_shuffle(&self, rng: &mut rand::rngs::StdRng) -> Vec<usize> {
        let mut groups: Vec<Vec<usize>> = Vec::new();
        for mut questions in self.questions_by_image() {
            questions.shuffle(rng);
            groups.extend(
                questions
                    .chunks(self.config.questions_per_image)
                    .map(<[usize]>::to_vec),
            );
        }
        groups.shuffle(rng);
        groups.concat()
    }

    /// The question positions of each image, indexed by [`Batcher::image_key`].
    fn questions_by_image(&self) -> Vec<Vec<usize>> {
        let mut by_image: Vec<Vec<usize>> = Vec::new();
        for i in 0..self.questions.len() {
            let key = self.image_key(i);
            if by_image.len() <= key {
                by_image.resize_with(key + 1, Vec::new);
            }
            by_image[key].push(i);
        }
        by_image
    }

    /// Which image question `i` reads: its cache slot, or its feature row.
    fn image_key(&self, i: usize) -> usize {
        match &self.inputs {
            ImageInputs::Pixels { .. } => self.questions.image_slot[i] as usize,
            ImageInputs::Features(_) => self.questions.image_index[i] as usize,
        }
    }

    /// The batches of `epoch` while a curriculum runs: every batch is drawn (with
    /// replacement) from the easiest questions by `difficulty` (one value per question,
    /// lower is easier), a pool that grows from `curriculum.start_fraction` of them at
    /// step 0 to all of them at step `curriculum.steps`. The epoch's batches are steps
    /// `first_step`, `first_step + 1`, …, and there are as many as in a plain epoch.
    /// Groups of [`BatchConfig::questions_per_image`] questions about one image (sorted by
    /// difficulty within the image) are drawn together, as in a grouped epoch.
    pub fn curriculum_plan(
        &self,
        epoch: u64,
        first_step: u64,
        difficulty: &[f32],
        curriculum: &Curriculum,
    ) -> Vec<Vec<usize>> {
        let set = &*self.questions;
        assert_eq!(difficulty.len(), set.len(), "one difficulty per question");
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            self.config.seed ^ epoch.wrapping_mul(EPOCH_MIX) ^ CURRICULUM_MIX,
        );
        let per_image = self.config.questions_per_image.max(1);
        let mut groups: Vec<(f32, Vec<usize>)> = Vec::new();
        for mut questions in self.questions_by_image() {
            // Shuffled first, so that questions of equal difficulty are grouped at random.
            questions.shuffle(&mut rng);
            questions.sort_by(|&a, &b| difficulty[a].total_cmp(&difficulty[b]));
            for chunk in questions.chunks(per_image) {
                let mean = chunk.iter().map(|&i| difficulty[i]).sum::<f32>() / chunk.len() as f32;
                groups.push((mean, chunk.to_vec()));
            }
        }
        groups.sort_by(|a, b| a.0.total_cmp(&b.0));
        let batches = set.len().div_ceil(self.config.batch_size);
        let groups_per_batch = self.config.batch_size.div_ceil(per_image);
        (0..batches as u64)
            .map(|b| {
                let pool = curriculum.pool(first_step + b, groups.len(), groups_per_batch);
                let mut batch: Vec<usize> = (0..groups_per_batch)
                    .flat_map(|_| groups[rng.random_range(0..pool)].1.iter().copied())
                    .collect();
                batch.truncate(self.config.batch_size);
                batch
            })
            .collect()
    }

    /// Builds the batch of the given question positions.
    pub fn batch(&self, positions: &[usize]) -> Result<Batch, BatchError> {
        let set = &*self.questions;
        let n = positions.len();
        // Each distinct image once, in order of first use.
        let mut distinct: Vec<usize> = Vec::new();
        let mut rows: Vec<u32> = Vec::with_capacity(n);
        for &i in positions {
            let key = self.image_key(i);
            let row = match distinct.iter().position(|&k| k == key) {
                Some(row) => row,
                None => {
                    distinct.push(key);
                    distinct.len() - 1
                }
            };
            rows.push(row as u32);
        }
        let mirrored: Vec<bool> = match &self.config.mirror {
            Some(mirror) => distinct.iter().map(|&key| mirror.mirrors(key)).collect(),
            None => vec![false; distinct.len()],
        };
        let longest = positions
            .iter()
            .map(|&i| set.question_tokens(i).len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![NULL_ID; n * longest];
        let mut lengths = Vec::with_capacity(n);
        for (row, (&i, &image)) in positions.iter().zip(&rows).enumerate() {
            let tokens = set.question_tokens(i);
            let out = &mut ids[row * longest..row * longest + tokens.len()];
            match &self.config.mirror {
                Some(mirror) if mirrored[image as usize] => {
                    for (o, &t) in out.iter_mut().zip(tokens) {
                        *o = mirror.swap(t);
                    }
                }
                _ => out.copy_from_slice(tokens),
            }
            lengths.push(tokens.len() as u32);
        }
        let m = distinct.len();
        let cpu = &Device::Cpu;
        let images = match &self.inputs {
            ImageInputs::Pixels { cache, normalization } => {
                let image_len = cache.image_bytes();
                let plane = cache.width() * cache.height();
                let width = cache.width();
                let mut pixels = vec![0f32; m * image_len];
                pixels
                    .par_chunks_mut(image_len)
                    .zip(distinct.par_iter().zip(&mirrored))
                    .for_each(|(out, (&slot, &mirror))| {
                        normalization.apply_chw(cache.image(slot), plane, out);
                        if mirror {
                            out.chunks_mut(width).for_each(<[f32]>::reverse);
                        }
                    });
                Tensor::from_vec(pixels, (m, 3, cache.height(), cache.width()), cpu)?
            }
            ImageInputs::Features(features) => {
                let map_len = features.map_len();
                let mut maps = vec![0f32; m * map_len];
                maps.par_chunks_mut(map_len)
                    .zip(distinct.par_iter())
                    .for_each(|(out, &row)| features.read_into(row, out));
                let (c, h, w) = features.map_shape();
                Tensor::from_vec(maps, (m, c, h, w), cpu)?
            }
        };
        let answers: Vec<u32> = positions.iter().map(|&i| set.answers[i]).collect();
        let types: Vec<u8> = positions.iter().map(|&i| set.types[i]).collect();
        Ok(Batch {
            questions: Tensor::from_vec(ids, (n, longest), cpu)?,
            lengths: Tensor::from_vec(lengths, n, cpu)?,
            images,
            image_rows: Tensor::from_vec(rows, n, cpu)?,
            answers: if answers.contains(&NO_ANSWER) {
                None
            } else {
                Some(Tensor::from_vec(answers, n, cpu)?)
            },
            types: Tensor::from_vec(types, n, cpu)?,
            positions: positions.to_vec(),
            mirrored,
        })
    }

    /// The batches of `epoch`, built on a background thread up to
    /// `prefetch` batches ahead of the consumer.
    pub fn epoch(&self, epoch: u64) -> Prefetch {
        self.batches(self.plan(epoch))
    }

    /// The batches of `plan` (question positions per batch), built on a background thread
    /// up to `prefetch` batches ahead of the consumer.
    pub fn batches(&self, plan: Vec<Vec<usize>>) -> Prefetch {
        let (sender, receiver) = sync_channel(self.config.prefetch.max(1));
        let batcher = self.clone();
        let batches = plan.len();
        let worker = std::thread::Builder::new()
            .name("clevr-batches".to_string())
            .spawn(move || {
                for (batch, positions) in plan.into_iter().enumerate() {
                    // A panic becomes the batch's error: the consumer must not mistake a
                    // dead worker for the end of the epoch.
                    let built =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| batcher.batch(&positions)))
                            .unwrap_or_else(|payload| {
                                Err(BatchError::WorkerPanicked {
                                    batch,
                                    batches,
                                    message: panic_message(&*payload),
                                    positions,
                                })
                            });
                    let failed = built.is_err();
                    // A send error means the consumer stopped early: nothing to do.
                    if sender.send(built).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the batch thread");
        Prefetch {
            receiver: Some(receiver),
            worker: Some(worker),
            batches,
            delivered: 0,
        }
    }
}

/// Iterator over prefetched batches of one epoch: every batch of the plan, or an error
/// in place of the first one that could not be built, after which it ends.
pub struct Prefetch {
    receiver: Option<Receiver<Result<Batch, BatchError>>>,
    worker: Option<JoinHandle<()>>,
    batches: usize,
    delivered: usize,
}

impl Iterator for Prefetch {
    type Item = Result<Batch, BatchError>;
    fn next(&mut self) -> Option<Self::Item> {
        let item = match self.receiver.as_ref()?.recv() {
            Ok(item) => item,
            Err(_) if self.delivered < self.batches => Err(BatchError::WorkerVanished {
                delivered: self.delivered,
                batches: self.batches,
            }),
            Err(_) => return None,
        };
        self.delivered += 1;
        if item.is_err() {
            self.receiver = None;
        }
        Some(item)
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Dropping the receiver first unblocks a worker waiting to send.
        self.receiver.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{write_png, RgbImage};
    use crate::layout::{Release, SplitFiles};

    /// 7 questions over 3 images; question i has i % 4 + 3 tokens, 1 + i, 2 + i, …;
    /// image i is 4 x 2 pixels of red 100·i, green 20·x (x the column) and blue 255.
    fn fixture() -> (tempfile::TempDir, Arc<QuestionSet>, Arc<ImageCache>) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("images/val")).unwrap();
        let images: Vec<String> = (0..3).map(|i| format!("CLEVR_val_{i:06}.png")).collect();
        for (i, name) in images.iter().enumerate() {
            let image = RgbImage {
                width: 4,
                height: 2,
                pixels: (0..8u8)
                    .flat_map(|p| [(i * 100) as u8, 20 * (p % 4), 255])
                    .collect(),
            };
            write_png(&root.path().join("images/val").join(name), &image).unwrap();
        }
        let mut set = QuestionSet {
            offsets: vec![0],
            images: images.clone(),
            ..QuestionSet::default()
        };
        for i in 0..7u32 {
            let len = i % 4 + 3;
            set.tokens.extend((0..len).map(|t| 1 + t + i));
            set.offsets.push(set.tokens.len() as u32);
            set.image_index.push(i % 3);
            set.image_slot.push(i % 3);
            set.answers.push(i);
            set.families.push(0);
            set.types.push((i % 5) as u8);
        }
        let files = SplitFiles::clevr(root.path(), Release::V1, "val").unwrap();
        let cache = crate::testing::small_cache(root.path(), &files, &images, (4, 2));
        (root, Arc::new(set), Arc::new(cache))
    }

    fn batcher(seed: u64, batch_size: usize, drop_last: bool) -> (tempfile::TempDir, Batcher) {
        let (root, set, cache) = fixture();
        let config = BatchConfig {
            batch_size,
            seed,
            drop_last,
            ..BatchConfig::default()
        };
        (
            root,
            Batcher::new(set, cache, Normalization::UNIT, config).unwrap(),
        )
    }

    fn epoch_positions(b: &Batcher, epoch: u64) -> Vec<Vec<usize>> {
        b.epoch(epoch).map(|batch| batch.unwrap().positions).collect()
    }

    #[test]
    fn same_seed_same_batches_and_every_question_once() {
        let (_r1, a) = batcher(42, 3, false);
        let (_r2, b) = batcher(42, 3, false);
        let first = epoch_positions(&a, 0);
        assert_eq!(first, epoch_positions(&b, 0));
        assert_eq!(first.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
        let mut all: Vec<usize> = first.concat();
        all.sort();
        assert_eq!(all, (0..7).collect::<Vec<_>>());
        let (_r3, c) = batcher(43, 3, false);
        assert_ne!(first, epoch_positions(&c, 0), "another seed shuffles differently");
        assert_ne!(
            first,
            epoch_positions(&a, 1),
            "another epoch shuffles differently"
        );
        let (_r4, d) = batcher(42, 3, true);
        assert_eq!(epoch_positions(&d, 0).len(), 2);
    }

    #[test]
    fn grouped_epochs_keep_questions_of_an_image_together() {
        let (_root, set, cache) = fixture();
        let config = BatchConfig {
            batch_size: 4,
            seed: 9,
            questions_per_image: 2,
            ..BatchConfig::default()
        };
        let b = Batcher::new(set.clone(), cache, Normalization::UNIT, config).unwrap();
        for epoch in 0..6 {
            let order: Vec<usize> = b.plan(epoch).concat();
            let mut sorted = order.clone();
            sorted.sort();
            assert_eq!(sorted, (0..7).collect::<Vec<_>>(), "every question once");
            // Image 0 has questions 0, 3, 6; images 1 and 2 two each: 5 groups, of which
            // only image 0's leftover has one question. Every other group is a pair.
            let mut k = 0;
            let mut singles = 0;
            while k < order.len() {
                let image = set.image_slot[order[k]];
                if k + 1 < order.len() && set.image_slot[order[k + 1]] == image {
                    k += 2;
                } else {
                    assert_eq!(image, 0, "epoch {epoch}: {order:?}");
                    singles += 1;
                    k += 1;
                }
            }
            assert_eq!(singles, 1, "epoch {epoch}: {order:?}");
        }
        assert_ne!(
            b.plan(0),
            b.plan(1),
            "another epoch groups and shuffles differently"
        );
        let batch = b.epoch(0).next().unwrap().unwrap();
        let distinct = batch.images.dim(0).unwrap();
        assert!(
            distinct < batch.positions.len(),
            "{distinct} images for {:?}",
            batch.positions
        );
    }

    #[test]
    fn a_curriculum_draws_from_the_easiest_questions_first() {
        let (_root, b) = batcher(5, 2, false);
        // Question i has difficulty i: 0 is the easiest.
        let difficulty: Vec<f32> = (0..7).map(|i| i as f32).collect();
        let curriculum = Curriculum {
            steps: 100,
            start_fraction: 0.2,
        };
        let early = b.curriculum_plan(0, 0, &difficulty, &curriculum);
        assert_eq!(early.len(), 4, "as many batches as a plain epoch");
        // At step 0 the pool is a fifth of 7 questions, rounded up: the 2 easiest.
        assert!(early.concat().iter().all(|&i| i < 2), "{early:?}");
        assert_eq!(early, b.curriculum_plan(0, 0, &difficulty, &curriculum));
        assert_eq!(curriculum.pool(50, 7, 2), 5, "0.2 + 0.8 / 2 of 7, rounded up");
        let late: Vec<usize> = (0..20)
            .flat_map(|e| b.curriculum_plan(e, 100, &difficulty, &curriculum).concat())
            .collect();
        assert!(late.contains(&6), "the whole set once the curriculum is over");
    }

    #[test]
    fn batch_contents_match_the_question_set_and_cache() {
        let (_root, b) = batcher(7, 4, false);
        let positions = [6, 1, 3];
        let batch = b.batch(&positions).unwrap();
        assert_eq!(batch.questions.dims(), [3, 6]);
        let ids = batch.questions.to_vec2::<u32>().unwrap();
        let lengths = batch.lengths.to_vec1::<u32>().unwrap();
        assert_eq!(lengths, [5, 4, 6]);
        for (row, &i) in positions.iter().enumerate() {
            let tokens = b.questions.question_tokens(i);
            assert_eq!(&ids[row][..tokens.len()], tokens);
            assert!(ids[row][tokens.len()..].iter().all(|&t| t == NULL_ID));
        }
        assert_eq!(batch.answers.unwrap().to_vec1::<u32>().unwrap(), [6, 1, 3]);
        assert_eq!(batch.types.to_vec1::<u8>().unwrap(), [1, 1, 3]);
        // Questions 6 and 3 are both about image 0: it is decoded once.
        assert_eq!(batch.images.dims(), [2, 3, 2, 4]);
        assert_eq!(batch.image_rows.to_vec1::<u32>().unwrap(), [0, 1, 0]);
        let images = batch.images.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Question 6 uses image 0 (red 0), question 1 image 1 (red 100/255).
        assert_eq!(images[0], 0.0);
        assert!((images[24] - 100.0 / 255.0).abs() < 1e-6);
        assert_eq!(images[8], 0.0, "green plane");
        assert_eq!(images[16], 1.0, "blue plane");
    }

    #[test]
    fn mirrored_images_are_reversed_with_left_and_right_swapped_in_their_questions() {
        let (_root, set, cache) = fixture();
        let in_order = BatchConfig {
            batch_size: 7,
            shuffle: false,
            ..BatchConfig::default()
        };
        let plain = Batcher::new(set.clone(), cache.clone(), Normalization::UNIT, in_order.clone())
            .unwrap()
            .batch(&[0, 1, 2, 3, 4, 5, 6])
            .unwrap();
        // Tokens 4 and 5 stand for `left` and `right`: questions 0 to 4 hold one or both.
        let mirror = |seed| Mirror {
            left: 4,
            right: 5,
            seed,
        };
        let mirrored_batcher = |seed| {
            let config = BatchConfig {
                mirror: Some(mirror(seed)),
                ..in_order.clone()
            };
            Batcher::new(set.clone(), cache.clone(), Normalization::UNIT, config).unwrap()
        };
        let mut mirrored_images = 0;
        let seeds = 200;
        for seed in 0..seeds {
            mirrored_images += mirrored_batcher(seed)
                .batch(&[0, 1, 2])
                .unwrap()
                .mirrored
                .iter()
                .filter(|&&m| m)
                .count();
        }
        // About half of 600 images; a fair coin stays within 75 of 300 with odds of
        // about 1 in 10^9 against.
        assert!((225..=375).contains(&mirrored_images), "{mirrored_images} of 600");
        let seed = (0..seeds)
            .find(|&seed| {
                let m = mirrored_batcher(seed).batch(&[0, 1, 2]).unwrap().mirrored;
                m.contains(&true) && m.contains(&false)
            })
            .unwrap();
        let batch = mirrored_batcher(seed).batch(&[0, 1, 2, 3, 4, 5, 6]).unwrap();
        assert_eq!(
            batch.image_rows.to_vec1::<u32>().unwrap(),
            plain.image_rows.to_vec1::<u32>().unwrap()
        );
        assert_eq!(
            batch.answers.as_ref().unwrap().to_vec1::<u32>().unwrap(),
            plain.answers.as_ref().unwrap().to_vec1::<u32>().unwrap()
        );
        let pixels = |b: &Batch| b.images.flatten_from(1).unwrap().to_vec2::<f32>().unwrap();
        let (seen, expected) = (pixels(&batch), pixels(&plain));
        for (row, &mirrored) in batch.mirrored.iter().enumerate() {
            let mut image = expected[row].clone();
            if mirrored {
                image.chunks_mut(4).for_each(<[f32]>::reverse);
                assert_ne!(image, expected[row], "the fixture's rows are not symmetric");
            }
            assert_eq!(seen[row], image, "image row {row}, mirrored: {mirrored}");
        }
        let rows = batch.image_rows.to_vec1::<u32>().unwrap();
        let (ids, plain_ids) = (
            batch.questions.to_vec2::<u32>().unwrap(),
            plain.questions.to_vec2::<u32>().unwrap(),
        );
        let mut swapped = 0;
        for (q, &row) in rows.iter().enumerate() {
            let expected: Vec<u32> = if batch.mirrored[row as usize] {
                plain_ids[q].iter().map(|&t| mirror(seed).swap(t)).collect()
            } else {
                plain_ids[q].clone()
            };
            assert_eq!(ids[q], expected, "question {q}");
            swapped += usize::from(ids[q] != plain_ids[q]);
        }
        assert!(swapped > 0, "some mirrored question holds left or right");
    }

    /// A feature file whose row i is filled with i + 0.5 in channel 0 and -(i + 0.5) in
    /// channel 1, for `rows` images of 2 x 3 x 2 maps.
    fn feature_file(dir: &std::path::Path, rows: usize) -> Arc<FeatureFile> {
        use crate::features::{write_npy, FeatureDType};
        let values: Vec<f32> = (0..rows)
            .flat_map(|i| {
                let v = i as f32 + 0.5;
                [v; 6].into_iter().chain([-v; 6])
            })
            .collect();
        let path = dir.join("val_features.npy");
        write_npy(&path, &[rows, 2, 3, 2], FeatureDType::F32, &values).unwrap();
        Arc::new(FeatureFile::open(&path).unwrap())
    }

    #[test]
    fn feature_batches_read_each_questions_image_row() {
        let (root, set, _) = fixture();
        let features = feature_file(root.path(), 3);
        let b = Batcher::with_features(set.clone(), features, BatchConfig::default()).unwrap();
        let positions = [5, 0, 4, 3];
        let batch = b.batch(&positions).unwrap();
        assert_eq!(
            batch.images.dims(),
            [3, 2, 3, 2],
            "questions 0 and 3 share image 0"
        );
        assert_eq!(batch.image_rows.to_vec1::<u32>().unwrap(), [0, 1, 2, 1]);
        let maps = batch
            .question_images()
            .unwrap()
            .flatten_from(1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        assert_eq!(maps.len(), positions.len());
        for (map, &q) in maps.iter().zip(&positions) {
            let v = set.image_index[q] as f32 + 0.5;
            assert_eq!(map[..6], [v; 6], "question {q}");
            assert_eq!(map[6..], [-v; 6], "question {q}");
        }
    }

    #[test]
    fn features_cannot_be_mirrored() {
        let dir = tempfile::tempdir().unwrap();
        let (_root, set, _cache) = fixture();
        let config = BatchConfig {
            mirror: Some(Mirror {
                left: 4,
                right: 5,
                seed: 0,
            }),
            ..BatchConfig::default()
        };
        let err = Batcher::with_features(set, feature_file(dir.path(), 3), config)
            .err()
            .unwrap();
        assert!(matches!(err, BatchError::MirrorNeedsPixels), "{err}");
    }

    #[test]
    fn a_feature_file_with_too_few_rows_is_refused() {
        let (root, set, _) = fixture();
        let features = feature_file(root.path(), 2);
        let err = Batcher::with_features(set, features, BatchConfig::default())
            .err()
            .expect("image_index 2 has no row")
            .to_string();
        assert!(
            err.contains("val_features.npy: question 2 is about image_index 2, but the file holds features of 2 images"),
            "{err}"
        );
    }

    #[test]
    fn unanswered_questions_give_no_answer_tensor() {
        let (_root, set, cache) = fixture();
        let mut set = (*set).clone();
        set.answers[2] = NO_ANSWER;
        let b = Batcher::new(Arc::new(set), cache, Normalization::UNIT, BatchConfig::default()).unwrap();
        assert!(b.batch(&[0, 2]).unwrap().answers.is_none());
        assert!(b.batch(&[0, 1]).unwrap().answers.is_some());
    }

    #[test]
    fn inconsistent_inputs_are_errors_not_panics() {
        let (_root, set, cache) = fixture();
        let mut bad = (*set).clone();
        bad.image_slot[4] = 9;
        let err = Batcher::new(
            Arc::new(bad),
            cache.clone(),
            Normalization::UNIT,
            BatchConfig::default(),
        )
        .err()
        .unwrap();
        assert!(err.to_string().contains("question 4"), "{err}");
        let zero = BatchConfig {
            batch_size: 0,
            ..BatchConfig::default()
        };
        assert!(Batcher::new(set, cache, Normalization::UNIT, zero).is_err());
    }

    #[test]
    fn a_panic_building_a_batch_is_an_error_naming_the_batch() {
        let (_root, set, cache) = fixture();
        // Question 4's token range runs past the token array: slicing it panics.
        let mut bad = (*set).clone();
        bad.offsets[5] = 10_000;
        let config = BatchConfig {
            batch_size: 3,
            shuffle: false,
            ..BatchConfig::default()
        };
        let b = Batcher::new(Arc::new(bad), cache, Normalization::UNIT, config).unwrap();
        let epoch: Vec<_> = b.epoch(0).collect();
        assert_eq!(epoch.len(), 2, "batch 0, then the error in place of batch 1");
        assert!(epoch[0].is_ok());
        let err = epoch[1].as_ref().expect_err("batch 1 failed").to_string();
        assert!(
            err.contains("panicked building batch 1 of 3 (questions at positions 3, 4, 5)"),
            "{err}"
        );
        assert!(err.contains("out of range"), "the panic's message: {err}");
    }

    #[test]
    fn stopping_early_does_not_hang() {
        let (_root, b) = batcher(1, 1, false);
        let mut epoch = b.epoch(0);
        assert!(epoch.next().unwrap().is_ok());
        drop(epoch);
    }
}
