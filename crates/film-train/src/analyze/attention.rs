//! Where the model looks (the paper's Figure 4): which spatial positions of the last
//! block's output the classifier's global pool takes its features from.
//!
//! With max pooling (the paper's model) each of the classifier projection's P channels
//! passes on the value of one position, its arg-max; the map counts, per position, the
//! fraction of channels pooled from there. That is exactly the information the final
//! MLP sees, which the raw activation map is not. Channels that are zero everywhere
//! (ReLU-dead for this input) pass on 0 whichever position "wins", so they are left out.
//! With mean pooling every position contributes in proportion to its activation, so the
//! map is each position's share of the summed activations.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use film_vision::Pool;

use crate::model::FilmModel;
use crate::plots::{heat_overlay, Captions, HeatGrid};

/// The positions one example's pooled features come from.
#[derive(Clone, Debug)]
pub struct Look {
    pub heat: HeatGrid,
    /// Channels that contributed (max pooling: not zero everywhere) out of all.
    pub live_channels: usize,
    pub channels: usize,
    pub pool: Pool,
}

impl Look {
    /// The colour bar's label.
    pub fn value_label(&self) -> &'static str {
        match self.pool {
            Pool::Max | Pool::MaxMean | Pool::MaxCount => "fraction of max-pooled features",
            Pool::Mean => "share of mean-pooled activation",
        }
    }
}

/// One [`Look`] per example of the classifier maps `maps` (N, P, h, w).
pub fn looks(maps: &Tensor, pool: Pool) -> Result<Vec<Look>> {
    let (_, channels, height, width) = maps.dims4()?;
    let positions = height * width;
    let maps = maps.to_device(&Device::Cpu)?.flatten_from(2)?.to_vec3::<f32>()?;
    Ok(maps
        .iter()
        .map(|example| {
            let mut values = vec![0f32; positions];
            let mut live = 0;
            for channel in example {
                match pool {
                    // The mean half of max-mean and max-count pooling reads every position
                    // alike; the max half is what points at places.
                    Pool::Max | Pool::MaxMean | Pool::MaxCount => {
                        let (arg, max) =
                            channel
                                .iter()
                                .enumerate()
                                .fold(
                                    (0, f32::NEG_INFINITY),
                                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                                );
                        if max > 0.0 {
                            values[arg] += 1.0;
                            live += 1;
                        }
                    }
                    Pool::Mean => {
                        for (out, &v) in values.iter_mut().zip(channel) {
                            *out += v;
                        }
                        live += usize::from(channel.iter().any(|&v| v != 0.0));
                    }
                }
            }
            let total: f32 = values.iter().sum();
            if total > 0.0 {
                values.iter_mut().for_each(|v| *v /= total);
            }
            Look {
                heat: HeatGrid {
                    width,
                    height,
                    values,
                },
                live_channels: live,
                channels,
                pool,
            }
        })
        .collect())
}

/// Answer logits and where the model looks, for a batch of images and questions.
pub fn forward_with_looks(
    model: &FilmModel,
    images: &Tensor,
    questions: &Tensor,
    lengths: &[usize],
) -> Result<(Tensor, Vec<Look>)> {
    let params = model.film_params(questions, lengths)?;
    forward_with_looks_from_params(model, images, &params)
}

/// As [`forward_with_looks`], from the generator's raw output `params` (N, K, 2C), for a
/// caller that also reads the parameters themselves.
pub fn forward_with_looks_from_params(
    model: &FilmModel,
    images: &Tensor,
    params: &Tensor,
) -> Result<(Tensor, Vec<Look>)> {
    let network = &model.network;
    let stem = model.trunk_input_t(images, false)?;
    let x = network.blocks_t(&stem, params, false)?;
    let maps = network.classifier_map_t(&x, false)?;
    let logits = network.classifier_t(&x, false)?;
    Ok((logits, looks(&maps, network.config().pool)?))
}

/// Writes `look` over the image file `image` to `out` as a PNG.
pub fn write_look(out: &Path, image: &Path, look: &Look, title: &str, subtitle: &str) -> Result<()> {
    let picture = clevr::image::decode_png(image).with_context(|| format!("reading {}", image.display()))?;
    let captions = Captions {
        title,
        subtitle,
        value_label: look.value_label(),
    };
    heat_overlay(out, &picture, &look.heat, &captions)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_the_argmax_position_of_each_live_channel() {
        // One example, three channels on a 1x3 grid: two pick position 2, one position 0,
        // and a dead channel picks nothing.
        let maps = Tensor::from_vec(
            vec![0.0f32, 1.0, 5.0, 0.0, 2.0, 3.0, 4.0, 1.0, 0.5, 0.0, 0.0, 0.0],
            (1, 4, 1, 3),
            &Device::Cpu,
        )
        .unwrap();
        let look = &looks(&maps, Pool::Max).unwrap()[0];
        assert_eq!(look.live_channels, 3);
        assert_eq!(look.channels, 4);
        let expected = [1.0 / 3.0, 0.0, 2.0 / 3.0];
        for (got, want) in look.heat.values.iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{:?}", look.heat.values);
        }
        let mean = &looks(&maps, Pool::Mean).unwrap()[0];
        // Column sums 4, 4, 8.5 of 16.5.
        assert!((mean.heat.values[2] - 8.5 / 16.5).abs() < 1e-6);
    }
}
