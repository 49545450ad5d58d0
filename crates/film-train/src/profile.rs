//! `film-train profile`: where a training step's time goes, on synthetic inputs shaped like
//! the PyTorch reference harness's (`torch_film.py`, kept outside this repository), so the
//! two can be timed side by side without any data. With several questions per image (the
//! `default` preset's shared stem) the stem runs once per image, as in training.

use std::time::Instant;

use anyhow::Result;
use candle_core::{Device, Tensor};
use film_optim::{Adam, AdamConfig};
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::evaluate::loss_and_accuracy;
use crate::model::FilmModel;
use crate::presets::ModelConfig;
use crate::train::{build_model, trainable};

/// The reference harness's synthetic question shapes: vocabulary, answers, padded length
/// and shortest question.
const VOCAB: usize = 93;
const ANSWERS: usize = 32;
const QUESTION_LEN: usize = 46;
const SHORTEST_QUESTION: usize = 10;

/// What to profile.
pub struct ProfileRequest {
    pub model: ModelConfig,
    pub batch: usize,
    /// Questions about each image: the stem sees `batch / questions_per_image` images.
    pub questions_per_image: usize,
    pub learning_rate: f64,
    pub weight_decay: f64,
    pub steps: usize,
    pub warmup: usize,
}

/// Median milliseconds of each phase.
#[derive(Clone, Debug, Serialize)]
pub struct Profile {
    pub batch: usize,
    pub questions_per_image: usize,
    pub steps: usize,
    pub threads: usize,
    /// The whole training step: forward, loss, backward, Adam.
    pub step_ms: f64,
    pub samples_per_s: f64,
    /// Parts of the whole step.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
    /// Cores busy on average over the timed steps: process CPU time over wall time. Below
    /// the thread count, part of the step runs on fewer threads than there are.
    pub step_cores: f64,
    /// Each component run alone on detached inputs.
    pub components: Vec<Component>,
}

/// One component's median forward and backward time and its cores busy (forward and
/// backward together).
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub cores: f64,
}

struct Inputs {
    /// The distinct images, one per `questions_per_image` questions.
    images: Tensor,
    /// The image each question reads: u32 (N,).
    image_rows: Tensor,
    questions: Tensor,
    lengths: Vec<usize>,
    answers: Tensor,
}

fn synthetic_inputs(
    model: &ModelConfig,
    batch: usize,
    questions_per_image: usize,
    device: &Device,
) -> Result<Inputs> {
    if questions_per_image == 0 || !batch.is_multiple_of(questions_per_image) {
        anyhow::bail!(
            "a batch of {batch} questions does not split into images of {questions_per_image} questions each"
        );
    }
    let num_images = batch / questions_per_image;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let (channels, side) = match model.vision.stem {
        film_vision::Stem::Pixels { .. } => (3, model.image_size),
        film_vision::Stem::Features { in_channels } => (in_channels, 14),
    };
    let pixels: Vec<f32> = (0..num_images * channels * side * side)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let lengths: Vec<usize> = (0..batch)
        .map(|_| rng.random_range(SHORTEST_QUESTION..=QUESTION_LEN))
        .collect();
    let tokens: Vec<u32> = lengths
        .iter()
        .flat_map(|&len| (0..QUESTION_LEN).map(move |t| t < len))
        .map(|real| {
            if real {
                rng.random_range(1..VOCAB as u32)
            } else {
                0
            }
        })
        .collect();
    let answers: Vec<u32> = (0..batch).map(|_| rng.random_range(0..ANSWERS as u32)).collect();
    let image_rows: Vec<u32> = (0..batch).map(|i| (i / questions_per_image) as u32).collect();
    Ok(Inputs {
        images: Tensor::from_vec(pixels, (num_images, channels, side, side), device)?,
        image_rows: Tensor::from_vec(image_rows, batch, device)?,
        questions: Tensor::from_vec(tokens, (batch, QUESTION_LEN), device)?,
        lengths,
        answers: Tensor::from_vec(answers, batch, device)?,
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// CPU time this process has used, all threads together, in milliseconds.
fn process_cpu_ms() -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec to write into; the clock id is a constant.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut now) };
    if status != 0 {
        return f64::NAN;
    }
    now.tv_sec as f64 * 1e3 + now.tv_nsec as f64 / 1e6
}

/// Wall clock and process CPU clock started together.
struct Clocks {
    wall: Instant,
    cpu_ms: f64,
}

