//! The public surface: error cases, parametrisations, the generator split and the
//! convenience functions.

mod common;

use candle_core::{DType, Device, Result, Tensor};
use common::{rel_err, Rng};
use film_layer::reference::film_composed;
use film_layer::{
    film, film_fused, film_relu, modulate, split_film_params, ChannelLayout, Film, FilmConfig, FilmError,
    GammaMode,
};

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, DType::F32, &Device::Cpu).unwrap()
}

#[test]
fn rank_one_input_is_rejected_with_its_shape() {
    let err = film(&zeros(&[4]), &zeros(&[4, 1]), &zeros(&[4, 1])).unwrap_err();
    assert!(
        matches!(err, FilmError::InputRank { ref got, .. } if got == &[4]),
        "{err}"
    );
    assert!(err.to_string().contains("[4]"), "{err}");
}

#[test]
fn parameter_of_wrong_rank_is_rejected() {
    let err = film(&zeros(&[2, 3, 4]), &zeros(&[2, 3, 1]), &zeros(&[2, 3])).unwrap_err();
    assert!(
        matches!(
            err,
            FilmError::ParamRank {
                name: "gamma",
                rank: 3,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn batch_mismatch_names_both_shapes() {
    let err = film(&zeros(&[2, 3, 4]), &zeros(&[2, 3]), &zeros(&[5, 3])).unwrap_err();
    assert!(
        matches!(
            err,
            FilmError::BatchMismatch {
                name: "beta",
                expected: 2,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(text.contains("[2, 3, 4]") && text.contains("[5, 3]"), "{text}");
}

#[test]
fn channel_mismatch_names_the_layout() {
    let x = zeros(&[2, 7, 3]);
    let err = film_fused(
        &x,
        &zeros(&[2, 7]),
        None,
        None,
        &FilmConfig::as_given(ChannelLayout::ChannelsLast, false),
    )
    .unwrap_err();
    assert!(
        matches!(err, FilmError::ChannelMismatch { expected: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("channels-last"), "{err}");
}

#[test]
fn residual_of_other_shape_is_rejected() {
    let err = film_relu(
        &zeros(&[2, 3, 4]),
        &zeros(&[2, 3]),
        &zeros(&[2, 3]),
        Some(&zeros(&[2, 3, 5])),
    )
    .unwrap_err();
    assert!(matches!(err, FilmError::ResidualShape { .. }), "{err}");
}

#[test]
fn dtype_mismatch_is_rejected() {
    let gamma = zeros(&[2, 3]).to_dtype(DType::F64).unwrap();
    let err = film(&zeros(&[2, 3, 4]), &gamma, &zeros(&[2, 3])).unwrap_err();
    assert!(
        matches!(
            err,
            FilmError::DTypeMismatch {
                name: "gamma",
                expected: DType::F32,
                got: DType::F64
            }
        ),
        "{err}"
    );
}

#[test]
fn integer_input_is_rejected() {
    let x = zeros(&[2, 3, 4]).to_dtype(DType::U32).unwrap();
    let err = film(&x, &zeros(&[2, 3]), &zeros(&[2, 3])).unwrap_err();
    assert!(matches!(err, FilmError::UnsupportedDType(DType::U32)), "{err}");
}

#[test]
fn generator_output_must_be_n_k_2c() {
    let odd = split_film_params(&zeros(&[2, 4, 7])).unwrap_err();
    assert!(matches!(odd, FilmError::GeneratorShape { .. }), "{odd}");
    let flat = split_film_params(&zeros(&[2, 8])).unwrap_err();
    assert!(matches!(flat, FilmError::GeneratorShape { .. }), "{flat}");
}

#[test]
fn errors_convert_into_candle_errors() {
    fn candle_code() -> candle_core::Result<Tensor> {
        Ok(film(&zeros(&[2, 3, 4]), &zeros(&[2, 3]), &zeros(&[9, 3]))?)
    }
    let err = candle_code().unwrap_err();
    assert!(err.to_string().contains("batch size mismatch"), "{err}");
}

#[test]
fn split_gives_gamma_then_beta_per_block() -> Result<()> {
    // Block k of example n holds values 100n + 10k + j, j < 2C.
    let (n, k, c) = (2, 3, 2);
    let data: Vec<f32> = (0..n)
        .flat_map(|n| (0..k).flat_map(move |k| (0..2 * c).map(move |j| (100 * n + 10 * k + j) as f32)))
        .collect();
    let out = Tensor::from_vec(data, (n, k, 2 * c), &Device::Cpu)?;
    let pairs = split_film_params(&out).unwrap();
    assert_eq!(pairs.len(), k);
    let (gamma, beta) = &pairs[2];
    assert_eq!(
        gamma.to_vec2::<f32>()?,
        vec![vec![20.0, 21.0], vec![120.0, 121.0]]
    );
    assert_eq!(beta.to_vec2::<f32>()?, vec![vec![22.0, 23.0], vec![122.0, 123.0]]);
    Ok(())
}

#[test]
fn gamma_modes_map_known_values() -> Result<()> {
    let raw = Tensor::new(&[[-1f64, 0.0, 2.0]], &Device::Cpu)?;
    let expect = |mode: GammaMode, want: [f64; 3]| -> Result<()> {
        let got = mode.apply(&raw).unwrap().to_vec2::<f64>()?[0].clone();
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{mode}: got {got:?}, want {want:?}");
        }
        Ok(())
    };
    let sigmoid = |v: f64| 1.0 / (1.0 + (-v).exp());
    expect(GammaMode::Plain, [-1.0, 0.0, 2.0])?;
    expect(GammaMode::OnePlusDelta, [0.0, 1.0, 3.0])?;
    expect(GammaMode::Sigmoid, [sigmoid(-1.0), 0.5, sigmoid(2.0)])?;
    expect(GammaMode::Tanh, [(-1f64).tanh(), 0.0, 2f64.tanh()])?;
    expect(GammaMode::Exp, [(-1f64).exp(), 1.0, 2f64.exp()])?;
    expect(GammaMode::Fixed, [1.0, 1.0, 1.0])?;
    for mode in GammaMode::ALL {
        assert_eq!(mode.name().parse::<GammaMode>().unwrap(), mode);
    }
    assert!("sigmoids"
        .parse::<GammaMode>()
        .unwrap_err()
        .contains("one-plus-delta"));
    Ok(())
}

#[test]
fn film_module_applies_its_config() -> Result<()> {
    let mut rng = Rng::new(7);
    let x = rng.tensor(&[2, 3, 4, 4], 2.0)?;
    let raw_gamma = rng.tensor(&[2, 3], 1.0)?;
    let beta = rng.tensor(&[2, 3], 1.0)?;
    let residual = rng.tensor(&[2, 3, 4, 4], 1.0)?;

    let paper = Film::new(FilmConfig {
        relu: true,
        ..Default::default()
    });
    let got = paper
        .forward_with_residual(&x, &raw_gamma, &beta, Some(&residual))
        .unwrap();
    let want = film_composed(
        &x,
        &(&raw_gamma + 1.0)?,
        Some(&beta),
        ChannelLayout::ChannelsFirst,
        true,
        Some(&residual),
    )
    .unwrap();
    assert!(rel_err(&got, &want)? < 1e-6);

    // γ fixed to 1 and β off: the identity.
    let identity = Film::new(FilmConfig {
        gamma: GammaMode::Fixed,
        use_beta: false,
        ..Default::default()
    });
    assert!(rel_err(&identity.forward(&x, &raw_gamma, &beta).unwrap(), &x)? == 0.0);
    Ok(())
}

#[test]
fn modulate_is_x_times_one_plus_scale_plus_shift() -> Result<()> {
    let mut rng = Rng::new(8);
    let x = rng.tensor(&[2, 5, 4], 1.0)?;
    let shift = rng.tensor(&[2, 4], 1.0)?;
    let scale = rng.tensor(&[2, 4], 1.0)?;
    let want = x
        .broadcast_mul(&(&scale + 1.0)?.unsqueeze(1)?)?
        .broadcast_add(&shift.unsqueeze(1)?)?;
    assert!(rel_err(&modulate(&x, &shift, &scale).unwrap(), &want)? < 1e-6);
    Ok(())
}

/// The configs serialize under the names the command lines use, and read back.
#[test]
fn configs_serialize_in_command_line_names() {
    let config = FilmConfig {
        layout: ChannelLayout::ChannelsLast,
        gamma: GammaMode::OnePlusDelta,
        use_beta: false,
        relu: true,
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        json,
        r#"{"layout":"channels-last","gamma":"one-plus-delta","use_beta":false,"relu":true}"#
    );
    assert_eq!(serde_json::from_str::<FilmConfig>(&json).unwrap(), config);
    for mode in GammaMode::ALL {
        let name = serde_json::to_value(mode).unwrap();
        assert_eq!(name, serde_json::Value::String(mode.to_string()));
    }
}

/// The generator gives each block's (γ, β) in order: block k's are values
/// [2kC, 2kC + C) and [2kC + C, 2(k + 1)C) of one linear map's output.
#[test]
fn generator_splits_one_linear_map_into_blocks() -> candle_core::Result<()> {
    use candle_nn::{VarBuilder, VarMap};
    use film_layer::FilmGenerator;
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let generator = FilmGenerator::new(5, 3, 2, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let condition = Tensor::randn(0f32, 1.0, (4, 5), &dev)?;
    let pairs = generator.forward(&condition)?;
    assert_eq!(pairs.len(), 2);
    let vars = varmap.data().lock().unwrap();
    let (weight, bias) = (vars["weight"].as_tensor(), vars["bias"].as_tensor());
    assert_eq!(weight.dims(), &[12, 5]);
    let full = condition.matmul(&weight.t()?)?.broadcast_add(bias)?;
    for (k, (gamma, beta)) in pairs.iter().enumerate() {
        assert_eq!(gamma.dims(), &[4, 3]);
        let err_gamma = rel_err(gamma, &full.narrow(1, 6 * k, 3)?)?;
        let err_beta = rel_err(beta, &full.narrow(1, 6 * k + 3, 3)?)?;
        assert!(
            err_gamma < 1e-6 && err_beta < 1e-6,
            "block {k}: {err_gamma} {err_beta}"
        );
    }
    Ok(())
}
