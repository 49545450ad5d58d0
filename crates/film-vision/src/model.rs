//! The FiLMed network, top to bottom as in Figure 3 of the paper: a stem, FiLMed residual
//! blocks that see coordinate maps, and a classifier.

use std::sync::{Arc, Mutex};

use candle_core::{Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use film_layer::{split_film_params, ChannelLayout, Film, FilmConfig};

use crate::batch_norm::BatchNorm;
use crate::config::{BlockOptions, FilmPosition, Pool, ResidualSource, Stem, VisionConfig};
use crate::conv_norm::ConvNormReluOp;
use crate::global_context::GlobalContext;
use crate::layers::{conv2d, coordinate_maps, linear, Conv};

/// conv → BatchNorm → ReLU, the unit of both stems; public so that a model can put one
/// in front of the blocks itself (film-train's scene bottleneck does).
#[derive(Clone, Debug)]
pub struct ConvNormRelu {
    conv: Conv,
    norm: BatchNorm,
}

impl ConvNormRelu {
    /// Weights under `conv.` and `bn.` in `vb`.
    pub fn new(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(ConvNormRelu {
            conv: conv2d(in_c, out_c, kernel, stride, padding, vb.pp("conv"))?,
            norm: BatchNorm::new(out_c, true, vb.pp("bn"))?,
        })
    }

    /// `train` normalises with the batch's statistics and updates the running ones.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let fused = x.device().is_cpu()
            && film_conv::fast::supports(x, self.conv.weight(), Some(self.conv.bias()))
            && self.norm.has_affine();
        if fused {
            self.fused_forward_t(x, train)
        } else {
            self.norm.forward_relu_t(&self.conv.forward(x)?, train)
        }
    }

    /// The same as one op ([`crate::conv_norm`]) on the CPU.
    fn fused_forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let saved = Arc::new(Mutex::new(None));
        let op = ConvNormReluOp {
            conv: self.conv.params(),
            batch_statistics: train,
            eps: self.norm.eps(),
            running: match train {
                true => None,
                false => Some(self.norm.running_statistics()?),
            },
            saved: saved.clone(),
        };
        let affine = self.norm.affine(x.device())?;
        let params = Tensor::cat(&[&self.conv.bias().unsqueeze(1)?, &affine], 1)?;
        let y = x
            .contiguous()?
            .apply_op3(&self.conv.weight().contiguous()?, &params, op)?;
        if let Some((mean, variance)) = ConvNormReluOp::take_batch_statistics(&saved) {
            let (batch, _, h, w) = y.dims4()?;
            self.norm.update_running(&mean, &variance, batch * h * w)?;
        }
        Ok(y)
    }
}

/// The FiLM parameters one block receives: the generator's raw Δγ and β, (N, C) each.
pub struct BlockFilm<'a> {
    pub raw_gamma: &'a Tensor,
    pub beta: &'a Tensor,
}

/// A FiLMed residual block:
/// r = ReLU(conv1x1([x, coords])); o = BN(conv3x3(r)); o = ReLU(FiLM(o)); out = r + o
/// (or x + o with [`ResidualSource::Input`]).
#[derive(Clone, Debug)]
pub struct FilmedResBlock {
    input_conv: Conv,
    conv: Conv,
    norm: BatchNorm,
    /// The paper's epilogue, FiLM then ReLU then the residual add, as one fused pass.
    film_relu: Film,
    /// FiLM alone, for the ablations that move it elsewhere in the block.
    film: Film,
    /// A summary of the whole input added at every cell ([`BlockOptions::global_context`]).
    context: Option<GlobalContext>,
    options: BlockOptions,
}

impl FilmedResBlock {
    pub fn new(channels: usize, options: &BlockOptions, vb: VarBuilder) -> Result<Self> {
        Ok(FilmedResBlock {
            input_conv: conv2d(channels + 2, channels, 1, 1, 0, vb.pp("input_proj"))?,
            conv: conv2d(channels, channels, 3, 1, 1, vb.pp("conv"))?,
            // No affine parameters of its own: FiLM supplies the scale and shift.
            norm: BatchNorm::new(channels, false, vb.pp("bn"))?,
            film_relu: film_layer(options, true),
            film: film_layer(options, false),
            context: match options.global_context {
                true => Some(GlobalContext::new(channels, vb.pp("context"))?),
                false => None,
            },
            options: options.clone(),
        })
    }

