use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use film_layer::GammaMode;
use film_vision::{
    coordinate_maps, BlockOptions, FilmPosition, FilmedNetwork, Pool, ResidualSource, Stem, VisionConfig,
};

fn small(block: BlockOptions, pool: Pool) -> VisionConfig {
    VisionConfig {
        stem: Stem::Pixels { downsamplings: 2 },
        channels: 6,
        stem_width: None,
        stem_first_stride: None,
        num_blocks: 2,
        conditioned: vec![true, false],
        block,
        classifier_channels: 8,
        classifier_hidden: 10,
        pool,
        num_answers: 7,
    }
}

#[test]
fn every_ablation_gives_logits_in_train_and_eval() -> Result<()> {
    let dev = Device::Cpu;
    let images = Tensor::randn(0f32, 1.0, (3, 3, 16, 16), &dev)?;
    let params = Tensor::randn(0f32, 1.0, (3, 2, 12), &dev)?;
    let positions = [
        FilmPosition::AfterNorm,
        FilmPosition::BeforeNorm,
        FilmPosition::AfterRelu,
        FilmPosition::AfterResidual,
        FilmPosition::BeforeInputConv,
    ];
    for position in positions {
        for (gamma, use_beta, residual, residual_source, pool) in [
            (
                GammaMode::OnePlusDelta,
                true,
                true,
                ResidualSource::Projection,
                Pool::Max,
            ),
            (
                GammaMode::Sigmoid,
                false,
                false,
                ResidualSource::Projection,
                Pool::Mean,
            ),
            (
                GammaMode::OnePlusDelta,
                true,
                true,
                ResidualSource::Input,
                Pool::MaxMean,
            ),
            (
                GammaMode::OnePlusDelta,
                true,
                true,
                ResidualSource::Projection,
                Pool::MaxCount,
            ),
        ] {
            let config = small(
                BlockOptions {
                    film_position: position,
                    gamma,
                    use_beta,
                    residual,
                    residual_source,
                    global_context: false,
                },
                pool,
            );
            let varmap = VarMap::new();
            let net = FilmedNetwork::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
            for train in [true, false] {
                let logits = net.forward_t(&images, &params, train)?;
                assert_eq!(logits.dims(), &[3, 7], "{position:?} train={train}");
                let finite = logits.abs()?.max_all()?.to_scalar::<f32>()?.is_finite();
                assert!(finite, "{position:?} gave non-finite logits");
            }
        }
    }
    Ok(())
}

/// Two maps that hold the same feature vector at one position and at two: max pooling
/// cannot tell them apart, max-mean and max-count pooling can (their means grow with the
/// count).
#[test]
fn max_mean_and_max_count_pooling_see_how_many_positions_fire() -> Result<()> {
    use film_vision::Classifier;
    let dev = Device::Cpu;
    let feature = Tensor::randn(0f32, 1.0, (1, 6, 1, 1), &dev)?;
    let once = feature.pad_with_zeros(3, 0, 3)?.pad_with_zeros(2, 0, 3)?;
    let twice = Tensor::cat(&[&feature, &feature.zeros_like()?], 3)?
        .pad_with_zeros(3, 0, 2)?
        .pad_with_zeros(2, 3, 0)?
        .add(&once)?;
    let maps = Tensor::cat(&[&once, &twice], 0)?;
    let coords = Tensor::zeros((2, 2, 4, 4), DType::F32, &dev)?;
    let mut logits = Vec::new();
    for pool in [Pool::Max, Pool::MaxMean, Pool::MaxCount] {
        // Wide enough that some hidden unit passes the difference through its ReLU
        // whatever the random initialisation.
        let config = VisionConfig {
            classifier_hidden: 64,
            ..small(BlockOptions::default(), pool)
        };
        let varmap = VarMap::new();
        let classifier = Classifier::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
        let out = classifier.forward_t(&maps, &coords, false)?;
        logits.push(
            (out.get(0)? - out.get(1)?)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?,
        );
    }
    assert_eq!(logits[0], 0.0, "max pooling saw a difference");
    assert!(logits[1] > 1e-4, "max-mean pooling saw none: {}", logits[1]);
    assert!(logits[2] > 1e-4, "max-count pooling saw none: {}", logits[2]);
    Ok(())
}

#[test]
fn features_stem_keeps_the_spatial_size() -> Result<()> {
    let dev = Device::Cpu;
    let mut config = small(BlockOptions::default(), Pool::Max);
    config.stem = Stem::Features { in_channels: 16 };
    let varmap = VarMap::new();
    let net = FilmedNetwork::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let logits = net.forward_t(
        &Tensor::randn(0f32, 1.0, (2, 16, 5, 5), &dev)?,
        &Tensor::zeros((2, 2, 12), DType::F32, &dev)?,
        false,
    )?;
    assert_eq!(logits.dims(), &[2, 7]);
    Ok(())
}

