//! How the raw generator output becomes the scale γ: the paper's ablations (Table 2).

use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::error::Result;

/// Maps a generator's raw output to the FiLM scale γ. Applied to the small (N, C)
/// parameter matrix, never to the feature map, so its cost is negligible.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "kebab-case")
)]
pub enum GammaMode {
    /// γ as given.
    Plain,
    /// γ = 1 + Δγ: the generator predicts a change from identity, so an untrained
    /// generator leaves the features as they are (the FiLM reference code's default).
    #[default]
    OnePlusDelta,
    /// γ = sigmoid(raw) in (0, 1): scaling can only shrink features.
    Sigmoid,
    /// γ = tanh(raw) in (-1, 1).
    Tanh,
    /// γ = exp(raw) > 0: no feature can be negated.
    Exp,
    /// γ = 1 whatever the generator says: FiLM reduces to a bias.
    Fixed,
}

impl GammaMode {
    /// All modes, in the order the paper's ablation table lists them.
    pub const ALL: [GammaMode; 6] = [
        GammaMode::Plain,
        GammaMode::OnePlusDelta,
        GammaMode::Sigmoid,
        GammaMode::Tanh,
        GammaMode::Exp,
        GammaMode::Fixed,
    ];

    /// γ for the raw generator output `raw` (any shape).
    pub fn apply(self, raw: &Tensor) -> Result<Tensor> {
        Ok(match self {
            GammaMode::Plain => raw.clone(),
            GammaMode::OnePlusDelta => (raw + 1.0)?,
            GammaMode::Sigmoid => (raw.neg()?.exp()? + 1.0)?.recip()?,
            GammaMode::Tanh => raw.tanh()?,
            GammaMode::Exp => raw.exp()?,
            GammaMode::Fixed => raw.ones_like()?,
        })
    }

    /// The name used on command lines and in configs.
    pub fn name(self) -> &'static str {
        match self {
            GammaMode::Plain => "plain",
            GammaMode::OnePlusDelta => "one-plus-delta",
            GammaMode::Sigmoid => "sigmoid",
            GammaMode::Tanh => "tanh",
            GammaMode::Exp => "exp",
            GammaMode::Fixed => "fixed",
        }
    }
}

impl fmt::Display for GammaMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for GammaMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        GammaMode::ALL
            .into_iter()
            .find(|mode| mode.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = GammaMode::ALL.iter().map(|m| m.name()).collect();
                format!("unknown gamma mode {s:?}: expected one of {}", names.join(", "))
            })
    }
}