    /// `film` is `None` for an unconditioned block (γ = 1, β = 0).
    pub fn forward_t(
        &self,
        x: &Tensor,
        coords: &Tensor,
        film: Option<BlockFilm>,
        train: bool,
    ) -> Result<Tensor> {
        use FilmPosition::*;
        let position = self.options.film_position;
        let modulate = |t: &Tensor, relu: bool, residual: Option<&Tensor>| -> Result<Tensor> {
            match &film {
                Some(f) => self.film(t, f, relu, residual),
                None => {
                    let t = if relu { t.relu()? } else { t.clone() };
                    residual.map_or(Ok(t.clone()), |r| &t + r)
                }
            }
        };
        let input = x;
        let x = match &self.context {
            Some(context) => context.forward(x, coords)?,
            None => x.clone(),
        };
        let x = if position == BeforeInputConv {
            modulate(&x, false, None)?
        } else {
            x
        };
        let r = self.input_conv.forward_relu(&Tensor::cat(&[&x, coords], 1)?)?;
        let o = self.conv.forward(&r)?;
        let shortcut = match self.options.residual_source {
            ResidualSource::Projection => &r,
            ResidualSource::Input => input,
        };
        let residual = self.options.residual.then_some(shortcut);
        match position {
            // The paper's block: BN, then FiLM, ReLU and the residual add in one fused pass.
            AfterNorm => modulate(&self.norm.forward_t(&o, train)?, true, residual),
            BeforeNorm => {
                let o = self.norm.forward_t(&modulate(&o, false, None)?, train)?.relu()?;
                add_residual(o, residual)
            }
            AfterRelu => modulate(&self.norm.forward_t(&o, train)?.relu()?, false, residual),
            AfterResidual => {
                let o = add_residual(self.norm.forward_t(&o, train)?.relu()?, residual)?;
                modulate(&o, false, None)
            }
            BeforeInputConv => add_residual(self.norm.forward_t(&o, train)?.relu()?, residual),
        }
    }

    fn film(&self, x: &Tensor, f: &BlockFilm, relu: bool, residual: Option<&Tensor>) -> Result<Tensor> {
        let layer = if relu { &self.film_relu } else { &self.film };
        Ok(layer.forward_with_residual(x, f.raw_gamma, f.beta, residual)?)
    }
}

/// The block's FiLM layer: its γ parametrisation and β switch, with or without the ReLU.
fn film_layer(options: &BlockOptions, relu: bool) -> Film {
    Film::new(FilmConfig {
        layout: ChannelLayout::ChannelsFirst,
        gamma: options.gamma,
        use_beta: options.use_beta,
        relu,
    })
}

fn add_residual(o: Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
    match residual {
        Some(r) => o + r,
        None => Ok(o),
    }
}

/// \[coords\] → conv1x1 → BN → ReLU → global pool → linear → BN → ReLU → linear → logits.
#[derive(Clone, Debug)]
pub struct Classifier {
    projection: ConvNormRelu,
    hidden: Linear,
    hidden_norm: BatchNorm,
    output: Linear,
    pool: Pool,
}

impl Classifier {
    pub fn new(config: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        let (c, p, f) = (
            config.channels,
            config.classifier_channels,
            config.classifier_hidden,
        );
        Ok(Classifier {
            projection: ConvNormRelu::new(c + 2, p, 1, 1, 0, vb.pp("proj"))?,
            hidden: linear(config.pool.features_per_channel() * p, f, vb.pp("fc1"))?,
            hidden_norm: BatchNorm::new(f, true, vb.pp("fc_bn"))?,
            output: linear(f, config.num_answers, vb.pp("fc2"))?,
            pool: config.pool,
        })
    }

    pub fn forward_t(&self, x: &Tensor, coords: &Tensor, train: bool) -> Result<Tensor> {
        self.output.forward(&self.hidden_t(x, coords, train)?)
    }