impl Clocks {
    fn start() -> Self {
        Clocks {
            wall: Instant::now(),
            cpu_ms: process_cpu_ms(),
        }
    }

    /// Average number of cores busy since the start.
    fn cores(&self) -> f64 {
        (process_cpu_ms() - self.cpu_ms) / ms_since(self.wall)
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// One model, its optimizer and a synthetic batch: a training step that can be repeated,
/// for the profile and for the criterion benchmark of the step.
pub struct TrainingStep {
    model: FilmModel,
    adam: Adam,
    inputs: Inputs,
}

/// Milliseconds of the three parts of one step.
pub struct StepTimes {
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optimizer_ms: f64,
}

impl TrainingStep {
    /// `model` with the reference harness's vocabulary and answer count, seed 0, on
    /// `batch` questions about `batch / questions_per_image` images.
    pub fn new(
        model: &ModelConfig,
        batch: usize,
        questions_per_image: usize,
        learning_rate: f64,
        weight_decay: f64,
        device: &Device,
    ) -> Result<Self> {
        let mut config = model.clone();
        config.question.vocab_size = VOCAB;
        config.vision.num_answers = ANSWERS;
        let (model, varmap) = build_model(&config, 0, device)?;
        let adam = Adam::new(trainable(&varmap), AdamConfig::new(learning_rate, weight_decay));
        let inputs = synthetic_inputs(&config, batch, questions_per_image, device)?;
        Ok(TrainingStep { model, adam, inputs })
    }

    /// Forward, loss, backward and Adam on the synthetic batch.
    pub fn run(&mut self) -> Result<StepTimes> {
        let inputs = &self.inputs;
        let start = Instant::now();
        let forward = self.model.forward_shared_t(
            &inputs.images,
            &inputs.image_rows,
            &inputs.questions,
            &inputs.lengths,
            true,
        )?;
        let (loss, _) = loss_and_accuracy(&forward.logits, &inputs.answers)?;
        synchronize(&loss)?;
        let forward_ms = ms_since(start);
        let backward_start = Instant::now();
        let grads = loss.backward()?;
        synchronize(&loss)?;
        let backward_ms = ms_since(backward_start);
        let optimizer_start = Instant::now();
        self.adam.step(&grads)?;
        synchronize(&loss)?;
        Ok(StepTimes {
            forward_ms,
            backward_ms,
            optimizer_ms: ms_since(optimizer_start),
        })
    }
}

/// Waits for the device's queued work, so that wall-clock timestamps mean something on
/// asynchronous devices.
fn synchronize(t: &Tensor) -> Result<()> {
    t.device().synchronize()?;
    Ok(())
}

/// Times `request.steps` training steps (after `warmup`), then each component alone.
pub fn profile(request: &ProfileRequest, device: &Device) -> Result<Profile> {
    let mut step = TrainingStep::new(
        &request.model,
        request.batch,
        request.questions_per_image,
        request.learning_rate,
        request.weight_decay,
        device,
    )?;
    let (mut forward, mut backward, mut optimizer, mut whole) = (vec![], vec![], vec![], vec![]);
    for _ in 0..request.warmup {
        step.run()?;
    }
    let step_clocks = Clocks::start();
    for i in request.warmup..request.warmup + request.steps {
        let times = step.run()?;
        if i >= request.warmup {
            forward.push(times.forward_ms);
            backward.push(times.backward_ms);
            optimizer.push(times.optimizer_ms);
            whole.push(times.forward_ms + times.backward_ms + times.optimizer_ms);
        }
    }
    let step_cores = step_clocks.cores();
    let (model, inputs) = (&step.model, &step.inputs);

    // Each component alone: its inputs detached, so its backward stops at its own inputs.
    let network = &model.network;
    let params = model.film_params(&inputs.questions, &inputs.lengths)?;
    // The blocks read each question's image: the stem's rows picked out per question.
    let stem_out = model
        .trunk_input_t(&inputs.images, true)?
        .index_select(&inputs.image_rows, 0)?
        .detach();
    let blocks_out = network.blocks_t(&stem_out, &params.detach(), true)?;
    type Stage<'a> = Box<dyn Fn() -> candle_core::Result<Tensor> + 'a>;
    let stages: Vec<(&str, Stage)> = vec![
        (
            "question encoder",
            Box::new(|| model.film_params(&inputs.questions, &inputs.lengths)),
        ),
        ("stem", Box::new(|| model.trunk_input_t(&inputs.images, true))),
        (
            "FiLMed blocks",
            Box::new(|| network.blocks_t(&stem_out, &params.detach(), true)),
        ),
        (
            "classifier + loss",
            Box::new(|| {
                let logits = network.classifier_t(&blocks_out.detach(), true)?;
                candle_nn::loss::cross_entropy(&logits, &inputs.answers)
            }),
        ),
    ];
    let mut components = vec![];
    for (name, stage) in &stages {
        let (mut fwd, mut bwd) = (vec![], vec![]);
        let mut clocks = Clocks::start();
        for step in 0..request.warmup + request.steps {
            if step == request.warmup {
                clocks = Clocks::start();
            }
            let start = Instant::now();
            let out = stage()?;
            synchronize(&out)?;
            let fwd_ms = ms_since(start);
            let backward_start = Instant::now();
            out.backward()?;
            synchronize(&out)?;
            if step >= request.warmup {
                fwd.push(fwd_ms);
                bwd.push(ms_since(backward_start));
            }
        }
        components.push(Component {
            name: name.to_string(),
            forward_ms: median(fwd),
            backward_ms: median(bwd),
            cores: clocks.cores(),
        });
    }

    let step_ms = median(whole);
    Ok(Profile {
        batch: request.batch,
        questions_per_image: request.questions_per_image,
        steps: request.steps,
        threads: candle_core::utils::get_num_threads(),
        step_ms,
        samples_per_s: request.batch as f64 / (step_ms / 1e3),
        forward_ms: median(forward),
        backward_ms: median(backward),
        optimizer_ms: median(optimizer),
        step_cores,
        components,
    })
}

impl std::fmt::Display for Profile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let share = |ms: f64| 100.0 * ms / self.step_ms;
        writeln!(
            f,
            "training step, batch {} ({} images of {} questions), {} threads, median of {} steps: \
             {:.1} ms ({:.0} samples/s), {:.2} cores busy",
            self.batch,
            self.batch / self.questions_per_image,
            self.questions_per_image,
            self.threads,
            self.steps,
            self.step_ms,
            self.samples_per_s,
            self.step_cores
        )?;
        writeln!(f, "  {:<22} {:>9} {:>7}", "part of the step", "ms", "share")?;
        for (name, ms) in [
            ("forward + loss", self.forward_ms),
            ("backward", self.backward_ms),
            ("optimizer (Adam)", self.optimizer_ms),
        ] {
            writeln!(f, "  {name:<22} {ms:>9.1} {:>6.1}%", share(ms))?;
        }
        writeln!(
            f,
            "\n  {:<22} {:>9} {:>9} {:>7} {:>7}   (each alone, inputs detached)",
            "component", "fwd ms", "bwd ms", "share", "cores"
        )?;
        for c in &self.components {
            writeln!(
                f,
                "  {:<22} {:>9.1} {:>9.1} {:>6.1}% {:>7.2}",
                c.name,
                c.forward_ms,
                c.backward_ms,
                share(c.forward_ms + c.backward_ms),
                c.cores
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets;

    fn tiny_request(batch: usize, questions_per_image: usize) -> ProfileRequest {
        let preset = presets::by_name("tiny").unwrap();
        ProfileRequest {
            model: preset.model,
            batch,
            questions_per_image,
            learning_rate: 1e-3,
            weight_decay: 0.0,
            steps: 2,
            warmup: 1,
        }
    }

    #[test]
    fn the_stem_sees_one_image_per_group_of_questions() {
        let request = tiny_request(8, 4);
        let step = TrainingStep::new(&request.model, 8, 4, 1e-3, 0.0, &Device::Cpu).unwrap();
        assert_eq!(step.inputs.images.dim(0).unwrap(), 2);
        assert_eq!(
            step.inputs.image_rows.to_vec1::<u32>().unwrap(),
            [0, 0, 0, 0, 1, 1, 1, 1]
        );
        let result = profile(&request, &Device::Cpu).unwrap();
        assert_eq!(result.questions_per_image, 4);
        let names: Vec<_> = result.components.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["question encoder", "stem", "FiLMed blocks", "classifier + loss"]
        );
        assert!(result.step_ms > 0.0 && result.step_ms.is_finite());
        assert!(result.to_string().contains("2 images of 4 questions"));
    }

    #[test]
    fn a_batch_must_split_into_whole_images() {
        let request = tiny_request(6, 4);
        let err = profile(&request, &Device::Cpu).err().unwrap().to_string();
        assert!(
            err.contains("batch of 6 questions") && err.contains("4 questions each"),
            "{err}"
        );
    }
}
