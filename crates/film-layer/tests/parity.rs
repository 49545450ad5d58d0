//! The fused kernels against the reference composition: forward and every gradient, on
//! many shapes, both layouts, all float dtypes, with and without ReLU, β and residual.

mod common;

use candle_core::{DType, Result, Tensor, Var};
use common::{rel_err, tolerance, Rng};
use film_layer::{film_fused, reference::film_composed, ChannelLayout, FilmConfig};

/// What one parity case computes.
#[derive(Clone, Copy, Debug)]
struct Case<'a> {
    shape: &'a [usize],
    layout: ChannelLayout,
    dtype: DType,
    relu: bool,
    with_beta: bool,
    with_residual: bool,
}

/// Output and gradients (y, dx, dγ, dβ, dresidual) of loss = Σ y ⊙ w.
struct Outcome {
    y: Tensor,
    grads: Vec<(&'static str, Tensor)>,
}

fn param_shape(case: &Case) -> (usize, usize) {
    let channels = match case.layout {
        ChannelLayout::ChannelsFirst => case.shape[1],
        ChannelLayout::ChannelsLast => case.shape[case.shape.len() - 1],
    };
    (case.shape[0], channels)
}

/// Runs `case` on inputs of `dtype` with the fused op when `fused`, else the reference.
fn run(case: &Case, inputs: &[Tensor; 5], dtype: DType, fused: bool) -> Result<Outcome> {
    let vars: Vec<Var> = inputs[..4]
        .iter()
        .map(|t| Var::from_tensor(&t.to_dtype(dtype)?))
        .collect::<Result<_>>()?;
    let weights = inputs[4].to_dtype(dtype)?;
    let (x, gamma, beta, residual) = (
        vars[0].as_tensor(),
        vars[1].as_tensor(),
        vars[2].as_tensor(),
        vars[3].as_tensor(),
    );
    let beta = case.with_beta.then_some(beta);
    let residual = case.with_residual.then_some(residual);
    let y = if fused {
        film_fused(
            x,
            gamma,
            beta,
            residual,
            &FilmConfig::as_given(case.layout, case.relu),
        )?
    } else {
        film_composed(x, gamma, beta, case.layout, case.relu, residual)?
    };
    let loss = (&y * &weights)?.to_dtype(DType::F64)?.sum_all()?;
    let store = loss.backward()?;
    let mut grads = vec![
        ("dx", store.get(x).expect("dx").clone()),
        ("dgamma", store.get(gamma).expect("dgamma").clone()),
    ];
    if let Some(beta) = beta {
        grads.push(("dbeta", store.get(beta).expect("dbeta").clone()));
    }
    if let Some(residual) = residual {
        grads.push(("dresidual", store.get(residual).expect("dresidual").clone()));
    }
    Ok(Outcome { y, grads })
}

fn check(case: Case, seed: u64) -> Result<()> {
    let mut rng = Rng::new(seed);
    let (n, c) = param_shape(&case);
    let inputs = [
        rng.tensor(case.shape, 2.0)?,
        rng.tensor(&[n, c], 1.5)?,
        rng.tensor(&[n, c], 1.0)?,
        rng.tensor(case.shape, 1.0)?,
        rng.tensor(case.shape, 1.0)?,
    ];
    // Half-precision results are compared with the reference computed in f32 on the same
    // rounded inputs: the fused kernels compute in f32 too, so only storage rounding differs.
    let reference_dtype = match case.dtype {
        DType::F16 | DType::BF16 => DType::F32,
        other => other,
    };
    let rounded: Vec<Tensor> = inputs
        .iter()
        .map(|t| t.to_dtype(case.dtype))
        .collect::<Result<_>>()?;
    let rounded: [Tensor; 5] = rounded.try_into().expect("five inputs");
    let fused = run(&case, &rounded, case.dtype, true)?;
    let reference = run(&case, &rounded, reference_dtype, false)?;
    let tol = tolerance(case.dtype);
    assert_eq!(fused.y.dtype(), case.dtype, "{case:?}: output dtype");
    assert_eq!(fused.y.dims(), case.shape, "{case:?}: output shape");
    let err = rel_err(&fused.y, &reference.y)?;
    assert!(err <= tol, "{case:?}: forward rel. error {err:e} > {tol:e}");
    for ((name, got), (_, want)) in fused.grads.iter().zip(&reference.grads) {
        let err = rel_err(got, want)?;
        assert!(err <= tol, "{case:?}: {name} rel. error {err:e} > {tol:e}");
    }
    Ok(())
}

const CHANNELS_FIRST: &[&[usize]] = &[
    &[1, 1],
    &[2, 5],
    &[1, 1, 1],
    &[2, 3, 5, 7],
    &[3, 8, 33],
    &[4, 16, 14, 14],
    &[2, 4, 3, 5, 6],
    // Over the multi-threading threshold, with a row count that does not split evenly.
    &[5, 13, 37, 29],
    &[8, 64, 16, 16],
];

const CHANNELS_LAST: &[&[usize]] = &[
    &[1, 1],
    &[3, 7],
    &[2, 5, 7],
    &[4, 9, 9, 16],
    &[3, 1000, 24],
    &[8, 64, 130],
];

fn sweep(layout: ChannelLayout, shapes: &[&[usize]], dtypes: &[DType]) -> Result<()> {
    let mut seed = 0;
    for shape in shapes {
        for &dtype in dtypes {
            for (relu, with_beta, with_residual) in [
                (false, true, false),
                (true, true, true),
                (true, false, false),
                (false, true, true),
            ] {
                seed += 1;
                check(
                    Case {
                        shape,
                        layout,
                        dtype,
                        relu,
                        with_beta,
                        with_residual,
                    },
                    seed,
                )?;
            }
        }
    }
    Ok(())
}

#[test]
fn channels_first_f32_f64() -> Result<()> {
    sweep(
        ChannelLayout::ChannelsFirst,
        CHANNELS_FIRST,
        &[DType::F32, DType::F64],
    )
}

#[test]
fn channels_first_half() -> Result<()> {
    sweep(
        ChannelLayout::ChannelsFirst,
        CHANNELS_FIRST,
        &[DType::F16, DType::BF16],
    )
}

#[test]
fn channels_last_f32_f64() -> Result<()> {
    sweep(
        ChannelLayout::ChannelsLast,
        CHANNELS_LAST,
        &[DType::F32, DType::F64],
    )
}

#[test]
fn channels_last_half() -> Result<()> {
    sweep(
        ChannelLayout::ChannelsLast,
        CHANNELS_LAST,
        &[DType::F16, DType::BF16],
    )
}

/// Views with strides and offsets: a transposed feature map, γ and β cut out of a
/// generator output, a broadcast residual.
#[test]
fn non_contiguous_inputs() -> Result<()> {
    let mut rng = Rng::new(99);
    for layout in [ChannelLayout::ChannelsFirst, ChannelLayout::ChannelsLast] {
        // (N, C, W, H) transposed to (N, C, H, W) = (3, 6, 5, 6): six channels in either
        // layout, so the same γ and β serve both.
        let base = rng.tensor(&[3, 6, 6, 5], 2.0)?;
        let x = base.transpose(2, 3)?;
        assert!(!x.is_contiguous());
        let channels = 6;
        let generator = rng.tensor(&[3, 2, 2 * channels], 1.0)?;
        let pairs = film_layer::split_film_params(&generator)?;
        let (gamma, beta) = &pairs[1];
        let residual = rng.tensor(&[1, 6, 5, 6], 1.0)?.broadcast_as(x.shape())?;
        let fused = film_fused(
            &x,
            gamma,
            Some(beta),
            Some(&residual),
            &FilmConfig::as_given(layout, true),
        )?;
        let want = film_composed(
            &x.contiguous()?,
            &gamma.contiguous()?,
            Some(&beta.contiguous()?),
            layout,
            true,
            Some(&residual.contiguous()?),
        )?;
        let err = rel_err(&fused, &want)?;
        assert!(err <= 1e-6, "{layout}: rel. error {err:e}");
    }
    Ok(())
}