#[test]
fn a_narrow_stem_ends_at_the_blocks_width() -> Result<()> {
    let dev = Device::Cpu;
    let mut config = small(BlockOptions::default(), Pool::Max);
    config.stem_width = Some(3);
    let varmap = VarMap::new();
    let net = FilmedNetwork::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let weights = varmap.data().lock().unwrap();
    assert_eq!(weights["stem.0.conv.weight"].dims(), &[3, 3, 4, 4]);
    assert_eq!(weights["stem.1.conv.weight"].dims(), &[6, 3, 4, 4]);
    drop(weights);
    let logits = net.forward_t(
        &Tensor::randn(0f32, 1.0, (2, 3, 16, 16), &dev)?,
        &Tensor::zeros((2, 2, 12), DType::F32, &dev)?,
        true,
    )?;
    assert_eq!(logits.dims(), &[2, 7]);
    Ok(())
}

#[test]
fn a_wider_first_stride_reads_the_input_in_patches() -> Result<()> {
    let dev = Device::Cpu;
    let mut config = small(BlockOptions::default(), Pool::Max);
    config.stem_first_stride = Some(4);
    let varmap = VarMap::new();
    let net = FilmedNetwork::new(&config, VarBuilder::from_varmap(&varmap, DType::F32, &dev))?;
    let weights = varmap.data().lock().unwrap();
    assert_eq!(weights["stem.0.conv.weight"].dims(), &[6, 3, 8, 8]);
    assert_eq!(weights["stem.1.conv.weight"].dims(), &[6, 6, 4, 4]);
    drop(weights);
    // 32 pixels / 4 / 2: the same 4x4 maps as the stride-2 stem gives a 16x16 input.
    let images = Tensor::randn(0f32, 1.0, (2, 3, 32, 32), &dev)?;
    assert_eq!(net.stem_t(&images, true)?.dims(), &[2, 6, 4, 4]);
    let logits = net.forward_t(&images, &Tensor::zeros((2, 2, 12), DType::F32, &dev)?, true)?;
    assert_eq!(logits.dims(), &[2, 7]);
    Ok(())
}

#[test]
fn a_first_stride_must_be_even_and_on_a_pixel_stem() {
    let mut config = small(BlockOptions::default(), Pool::Max);
    for stride in [0, 1, 3] {
        config.stem_first_stride = Some(stride);
        assert!(config.validate().unwrap_err().contains("even"), "{stride}");
    }
    config.stem_first_stride = Some(4);
    assert!(config.validate().is_ok());
    config.stem = Stem::Features { in_channels: 16 };
    assert!(config.validate().unwrap_err().contains("pixel stem"));
}

#[test]
fn a_stem_width_needs_a_pixel_stem() {
    let mut config = small(BlockOptions::default(), Pool::Max);
    config.stem = Stem::Features { in_channels: 16 };
    config.stem_width = Some(3);
    assert!(config.validate().unwrap_err().contains("pixel stem"));
    config.stem = Stem::Pixels { downsamplings: 2 };
    config.stem_width = Some(0);
    assert!(config.validate().unwrap_err().contains("positive"));
}

#[test]
fn inconsistent_config_is_rejected() {
    let mut config = small(BlockOptions::default(), Pool::Max);
    config.conditioned = vec![true];
    let varmap = VarMap::new();
    let err = FilmedNetwork::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("conditioned lists 1 blocks but num_blocks is 2"),
        "{err}"
    );
}

#[test]
fn coordinate_maps_run_from_minus_one_to_one() -> Result<()> {
    let like = Tensor::zeros(1, DType::F32, &Device::Cpu)?;
    let maps = coordinate_maps(2, 3, 5, &like)?;
    assert_eq!(maps.dims(), &[2, 2, 3, 5]);
    let x = maps.get(1)?.get(0)?.to_vec2::<f32>()?;
    let y = maps.get(1)?.get(1)?.to_vec2::<f32>()?;
    assert_eq!(x[2], vec![-1.0, -0.5, 0.0, 0.5, 1.0]);
    assert_eq!(
        y.iter().map(|row| row[4]).collect::<Vec<_>>(),
        vec![-1.0, 0.0, 1.0]
    );
    Ok(())
}

#[test]
fn config_round_trips_through_json() {
    let config = VisionConfig::paper_features(28);
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains("\"gamma\":\"one-plus-delta\""), "{json}");
    assert_eq!(serde_json::from_str::<VisionConfig>(&json).unwrap(), config);
}
