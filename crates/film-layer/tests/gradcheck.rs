//! Finite differences in f64 against the fused backward: the gradients are the
//! derivatives of the forward, not merely equal to another implementation's.

mod common;

use candle_core::{DType, Result, Tensor, Var};
use common::Rng;
use film_layer::{film_fused, ChannelLayout, FilmConfig};

/// loss(x, γ, β, r) = Σ w ⊙ relu?(γ ⊙ x + β) + r, as an f64 number.
fn loss(inputs: &[Tensor], weights: &Tensor, layout: ChannelLayout, relu: bool) -> Result<f64> {
    let y = film_fused(
        &inputs[0],
        &inputs[1],
        Some(&inputs[2]),
        Some(&inputs[3]),
        &FilmConfig::as_given(layout, relu),
    )?;
    (y * weights)?.sum_all()?.to_scalar::<f64>()
}

fn check(shape: &[usize], layout: ChannelLayout, relu: bool, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let channels = match layout {
        ChannelLayout::ChannelsFirst => shape[1],
        ChannelLayout::ChannelsLast => shape[shape.len() - 1],
    };
    let param = [shape[0], channels];
    let f64_of = |t: Tensor| t.to_dtype(DType::F64);
    let inputs = vec![
        f64_of(rng.tensor(shape, 2.0)?)?,
        f64_of(rng.tensor(&param, 1.5)?)?,
        f64_of(rng.tensor(&param, 1.0)?)?,
        f64_of(rng.tensor(shape, 1.0)?)?,
    ];
    let weights = f64_of(rng.tensor(shape, 1.0)?)?;

    let vars: Vec<Var> = inputs.iter().map(Var::from_tensor).collect::<Result<_>>()?;
    let y = film_fused(
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        Some(vars[2].as_tensor()),
        Some(vars[3].as_tensor()),
        &FilmConfig::as_given(layout, relu),
    )?;
    let grads = (y * &weights)?.sum_all()?.backward()?;

    let eps = 1e-6;
    for (which, var) in vars.iter().enumerate() {
        let analytic = grads
            .get(var.as_tensor())
            .expect("gradient")
            .flatten_all()?
            .to_vec1::<f64>()?;
        let values = inputs[which].flatten_all()?.to_vec1::<f64>()?;
        for (i, want) in analytic.iter().enumerate() {
            let nudged = |delta: f64| -> Result<f64> {
                let mut v = values.clone();
                v[i] += delta;
                let mut moved = inputs.clone();
                moved[which] = Tensor::from_vec(v, inputs[which].shape(), inputs[which].device())?;
                loss(&moved, &weights, layout, relu)
            };
            let numeric = (nudged(eps)? - nudged(-eps)?) / (2.0 * eps);
            assert!(
                (numeric - want).abs() <= 1e-6 * (1.0 + want.abs()),
                "{layout} relu={relu}: d/d(input {which})[{i}] analytic {want} vs numeric {numeric}"
            );
        }
    }
    Ok(())
}

#[test]
fn channels_first_gradients_match_finite_differences() -> Result<()> {
    check(&[2, 3, 4, 5], ChannelLayout::ChannelsFirst, false, 1)?;
    check(&[2, 3, 4, 5], ChannelLayout::ChannelsFirst, true, 2)?;
    check(&[3, 2, 19], ChannelLayout::ChannelsFirst, true, 3)
}

#[test]
fn channels_last_gradients_match_finite_differences() -> Result<()> {
    check(&[2, 4, 3], ChannelLayout::ChannelsLast, false, 4)?;
    check(&[2, 3, 2, 5], ChannelLayout::ChannelsLast, true, 5)
}