    /// The hidden layer (N, F) that the output layer reads: pooled features through the
    /// linear layer, BatchNorm and ReLU.
    pub fn hidden_t(&self, x: &Tensor, coords: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.feature_map_t(x, coords, train)?;
        let pooled = match self.pool {
            Pool::Max => crate::pool::global_max_pool(&x)?,
            Pool::Mean => x.flatten_from(2)?.mean(D::Minus1)?,
            Pool::MaxMean | Pool::MaxCount => {
                // max-count averages the saturated activation, so each firing position
                // adds about the same.
                let averaged = match self.pool {
                    Pool::MaxCount => x.tanh()?,
                    _ => x.clone(),
                };
                Tensor::cat(
                    &[
                        crate::pool::global_max_pool(&x)?,
                        averaged.flatten_from(2)?.mean(D::Minus1)?,
                    ],
                    1,
                )?
            }
        };
        self.hidden_norm
            .forward_relu_t(&self.hidden.forward(&pooled)?, train)
    }

    /// Answer logits (N, answers) from the hidden layer of [`Self::hidden_t`].
    pub fn output(&self, hidden: &Tensor) -> Result<Tensor> {
        self.output.forward(hidden)
    }

    /// The projection's (N, P, h, w) maps that the global pool reduces: what analysis
    /// tools read to see which positions the pooled features come from.
    pub fn feature_map_t(&self, x: &Tensor, coords: &Tensor, train: bool) -> Result<Tensor> {
        self.projection.forward_t(&Tensor::cat(&[x, coords], 1)?, train)
    }
}

/// The whole FiLMed network: image (or features) and FiLM parameters → answer logits.
#[derive(Clone, Debug)]
pub struct FilmedNetwork {
    stem: Vec<ConvNormRelu>,
    blocks: Vec<FilmedResBlock>,
    classifier: Classifier,
    config: VisionConfig,
}

