//! A block's view of its whole input: a FiLMed block's 3×3 convolution sees a few cells
//! around each one, but a relation ("left of the red sphere") or a comparison of counts
//! is about objects anywhere on the grid. Each channel's mean and maximum over the grid,
//! and its mean weighted by each coordinate (where on the grid it is active), pass
//! through a linear map whose output every cell adds to its input.

use candle_core::{Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};

/// Summaries per channel: mean, maximum, and the means weighted by x and by y.
const SUMMARIES: usize = 4;

#[derive(Clone, Debug)]
pub struct GlobalContext {
    linear: Linear,
}

impl GlobalContext {
    /// Zero-initialised, so that a block with the context starts as the block without it
    /// (and a run trained without it can continue with it from the same outputs).
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get_with_hints((channels, SUMMARIES * channels), "weight", Init::Const(0.0))?;
        let bias = vb.get_with_hints(channels, "bias", Init::Const(0.0))?;
        Ok(GlobalContext {
            linear: Linear::new(weight, Some(bias)),
        })
    }

    /// `x` (N, C, h, w) plus, at every cell, the linear map of its summaries; `coords`
    /// (N, 2, h, w) are the x and y coordinate maps the block reads.
    pub fn forward(&self, x: &Tensor, coords: &Tensor) -> Result<Tensor> {
        let (n, c, _, _) = x.dims4()?;
        let cells = x.flatten_from(2)?;
        let along = |axis: usize| -> Result<Tensor> {
            let coordinate = coords.narrow(1, axis, 1)?.flatten_from(2)?;
            cells.broadcast_mul(&coordinate)?.mean(2)
        };
        let summaries = Tensor::cat(&[cells.mean(2)?, cells.max(2)?, along(0)?, along(1)?], 1)?;
        let context = self.linear.forward(&summaries)?;
        x.broadcast_add(&context.reshape((n, c, 1, 1))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn it_starts_as_nothing_and_then_tells_every_cell_where_a_channel_is_active() {
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let context = GlobalContext::new(1, VarBuilder::from_varmap(&varmap, DType::F32, &dev)).unwrap();
        // One channel, active at the right end of a 1x3 grid only.
        let x = Tensor::new(&[[[[0f32, 0.0, 3.0]]]], &dev).unwrap();
        let coords = Tensor::new(&[[[[-1f32, 0.0, 1.0]], [[0f32, 0.0, 0.0]]]], &dev).unwrap();
        let same = context.forward(&x, &coords).unwrap();
        assert_eq!(
            same.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 0.0, 3.0]
        );

        // With weight 1 on the x-weighted mean alone, every cell learns that the channel is
        // active to the right (mean of x·coordinate = 3·1/3 = 1).
        let data = varmap.data().lock().unwrap();
        let weight: &Var = &data["weight"];
        weight
            .set(&Tensor::new(&[[0f32, 0.0, 1.0, 0.0]], &dev).unwrap())
            .unwrap();
        drop(data);
        let told = context.forward(&x, &coords).unwrap();
        assert_eq!(
            told.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [1.0, 1.0, 4.0]
        );
        // Active at the left end instead: -1 everywhere.
        let left = Tensor::new(&[[[[3f32, 0.0, 0.0]]]], &dev).unwrap();
        let told = context.forward(&left, &coords).unwrap();
        assert_eq!(
            told.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [2.0, -1.0, -1.0]
        );
    }
}
