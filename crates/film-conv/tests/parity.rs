//! The fast kernels against candle's own conv2d and autograd, on random
//! inputs for every shape family of the FiLM trunk, including odd sizes,
//! batch 1, uneven thread splits and multi-band unfolding.

use candle_core::{DType, Device, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use film_conv::{fast, reference, Conv2d, Conv2dConfig, ConvParams};

/// Deterministic values in [-1, 1) (xorshift), so a failure reproduces.
fn random(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    let data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, &Device::Cpu)
}

/// max |a - b| / max |b|: accumulation order differs between the paths, so
/// agreement is to rounding, relative to the tensor's scale.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?;
    Ok(diff / scale.max(f32::MIN_POSITIVE))
}

const TOLERANCE: f32 = 1e-4;

struct Case {
    name: &'static str,
    x: [usize; 4],
    out_channels: usize,
    kernel: usize,
    params: ConvParams,
    bias: bool,
}

fn case(
    name: &'static str,
    x: [usize; 4],
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
) -> Case {
    Case {
        name,
        x,
        out_channels,
        kernel,
        params: ConvParams { stride, padding },
        bias,
    }
}

fn check(c: &Case, seed: u64) -> Result<()> {
    check_with(c, seed, false)
}

/// [`check`] of `relu(conv2d(..))`: the fused epilogue against candle's conv2d and ReLU.
fn check_relu(c: &Case, seed: u64) -> Result<()> {
    check_with(c, seed, true)
}

fn check_with(c: &Case, seed: u64, relu: bool) -> Result<()> {
    let [_, in_channels, _, _] = c.x;
    let x = Var::from_tensor(&random(&c.x, seed)?)?;
    let w_shape = [c.out_channels, in_channels, c.kernel, c.kernel];
    let scale = 1.0 / ((in_channels * c.kernel * c.kernel) as f64).sqrt();
    let w = Var::from_tensor(&(random(&w_shape, seed + 1)? * scale)?)?;
    let b = Var::from_tensor(&random(&[c.out_channels], seed + 2)?)?;
    let b_arg = c.bias.then_some(b.as_tensor());

    let (y_fast, y_ref) = if relu {
        (
            fast::conv2d_relu(&x, &w, b_arg, c.params)?,
            reference::conv2d(&x, &w, b_arg, c.params)?.relu()?,
        )
    } else {
        (
            fast::conv2d(&x, &w, b_arg, c.params)?,
            reference::conv2d(&x, &w, b_arg, c.params)?,
        )
    };
    let err = rel_err(&y_fast, &y_ref)?;
    assert!(err < TOLERANCE, "{}: forward rel err {err}", c.name);

    // A random upstream gradient, so every output position weighs differently.
    let r = random(y_ref.dims(), seed + 3)?;
    let g_fast = (y_fast * &r)?.sum_all()?.backward()?;
    let g_ref = (y_ref * &r)?.sum_all()?.backward()?;
    let mut params: Vec<(&str, &Var)> = vec![("input", &x), ("weight", &w)];
    if c.bias {
        params.push(("bias", &b));
    }
    for (what, v) in params {
        let fast = g_fast
            .get(v)
            .unwrap_or_else(|| panic!("{}: no fast {what} gradient", c.name));
        let reference = g_ref.get(v).expect("reference gradient");
        let err = rel_err(fast, reference)?;
        assert!(err < TOLERANCE, "{}: {what} gradient rel err {err}", c.name);
    }
    if !c.bias {
        assert!(
            g_fast.get(&b).is_none(),
            "{}: gradient for an unused bias",
            c.name
        );
    }
    Ok(())
}

#[test]
fn pointwise_1x1() -> Result<()> {
    check(&case("1x1 coords", [3, 130, 7, 5], 128, 1, 1, 0, true), 10)?;
    check(&case("1x1 batch 1", [1, 17, 14, 14], 9, 1, 1, 0, false), 11)?;
    // More output channels than patch elements: the weight gradient is accumulated in its
    // plain C_out x K layout rather than transposed (the layers above take the other).
    check(&case("1x1 widening", [3, 16, 5, 6], 48, 1, 1, 0, true), 12)?;
    check(
        &case("1x1 widening batch 1", [1, 16, 5, 6], 48, 1, 1, 0, false),
        13,
    )
}

#[test]
fn three_by_three_same() -> Result<()> {
    check(&case("3x3 odd", [2, 13, 9, 7], 11, 3, 1, 1, true), 20)?;
    check(&case("3x3 batch 1", [1, 32, 14, 14], 32, 3, 1, 1, false), 21)?;
    check(&case("3x3 batch 5", [5, 8, 6, 11], 6, 3, 1, 1, true), 22)?;
    // Stride 1 without padding: the input gradient's adjoint convolution
    // pads by 2.
    check(&case("3x3 unpadded", [2, 4, 7, 6], 5, 3, 1, 0, true), 23)
}

#[test]
fn four_by_four_stride_two() -> Result<()> {
    // Odd input sizes: the last input row/column is read by no window.
    check(&case("4x4 s2 odd", [2, 3, 17, 15], 16, 4, 2, 1, true), 30)?;
    check(&case("4x4 s2 batch 1", [1, 16, 8, 8], 8, 4, 2, 1, false), 31)?;
    check(&case("4x4 s2 batch 3", [3, 5, 12, 10], 7, 4, 2, 1, false), 32)?;
    // Stride 3, with a kernel wider than the stride and one narrower (some input rows
    // and columns then receive no gradient).
    check(&case("5x5 s3", [2, 4, 13, 10], 6, 5, 3, 2, true), 33)?;
    check(&case("2x2 s3", [2, 4, 11, 8], 5, 2, 3, 0, false), 34)
}

