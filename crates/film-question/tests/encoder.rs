use candle_core::{DType, Device, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use film_question::{QuestionEncoder, QuestionEncoderConfig, WordAttention};

/// Every way the encoder can read a question: the paper's, and with word attention.
const READINGS: [Option<WordAttention>; 3] = [None, Some(WordAttention::Add), Some(WordAttention::Replace)];

fn encoder_with(word_attention: Option<WordAttention>) -> Result<(VarMap, QuestionEncoder)> {
    let config = QuestionEncoderConfig {
        vocab_size: 20,
        embedding_dim: 8,
        hidden_dim: 16,
        num_blocks: 3,
        channels: 5,
        word_attention,
    };
    let varmap = VarMap::new();
    let encoder = QuestionEncoder::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )?;
    Ok((varmap, encoder))
}

fn encoder() -> Result<QuestionEncoder> {
    Ok(encoder_with(None)?.1)
}

#[test]
fn output_is_n_k_2c() -> Result<()> {
    for reading in READINGS {
        let (_, enc) = encoder_with(reading)?;
        let tokens = Tensor::new(&[[1u32, 5, 6, 2, 0], [1, 7, 2, 0, 0]], &Device::Cpu)?;
        let out = enc.forward(&tokens, &[4, 3])?;
        assert_eq!(out.dims(), &[2, 3, 10], "{reading:?}");
    }
    Ok(())
}

#[test]
fn word_attention_replacing_the_papers_head_leaves_no_unused_head() -> Result<()> {
    let names = |reading| -> Result<Vec<String>> {
        let (map, _) = encoder_with(reading)?;
        let data = map.data().lock().unwrap();
        Ok(data.keys().cloned().collect())
    };
    let has = |names: &[String], prefix: &str| names.iter().any(|n| n.starts_with(prefix));
    let paper = names(None)?;
    assert!(
        has(&paper, "decoder.") && !has(&paper, "word_attention."),
        "{paper:?}"
    );
    let added = names(Some(WordAttention::Add))?;
    assert!(
        has(&added, "decoder.") && has(&added, "word_attention."),
        "{added:?}"
    );
    let replaced = names(Some(WordAttention::Replace))?;
    assert!(
        !has(&replaced, "decoder.") && has(&replaced, "word_attention."),
        "{replaced:?}"
    );
    Ok(())
}

#[test]
fn configs_written_before_word_attention_read_as_the_papers_head() {
    let old = r#"{"vocab_size":20,"embedding_dim":8,"hidden_dim":16,"num_blocks":3,"channels":5}"#;
    let config: QuestionEncoderConfig = serde_json::from_str(old).expect("an old config parses");
    assert_eq!(config.word_attention, None);
    // And the paper's config is written as before, so older builds still read it.
    assert_eq!(serde_json::to_string(&config).unwrap(), old);
    let mut with = config;
    with.word_attention = Some(WordAttention::Add);
    let written = serde_json::to_string(&with).unwrap();
    assert!(written.ends_with(r#""word_attention":"add"}"#), "{written}");
    let read: QuestionEncoderConfig = serde_json::from_str(&written).unwrap();
    assert_eq!(read, with);
}

/// Padding — how much, and with which ids — must not change any question's parameters.
#[test]
fn padding_does_not_change_the_output() -> Result<()> {
    for reading in READINGS {
        padding_does_not_change_the_output_of(&encoder_with(reading)?.1)?;
    }
    Ok(())
}

fn padding_does_not_change_the_output_of(enc: &QuestionEncoder) -> Result<()> {
    let dev = Device::Cpu;
    let short = Tensor::new(&[[1u32, 5, 6, 9, 2]], &dev)?;
    let alone = enc.forward(&short, &[5])?;
    // The same question padded with zeros and with junk ids, batched beside a longer one.
    let padded = Tensor::new(&[[1u32, 5, 6, 9, 2, 0, 0, 0], [1, 3, 4, 5, 6, 7, 8, 2]], &dev)?;
    let junk = Tensor::new(&[[1u32, 5, 6, 9, 2, 13, 17, 4], [1, 3, 4, 5, 6, 7, 8, 2]], &dev)?;
    for batch in [padded, junk] {
        let out = enc.forward(&batch, &[5, 8])?.narrow(0, 0, 1)?;
        let diff = (out - &alone)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            diff < 1e-6,
            "padding changed the output of {:?} by {diff}",
            enc.config().word_attention
        );
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
