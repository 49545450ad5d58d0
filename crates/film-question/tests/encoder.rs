use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use film_question::{QuestionEncoder, QuestionEncoderConfig};

fn encoder() -> Result<QuestionEncoder> {
    let config = QuestionEncoderConfig {
        vocab_size: 20,
        embedding_dim: 8,
        hidden_dim: 16,
        num_blocks: 3,
        channels: 5,
    };
    let varmap = VarMap::new();
    QuestionEncoder::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
}

#[test]
fn output_is_n_k_2c() -> Result<()> {
    let enc = encoder()?;
    let tokens = Tensor::new(&[[1u32, 5, 6, 2, 0], [1, 7, 2, 0, 0]], &Device::Cpu)?;
    let out = enc.forward(&tokens, &[4, 3])?;
    assert_eq!(out.dims(), &[2, 3, 10]);
    Ok(())
}

/// Padding — how much, and with which ids — must not change any question's parameters.
#[test]
fn padding_does_not_change_the_output() -> Result<()> {
    let enc = encoder()?;
    let dev = Device::Cpu;
    let short = Tensor::new(&[[1u32, 5, 6, 9, 2]], &dev)?;
    let alone = enc.forward(&short, &[5])?;
    // The same question padded with zeros and with junk ids, batched beside a longer one.
    let padded = Tensor::new(&[[1u32, 5, 6, 9, 2, 0, 0, 0], [1, 3, 4, 5, 6, 7, 8, 2]], &dev)?;
    let junk = Tensor::new(&[[1u32, 5, 6, 9, 2, 13, 17, 4], [1, 3, 4, 5, 6, 7, 8, 2]], &dev)?;
    for batch in [padded, junk] {
        let out = enc.forward(&batch, &[5, 8])?.narrow(0, 0, 1)?;
        let diff = (out - &alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "padding changed the output by {diff}");
    }
    Ok(())
}

#[test]
fn empty_question_is_an_error() -> Result<()> {
    let enc = encoder()?;
    let tokens = Tensor::new(&[[0u32, 0, 0]], &Device::Cpu)?;
    let err = enc.forward(&tokens, &[0]).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    Ok(())
}