#[test]
fn relu_epilogue() -> Result<()> {
    check_relu(&case("relu 1x1 coords", [3, 66, 8, 8], 64, 1, 1, 0, true), 50)?;
    check_relu(&case("relu 1x1 batch 1", [1, 17, 5, 7], 9, 1, 1, 0, false), 51)?;
    check_relu(&case("relu 3x3 odd", [2, 13, 9, 7], 11, 3, 1, 1, true), 52)?;
    check_relu(&case("relu 4x4 s2", [3, 5, 12, 10], 7, 4, 2, 1, true), 53)
}

#[test]
fn relu_epilogue_clips_about_half() -> Result<()> {
    // The masked backward is only tested if the ReLU clips: random inputs and weights give
    // outputs of both signs.
    let x = random(&[2, 8, 6, 6], 60)?;
    let w = random(&[8, 8, 3, 3], 61)?;
    let y = fast::conv2d_relu(
        &x,
        &w,
        None,
        ConvParams {
            stride: 1,
            padding: 1,
        },
    )?;
    let zeros = y.eq(0f32)?.to_dtype(DType::F32)?.mean_all()?.to_scalar::<f32>()?;
    assert!((0.3..0.7).contains(&zeros), "{zeros} of the outputs clipped");
    Ok(())
}

#[test]
fn three_by_three_from_1024_channels() -> Result<()> {
    check(&case("3x3 from 1024", [2, 1024, 7, 6], 24, 3, 1, 1, true), 40)?;
    check(
        &case("3x3 from 1024 batch 1", [1, 1024, 5, 5], 16, 3, 1, 1, false),
        41,
    )
}

#[test]
fn image_unfolded_in_several_bands() -> Result<()> {
    // 2304 x 64 patch columns per output row: the 16 MiB band bound cuts the
    // 64 output rows into bands of 28, the last one short.
    check(&case("3x3 three bands", [1, 256, 64, 64], 4, 3, 1, 1, true), 50)
}

#[test]
fn no_input_gradient_for_plain_data() -> Result<()> {
    let x = random(&[2, 3, 8, 8], 60)?;
    let w = Var::from_tensor(&random(&[4, 3, 3, 3], 61)?)?;
    let params = ConvParams {
        stride: 1,
        padding: 1,
    };
    let grads = fast::conv2d(&x, &w, None, params)?.sum_all()?.backward()?;
    assert!(grads.get(&x).is_none());
    let dw = grads.get(&w).expect("weight gradient");
    let w_ref = Var::from_tensor(w.as_tensor())?;
    let grads_ref = reference::conv2d(&x, &w_ref, None, params)?
        .sum_all()?
        .backward()?;
    assert!(rel_err(dw, grads_ref.get(&w_ref).unwrap())? < TOLERANCE);
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_candle() -> Result<()> {
    let x = random(&[2, 3, 6, 6], 70)?.to_dtype(DType::F64)?;
    let w = random(&[4, 3, 3, 3], 71)?.to_dtype(DType::F64)?;
    let params = ConvParams {
        stride: 1,
        padding: 1,
    };
    assert!(!fast::supports(&x, &w, None));
    let y = film_conv::conv2d(&x, &w, None, params)?;
    let y_ref = reference::conv2d(&x, &w, None, params)?;
    assert_eq!(y.dtype(), DType::F64);
    assert_eq!((y - y_ref)?.abs()?.max_all()?.to_scalar::<f64>()?, 0.0);
    Ok(())
}

#[test]
fn mismatched_channels_are_reported() -> Result<()> {
    let x = random(&[1, 3, 6, 6], 80)?;
    let w = random(&[4, 5, 3, 3], 81)?;
    let err = fast::conv2d(&x, &w, None, ConvParams::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("input has 3 channels") && msg.contains("expects 5"),
        "{msg}"
    );
    Ok(())
}

#[test]
fn layer_matches_candle_nn_and_shares_its_parameter_names() -> Result<()> {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let config = Conv2dConfig::new(6, 5, 4).with_stride(2).with_padding(1);
    let ours = Conv2d::new(config, vb.pp("stem"))?;
    // The same names under the same prefix: candle_nn reads our variables.
    let cfg = candle_nn::Conv2dConfig {
        stride: 2,
        padding: 1,
        ..Default::default()
    };
    let theirs = candle_nn::conv2d(6, 5, 4, cfg, vb.pp("stem"))?;
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["stem.bias", "stem.weight"]);
    let x = random(&[2, 6, 11, 9], 90)?;
    let err = rel_err(&ours.forward(&x)?, &theirs.forward(&x)?)?;
    assert!(err < TOLERANCE, "layer forward rel err {err}");
    Ok(())
}

#[test]
fn frozen_weight_gets_no_gradient_but_its_bias_does() -> Result<()> {
    let x = Var::from_tensor(&random(&[2, 3, 5, 5], 100)?)?;
    let w = random(&[4, 3, 3, 3], 101)?;
    let b = Var::from_tensor(&random(&[4], 102)?)?;
    let params = ConvParams {
        stride: 1,
        padding: 1,
    };
    let r = random(&[2, 4, 5, 5], 103)?;
    let grads = (fast::conv2d(&x, &w, Some(&b), params)? * &r)?
        .sum_all()?
        .backward()?;
    assert!(grads.get(&w).is_none());
    let grads_ref = (reference::conv2d(&x, &w, Some(&b), params)? * &r)?
        .sum_all()?
        .backward()?;
    for (what, v) in [("input", &x), ("bias", &b)] {
        let err = rel_err(grads.get(v).expect("gradient"), grads_ref.get(v).unwrap())?;
        assert!(err < TOLERANCE, "{what} gradient rel err {err}");
    }
    Ok(())
}
