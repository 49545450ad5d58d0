//! From the γ a block applies back to the generator's raw output. Test-time ablations
//! change the applied γ (its training mean, or γ plus noise, as the paper does), but the
//! network takes raw generator outputs and applies the run's γ parametrisation itself.

use film_layer::GammaMode;

/// How close to the edge of an open range (sigmoid's (0, 1), tanh's (-1, 1), exp's
/// (0, ∞)) a target γ is moved before inverting, so the raw value stays finite.
const EDGE: f32 = 1e-6;

/// The raw generator output that `mode` turns into `gamma`. A γ outside the mode's range
/// (noise can push it there) is first moved just inside it: the closest γ the
/// parametrisation can produce. `Fixed` ignores its input, so any raw value will do.
pub fn raw_for_gamma(mode: GammaMode, gamma: f32) -> f32 {
    match mode {
        GammaMode::Plain => gamma,
        GammaMode::OnePlusDelta => gamma - 1.0,
        GammaMode::Sigmoid => {
            let g = gamma.clamp(EDGE, 1.0 - EDGE);
            (g / (1.0 - g)).ln()
        }
        GammaMode::Tanh => gamma.clamp(-1.0 + EDGE, 1.0 - EDGE).atanh(),
        GammaMode::Exp => gamma.max(EDGE).ln(),
        GammaMode::Fixed => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    #[test]
    fn inverts_every_parametrisation() {
        let raw = [-2.5f32, -0.3, 0.0, 0.7, 1.9];
        let t = Tensor::new(&raw, &Device::Cpu).unwrap();
        for mode in GammaMode::ALL {
            if mode == GammaMode::Fixed {
                continue;
            }
            let applied = mode.apply(&t).unwrap().to_vec1::<f32>().unwrap();
            for (&r, &g) in raw.iter().zip(&applied) {
                let back = raw_for_gamma(mode, g);
                assert!((back - r).abs() < 1e-3, "{mode}: raw {r} -> γ {g} -> raw {back}");
            }
        }
    }

    #[test]
    fn out_of_range_targets_stay_finite() {
        for (mode, g) in [
            (GammaMode::Sigmoid, 1.5),
            (GammaMode::Sigmoid, -0.2),
            (GammaMode::Tanh, -3.0),
            (GammaMode::Exp, -1.0),
        ] {
            assert!(raw_for_gamma(mode, g).is_finite(), "{mode} at {g}");
        }
    }
}
