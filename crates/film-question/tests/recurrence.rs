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