impl FilmedNetwork {
    pub fn new(config: &VisionConfig, vb: VarBuilder) -> Result<Self> {
        config.validate().map_err(candle_core::Error::msg)?;
        let c = config.channels;
        let stem = match config.stem {
            Stem::Pixels { downsamplings } => {
                let width = config.stem_width.unwrap_or(c);
                let first_stride = config.stem_first_stride.unwrap_or(2);
                (0..downsamplings)
                    .map(|i| {
                        let input = if i == 0 { 3 } else { width };
                        let output = if i + 1 == downsamplings { c } else { width };
                        let stride = if i == 0 { first_stride } else { 2 };
                        ConvNormRelu::new(input, output, 2 * stride, stride, stride / 2, vb.pp("stem").pp(i))
                    })
                    .collect::<Result<Vec<_>>>()?
            }
            Stem::Features { in_channels } => {
                vec![ConvNormRelu::new(in_channels, c, 3, 1, 1, vb.pp("stem").pp(0))?]
            }
        };
        let blocks = (0..config.num_blocks)
            .map(|i| FilmedResBlock::new(c, &config.block, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(FilmedNetwork {
            stem,
            blocks,
            classifier: Classifier::new(config, vb.pp("classifier"))?,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &VisionConfig {
        &self.config
    }

    /// `images` (N, 3, H, W) or features (N, C_in, H, W); `film_params` (N, K, 2C) from the
    /// question encoder. Returns logits (N, answers).
    pub fn forward_t(&self, images: &Tensor, film_params: &Tensor, train: bool) -> Result<Tensor> {
        let x = self.stem_t(images, train)?;
        let x = self.blocks_t(&x, film_params, train)?;
        self.classifier_t(&x, train)
    }

    /// The stem alone: images or features to the blocks' (N, C, h, w) input. The three
    /// stages are public so that a profiler can time them apart.
    pub fn stem_t(&self, images: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = images.clone();
        for layer in &self.stem {
            x = layer.forward_t(&x, train)?;
        }
        Ok(x)
    }

    /// The FiLMed residual blocks on the stem's output.
    pub fn blocks_t(&self, x: &Tensor, film_params: &Tensor, train: bool) -> Result<Tensor> {
        let params = split_film_params(film_params)?;
        if params.len() != self.blocks.len() {
            candle_core::bail!(
                "{} FiLM parameter pairs for {} blocks",
                params.len(),
                self.blocks.len()
            );
        }
        let coords = Self::coords(x)?;
        let mut x = x.clone();
        for ((block, (raw_gamma, beta)), &conditioned) in
            self.blocks.iter().zip(&params).zip(&self.config.conditioned)
        {
            let film = conditioned.then_some(BlockFilm { raw_gamma, beta });
            x = block.forward_t(&x, &coords, film, train)?;
        }
        Ok(x)
    }

    /// The classifier on the last block's output: answer logits (N, answers).
    pub fn classifier_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classifier.forward_t(x, &Self::coords(x)?, train)
    }

    /// The classifier's hidden layer (N, F) on the last block's output: what its output
    /// layer reads, and what auxiliary heads trained beside the answer can read too.
    pub fn classifier_hidden_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classifier.hidden_t(x, &Self::coords(x)?, train)
    }

    /// Answer logits (N, answers) from [`Self::classifier_hidden_t`]'s hidden layer.
    pub fn classifier_output(&self, hidden: &Tensor) -> Result<Tensor> {
        self.classifier.output(hidden)
    }

    /// The classifier's (N, P, h, w) maps before its global pool, on the last block's output.
    pub fn classifier_map_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.classifier.feature_map_t(x, &Self::coords(x)?, train)
    }

    fn coords(x: &Tensor) -> Result<Tensor> {
        let (batch, _, height, width) = x.dims4()?;
        coordinate_maps(batch, height, width, x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    fn max_relative_error(a: &Tensor, b: &Tensor) -> Result<f32> {
        let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6);
        Ok((a - b)?.abs()?.max_all()?.to_scalar::<f32>()? / scale)
    }

    /// The fused convolution + BatchNorm + ReLU against the same layer run as its separate
    /// ops (each tested against candle on its own): output, every gradient and the running
    /// statistics, in training and then in evaluation.
    fn check(
        in_c: usize,
        out_c: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        x_shape: (usize, usize, usize, usize),
    ) -> Result<()> {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let layer = ConvNormRelu::new(
            in_c,
            out_c,
            kernel,
            stride,
            padding,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )?;
        // Non-trivial BatchNorm parameters and running statistics.
        for (name, var) in varmap.data().lock().unwrap().iter() {
            if name.starts_with("bn.") {
                let values = Tensor::randn(0f32, 0.3, var.shape(), &dev)?;
                let values = match name.as_str() {
                    "bn.running_var" | "bn.weight" => (values.abs()? + 0.5)?,
                    _ => values,
                };
                var.set(&values)?;
            }
        }
        let snapshot: Vec<(String, Tensor)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.as_tensor().copy()?)))
            .collect::<Result<_>>()?;
        let restore = || -> Result<()> {
            let data = varmap.data().lock().unwrap();
            for (name, value) in &snapshot {
                data[name].set(value)?;
            }
            Ok(())
        };
        let x = Var::randn(0f32, 1.0, x_shape, &dev)?;
        for train in [true, false] {
            restore()?;
            let separate = layer.norm.forward_relu_t(&layer.conv.forward(&x)?, train)?;
            let running_separate: Vec<Tensor> = ["bn.running_mean", "bn.running_var"]
                .iter()
                .map(|n| varmap.data().lock().unwrap()[*n].as_tensor().copy())
                .collect::<Result<_>>()?;
            restore()?;
            let fused = layer.fused_forward_t(&x, train)?;
            let what = format!("{kernel}x{kernel}/{stride} {x_shape:?}, train {train}");
            let err = max_relative_error(&fused, &separate)?;
            assert!(err < 1e-5, "output differs by {err} ({what})");
            for (name, expected) in ["bn.running_mean", "bn.running_var"]
                .iter()
                .zip(&running_separate)
            {
                let got = varmap.data().lock().unwrap()[*name].as_tensor().copy()?;
                let err = max_relative_error(&got, expected)?;
                assert!(err < 1e-5, "{name} differs by {err} ({what})");
            }
            let weights = Tensor::randn(0f32, 1.0, fused.shape(), &dev)?;
            let grads_fused = (fused * &weights)?.sum_all()?.backward()?;
            let grads_separate = (separate * &weights)?.sum_all()?.backward()?;
            let mut tensors: Vec<(String, Tensor)> = varmap
                .data()
                .lock()
                .unwrap()
                .iter()
                .filter(|(n, _)| !n.contains("running"))
                .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
                .collect();
            tensors.push(("input".into(), x.as_tensor().clone()));
            for (name, t) in tensors {
                let (f, s) = (grads_fused.get(&t), grads_separate.get(&t));
                if train && name == "conv.bias" {
                    // Mathematically zero in training: BatchNorm subtracts the batch mean
                    // right after the bias. Both sides are rounding noise (about 1e-6
                    // here, against gradients of order 1 to 30), which differs with the
                    // order the statistics were summed in, so only its size is checked.
                    for (side, grad) in [("fused", f), ("separate", s)] {
                        let size = grad.expect("gradient").abs()?.max_all()?.to_scalar::<f32>()?;
                        assert!(size < 1e-4, "{side} dconv.bias is {size}, not ~0 ({what})");
                    }
                    continue;
                }
                let err = max_relative_error(
                    f.unwrap_or_else(|| panic!("no fused gradient for {name} ({what})")),
                    s.expect("separate gradient"),
                )?;
                assert!(err < 1e-4, "d{name} differs by {err} ({what})");
            }
        }
        Ok(())
    }

