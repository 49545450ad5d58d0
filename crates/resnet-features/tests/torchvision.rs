//! The network against torchvision's own, on a tiny ResNet of the same structure whose
//! weights, input and output torchvision saved (`research/resnet_parity.py fixture`).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::VarBuilder;
use resnet_features::{check_weights, ResNet, ResNetConfig, WeightsError};
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/resnet-tiny")
        .join(name)
}

/// The structure `resnet_parity.py fixture` builds.
fn tiny() -> ResNetConfig {
    ResNetConfig {
        stem_channels: 8,
        stage_blocks: vec![1, 2, 2],
        stage_widths: vec![4, 8, 16],
        expansion: 4,
    }
}

fn max_abs(t: &Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap()
}

#[test]
fn tiny_resnet_matches_torchvision() {
    let weights = fixture("weights.safetensors");
    check_weights(&weights, &tiny(), "the tiny ResNet").unwrap();
    let device = Device::Cpu;
    // SAFETY: the fixture is mapped read-only.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&weights], DType::F32, &device) }.unwrap();
    let net = ResNet::new(&tiny(), vb).unwrap();
    let expected = candle_core::safetensors::load(fixture("expected.safetensors"), &device).unwrap();
    let (input, output) = (&expected["input"], &expected["output"]);
    // An odd side before the max pool (21) and a non-square input exercise the padding.
    assert_eq!(input.dims(), [2, 3, 42, 38]);
    assert_eq!(output.dims(), [2, 64, 3, 3]);
    assert_eq!(tiny().output_side(42), 3);
    let ours = net.forward(input).unwrap();
    assert_eq!(ours.dims(), output.dims());
    let largest = max_abs(output);
    let worst = max_abs(&(ours - output).unwrap());
    assert!(largest > 0.1, "a vacuous comparison: the output is all but zero");
    assert!(
        worst <= 1e-4 * largest,
        "largest difference {worst}, largest value {largest}"
    );
}

#[test]
fn weights_of_another_network_are_refused_with_everything_wrong_listed() {
    let error = check_weights(
        &fixture("weights.safetensors"),
        &ResNetConfig::resnet101_conv4(),
        "ResNet-101",
    )
    .unwrap_err();
    let WeightsError::Mismatch {
        missing, mismatched, ..
    } = &error
    else {
        panic!("{error}")
    };
    // The tiny network has one block in layer1 and two in layers 2 and 3.
    assert!(
        missing.contains(&"layer1.2.conv1.weight".to_string()),
        "{missing:?}"
    );
    assert!(missing.contains(&"layer3.22.bn3.running_var".to_string()));
    assert!(!missing.contains(&"conv1.weight".to_string()));
    assert!(
        mismatched.contains(
            &"conv1.weight: the file holds F32 [8, 3, 7, 7], the network needs a float tensor of [64, 3, 7, 7]"
                .to_string()
        ),
        "{mismatched:?}"
    );
    let text = error.to_string();
    assert!(
        text.contains("weights.safetensors: not the weights of ResNet-101:"),
        "{text}"
    );
    assert!(
        text.contains(&format!("{} tensors missing:", missing.len())),
        "{text}"
    );
    assert!(text.contains("… and "), "long lists are cut: {text}");
}

#[test]
fn a_file_that_is_not_safetensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.pth");
    std::fs::write(&path, b"PK\x03\x04 a zip archive, as torch.save writes").unwrap();
    let error = check_weights(&path, &tiny(), "the tiny ResNet")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("weights.pth: cannot read the weights file"),
        "{error}"
    );
}

#[test]
fn a_half_precision_copy_of_the_weights_gives_the_same_network() {
    // Users often save weights in float16; the network still computes in f32.
    let device = Device::Cpu;
    let tensors = candle_core::safetensors::load(fixture("weights.safetensors"), &device).unwrap();
    let half: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .map(|(name, t)| (name, t.to_dtype(DType::F16).unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights-f16.safetensors");
    candle_core::safetensors::save(&half, &path).unwrap();
    check_weights(&path, &tiny(), "the tiny ResNet").unwrap();
    // SAFETY: the file is mapped read-only.
    let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[&path], DType::F32, &device) }.unwrap();
    let net = ResNet::new(&tiny(), vb).unwrap();
    let expected = candle_core::safetensors::load(fixture("expected.safetensors"), &device).unwrap();
    let out = net.forward(&expected["input"]).unwrap();
    // float16 keeps about three decimal digits of each weight.
    let worst = max_abs(&(out - &expected["output"]).unwrap());
    let largest = max_abs(&expected["output"]);
    assert!(
        worst < 1e-2 * largest,
        "largest difference {worst}, largest value {largest}"
    );
}
