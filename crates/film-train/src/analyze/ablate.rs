//! Test-time ablations of the FiLM parameters (the paper's ablation study and Figure 7):
//! γ or β replaced by its training-set mean, per block and channel, or perturbed by
//! Gaussian noise. Each turns a batch's raw generator output into the raw output that
//! makes the blocks apply the ablated values.

use film_layer::GammaMode;
use rand::{Rng, SeedableRng};

use super::gamma::raw_for_gamma;
use super::params::{AppliedParams, FilmShape, ParamMeans};

/// Which of the pair an ablation touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    Gamma,
    Beta,
}

impl Target {
    pub fn symbol(self) -> &'static str {
        match self {
            Target::Gamma => "γ",
            Target::Beta => "β",
        }
    }
}

/// One way to run the network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ablation {
    /// The model as trained.
    None,
    /// Every question gets the training-set mean of the target, per block and channel.
    TrainingMean(Target),
    /// Gaussian noise of standard deviation `sigma` added to the applied target.
    Noise(Target, f64),
}

impl Ablation {
    pub fn describe(&self) -> String {
        match self {
            Ablation::None => "none (the trained model)".into(),
            Ablation::TrainingMean(t) => format!("{} replaced by its training mean", t.symbol()),
            Ablation::Noise(t, sigma) => format!("Gaussian noise σ = {sigma} on {}", t.symbol()),
        }
    }

    pub fn target(&self) -> Option<Target> {
        match self {
            Ablation::None => None,
            Ablation::TrainingMean(t) | Ablation::Noise(t, _) => Some(*t),
        }
    }
}

/// Applies ablations to batches; noise comes from one seeded generator per ablation, so a
/// run of `analyze` is reproducible.
pub struct Ablator {
    shape: FilmShape,
    mode: GammaMode,
    means: ParamMeans,
    rng: rand::rngs::StdRng,
}

impl Ablator {
    pub fn new(shape: FilmShape, mode: GammaMode, means: ParamMeans, seed: u64) -> Ablator {
        Ablator {
            shape,
            mode,
            means,
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// The raw (N, K, 2C) parameters, row-major, that make the blocks apply the
    /// ablated values of `params`.
    pub fn raw(&mut self, ablation: Ablation, params: &AppliedParams) -> Vec<f32> {
        let mut raw = params.raw.clone();
        let c = self.shape.channels;
        let per_question = self.shape.blocks.len() * c;
        for q in 0..params.batch {
            for (b, &k) in self.shape.blocks.iter().enumerate() {
                let base = (q * self.shape.all_blocks + k) * 2 * c;
                let at = q * per_question + b * c;
                for ch in 0..c {
                    match ablation {
                        Ablation::None => {}
                        Ablation::TrainingMean(Target::Gamma) => {
                            raw[base + ch] = raw_for_gamma(self.mode, self.means.gamma[b * c + ch]);
                        }
                        Ablation::TrainingMean(Target::Beta) => {
                            raw[base + c + ch] = self.means.beta[b * c + ch];
                        }
                        Ablation::Noise(Target::Gamma, sigma) => {
                            let noisy = params.gamma[at + ch] + (sigma * gaussian(&mut self.rng)) as f32;
                            raw[base + ch] = raw_for_gamma(self.mode, noisy);
                        }
                        Ablation::Noise(Target::Beta, sigma) => {
                            raw[base + c + ch] += (sigma * gaussian(&mut self.rng)) as f32;
                        }
                    }
                }
            }
        }
        raw
    }
}

/// A standard normal sample (Box–Muller; 1 - u keeps the logarithm finite).
fn gaussian(rng: &mut impl Rng) -> f64 {
    let (u, v): (f64, f64) = (rng.random(), rng.random());
    (-2.0 * (1.0 - u).ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(mode: GammaMode) -> (Ablator, AppliedParams) {
        // Two blocks of which only block 1 is conditioned, two channels, one question.
        let shape = FilmShape {
            blocks: vec![1],
            all_blocks: 2,
            channels: 2,
        };
        let means = ParamMeans {
            gamma: vec![0.5, 2.0],
            beta: vec![-1.0, 3.0],
            questions: 10,
        };
        let params = AppliedParams {
            // [block 0: Δγ Δγ β β][block 1: Δγ Δγ β β]
            raw: vec![9.0, 9.0, 9.0, 9.0, 0.25, -0.5, 0.1, 0.2],
            gamma: vec![1.25, 0.5],
            beta: vec![0.1, 0.2],
            batch: 1,
        };
        (Ablator::new(shape, mode, means, 0), params)
    }

    #[test]
    fn means_replace_the_applied_values_of_conditioned_blocks() {
        let (mut ablator, params) = setup(GammaMode::OnePlusDelta);
        let raw = ablator.raw(Ablation::TrainingMean(Target::Gamma), &params);
        // Applied γ 0.5 and 2.0 are raw Δγ -0.5 and 1.0; block 0 is left alone.
        assert_eq!(raw, vec![9.0, 9.0, 9.0, 9.0, -0.5, 1.0, 0.1, 0.2]);
        let raw = ablator.raw(Ablation::TrainingMean(Target::Beta), &params);
        assert_eq!(raw, vec![9.0, 9.0, 9.0, 9.0, 0.25, -0.5, -1.0, 3.0]);
        assert_eq!(ablator.raw(Ablation::None, &params), params.raw);
    }

    #[test]
    fn noise_moves_only_its_target() {
        let (mut ablator, params) = setup(GammaMode::OnePlusDelta);
        let raw = ablator.raw(Ablation::Noise(Target::Beta, 0.5), &params);
        assert_eq!(&raw[..6], &params.raw[..6]);
        assert!(raw[6] != params.raw[6] && raw[7] != params.raw[7]);
        let raw = ablator.raw(Ablation::Noise(Target::Gamma, 0.0), &params);
        for (a, b) in raw.iter().zip(&params.raw) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn gaussian_has_unit_variance() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let samples: Vec<f64> = (0..20_000).map(|_| gaussian(&mut rng)).collect();
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|s| (s - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "mean {mean} var {var}"
        );
    }
}
