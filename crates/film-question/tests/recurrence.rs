//! The fused GRU recurrence against the step-by-step candle composition: hidden states and
//! every gradient (inputs, both weights, both biases) on random data of several shapes.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use film_question::Gru;

fn max_relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
}

fn check(batch: usize, steps: usize, input_dim: usize, hidden: usize, lengths: &[usize]) -> Result<()> {
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let gru = Gru::new(
        input_dim,
        hidden,
        VarBuilder::from_varmap(&varmap, DType::F32, &dev),
    )?;
    let inputs = Var::from_tensor(&Tensor::randn(0f32, 1.0, (batch, steps, input_dim), &dev)?)?;
    // A random weighting of the outputs, so every state's gradient differs.
    let weights = Tensor::randn(0f32, 1.0, (batch, hidden), &dev)?;

    let fused = gru.last_states(inputs.as_tensor(), lengths)?;
    let reference = gru.last_states_reference(inputs.as_tensor(), lengths)?;
    let err = max_relative_error(&fused, &reference)?;
    assert!(
        err < 1e-5,
        "states differ by {err} (batch {batch}, steps {steps}, hidden {hidden})"
    );

    let fused_grads = (fused * &weights)?.sum_all()?.backward()?;
    let reference_grads = (reference * &weights)?.sum_all()?.backward()?;
    let mut named: Vec<(String, Tensor)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
        .collect();
    named.push(("inputs".into(), inputs.as_tensor().clone()));
    for (name, tensor) in named {
        let f = fused_grads.get(&tensor).expect("fused gradient");
        let r = reference_grads.get(&tensor).expect("reference gradient");
        let err = max_relative_error(f, r)?;
        assert!(
            err < 1e-4,
            "d{name} differs by {err} (batch {batch}, steps {steps}, hidden {hidden})"
        );
    }
    Ok(())
}

#[test]
fn fused_recurrence_matches_the_composition() -> Result<()> {
    check(1, 1, 3, 4, &[1])?;
    check(2, 5, 3, 4, &[5, 2])?;
    check(5, 9, 7, 16, &[9, 1, 4, 9, 6])?;
    check(16, 12, 8, 33, &[12; 16])
}

/// The op with each sequence's length skips the steps past it: within a length it gives
/// the states and gradients of the op run through the padding, and past it the state stays.
#[test]
fn steps_past_a_sequence_are_skipped_and_its_state_kept() -> Result<()> {
    use film_question::recurrence::gru_layer;
    let dev = Device::Cpu;
    let (steps, batch, input, hidden) = (7, 5, 3, 10);
    let lengths = [7, 2, 5, 1, 7];
    let inputs = Var::randn(0f32, 1.0, (steps, batch, input), &dev)?;
    let weight_hh = Var::randn(0f32, 0.3, (3 * hidden, hidden), &dev)?;
    let packed = Var::randn(0f32, 0.3, 3 * hidden * (input + 2), &dev)?;
    let skipped = gru_layer(&inputs, &weight_hh, &packed, &lengths)?;
    let padded = gru_layer(&inputs, &weight_hh, &packed, &[steps; 5])?;

    let (skipped_rows, padded_rows) = (skipped.to_vec3::<f32>()?, padded.to_vec3::<f32>()?);
    for (row, &length) in lengths.iter().enumerate() {
        for t in 0..steps {
            let got = &skipped_rows[t][row];
            let want = if t < length {
                &padded_rows[t][row]
            } else {
                &skipped_rows[length - 1][row]
            };
            for (g, w) in got.iter().zip(want) {
                assert!((g - w).abs() <= 1e-6, "row {row} step {t}: {g} against {w}");
            }
        }
    }
    // The padded states differ from the kept ones, so the check above is not vacuous.
    assert_ne!(padded_rows[6][1], skipped_rows[6][1]);

    // A loss on each sequence's last state: the same gradients whether the padding ran.
    let last = |states: &Tensor| -> Result<Tensor> {
        let index: Vec<u32> = lengths
            .iter()
            .enumerate()
            .map(|(i, &l)| ((l - 1) * batch + i) as u32)
            .collect();
        let weights = Tensor::arange(0f32, (batch * hidden) as f32, &dev)?.reshape((batch, hidden))?;
        states
            .reshape((steps * batch, hidden))?
            .index_select(&Tensor::new(index, &dev)?, 0)?
            .mul(&weights.sin()?)?
            .sum_all()
    };
    let skipped_grads = last(&skipped)?.backward()?;
    let padded_grads = last(&padded)?.backward()?;
    for (name, var) in [
        ("inputs", &inputs),
        ("weight_hh", &weight_hh),
        ("packed", &packed),
    ] {
        let err = max_relative_error(
            skipped_grads.get(var).expect("gradient"),
            padded_grads.get(var).expect("gradient"),
        )?;
        assert!(err < 1e-5, "d{name} differs by {err}");
    }
    // A state's gradient past its length reaches the last step it ran.
    let tail = skipped.narrow(0, 6, 1)?.narrow(1, 1, 1)?.sum_all()?.backward()?;
    let at_length = skipped.narrow(0, 1, 1)?.narrow(1, 1, 1)?.sum_all()?.backward()?;
    let err = max_relative_error(
        tail.get(&weight_hh).expect("gradient"),
        at_length.get(&weight_hh).expect("gradient"),
    )?;
    assert!(err < 1e-6, "a kept state's gradient differs by {err}");
    Ok(())
}