    #[test]
    fn fused_conv_norm_relu_matches_the_separate_ops() -> Result<()> {
        // The raw-pixel stem's 4x4 stride-2 layers, the features stem's 3x3 and the
        // classifier's 1x1 projection.
        check(3, 8, 4, 2, 1, (4, 3, 16, 12))?;
        check(8, 8, 4, 2, 1, (2, 8, 9, 7))?;
        check(6, 5, 3, 1, 1, (3, 6, 5, 5))?;
        check(7, 9, 1, 1, 0, (5, 7, 4, 3))
    }
}

#[cfg(test)]
mod residual_tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    /// With γ = 0 and β = 0 the FiLMed branch is ReLU(0) = 0, so a block's output is exactly
    /// what its residual connection adds.
    fn output_with_branch_silenced(source: ResidualSource) -> Result<(Tensor, Tensor, Tensor)> {
        let dev = Device::Cpu;
        let (batch, channels, side) = (2, 4, 5);
        let options = BlockOptions {
            residual_source: source,
            ..BlockOptions::default()
        };
        let varmap = VarMap::new();
        let block = FilmedResBlock::new(
            channels,
            &options,
            VarBuilder::from_varmap(&varmap, DType::F32, &dev),
        )?;
        let x = Tensor::randn(0f32, 1.0, (batch, channels, side, side), &dev)?;
        let coords = coordinate_maps(batch, side, side, &x)?;
        // One-plus-delta: a raw Δγ of −1 is γ = 0.
        let raw_gamma = Tensor::full(-1f32, (batch, channels), &dev)?;
        let beta = Tensor::zeros((batch, channels), DType::F32, &dev)?;
        let film = Some(BlockFilm {
            raw_gamma: &raw_gamma,
            beta: &beta,
        });
        let out = block.forward_t(&x, &coords, film, true)?;
        let projection = block.input_conv.forward_relu(&Tensor::cat(&[&x, &coords], 1)?)?;
        Ok((out, x, projection))
    }

    #[test]
    fn the_input_residual_adds_the_block_input_unchanged() -> Result<()> {
        let (out, x, projection) = output_with_branch_silenced(ResidualSource::Input)?;
        let diff = (&out - &x)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "the output is not the block's input");
        let from_projection = (&out - &projection)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(
            from_projection > 0.1,
            "input and projection coincide: the test shows nothing"
        );
        Ok(())
    }

    #[test]
    fn the_projection_residual_adds_the_blocks_own_projection() -> Result<()> {
        let (out, _, projection) = output_with_branch_silenced(ResidualSource::Projection)?;
        let diff = (&out - &projection)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "the output is not the block's 1x1 projection");
        Ok(())
    }

    #[test]
    fn configs_written_before_the_switch_read_as_the_papers_block() {
        let old =
            r#"{"film_position":"after-norm","gamma":"one-plus-delta","use_beta":true,"residual":true}"#;
        let options: BlockOptions = serde_json::from_str(old).expect("an old block config parses");
        assert_eq!(options.residual_source, ResidualSource::Projection);
    }
}
