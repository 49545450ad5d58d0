//! A one-layer GRU over padded token embeddings, returning the state at each sequence's
//! last real token.

use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::recurrence;

/// PyTorch's GRU (gate order r, z, n; weights `weight_ih_l0`, `weight_hh_l0`,
/// `bias_ih_l0`, `bias_hh_l0`) so checkpoints read the same from Python.
#[derive(Clone, Debug)]
pub struct Gru {
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias_ih: Tensor,
    bias_hh: Tensor,
    hidden_dim: usize,
}

impl Gru {
    pub fn new(input_dim: usize, hidden_dim: usize, vb: VarBuilder) -> Result<Self> {
        // PyTorch's default GRU initialisation: U(-1/√H, 1/√H) for every tensor.
        let bound = 1.0 / (hidden_dim as f64).sqrt();
        let init = Init::Uniform {
            lo: -bound,
            up: bound,
        };
        Ok(Gru {
            weight_ih: vb.get_with_hints((3 * hidden_dim, input_dim), "weight_ih_l0", init)?,
            weight_hh: vb.get_with_hints((3 * hidden_dim, hidden_dim), "weight_hh_l0", init)?,
            bias_ih: vb.get_with_hints(3 * hidden_dim, "bias_ih_l0", init)?,
            bias_hh: vb.get_with_hints(3 * hidden_dim, "bias_hh_l0", init)?,
            hidden_dim,
        })
    }

    /// Runs over `inputs` (N, T, D) and returns the hidden state (N, H) after each
    /// sequence's `lengths[i]`-th step. Steps past a sequence's length never reach its
    /// result, so padding cannot leak in; the loop stops at the longest length. On the CPU
    /// in f32 the recurrence runs as one fused op ([`crate::recurrence`]).
    pub fn last_states(&self, inputs: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        Ok(self.states_with(inputs, lengths, recurrence::supports(inputs))?.1)
    }

    /// [`Gru::last_states`] composed from candle ops step by step: the obviously correct
    /// path, kept for every device and dtype and as the fused op's reference.
    pub fn last_states_reference(&self, inputs: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        Ok(self.states_with(inputs, lengths, false)?.1)
    }

    /// The state after every step, batch-major (N, T, H) with T the longest length, and
    /// [`Gru::last_states`]'s (N, H), from one pass. A row's states past its length are
    /// defined by no word: whoever reads them must mask them out.
    pub fn all_and_last_states(&self, inputs: &Tensor, lengths: &[usize]) -> Result<(Tensor, Tensor)> {
        let (all, last) = self.states_with(inputs, lengths, recurrence::supports(inputs))?;
        Ok((all.transpose(0, 1)?.contiguous()?, last))
    }

    /// Every step's state, time-major (T, N, H), and the state after each row's last step.
    fn states_with(&self, inputs: &Tensor, lengths: &[usize], fused: bool) -> Result<(Tensor, Tensor)> {
        let (batch, _, input_dim) = inputs.dims3()?;
        if lengths.len() != batch {
            candle_core::bail!("{} lengths for a batch of {batch}", lengths.len());
        }
        if let Some(i) = lengths.iter().position(|&l| l == 0) {
            candle_core::bail!("sequence {i} is empty: every question has at least <START> and <END>");
        }
        let steps = lengths.iter().copied().max().unwrap_or(0);
        let h = self.hidden_dim;
        // Time-major (T, N, D), so that each step's rows are contiguous.
        let inputs = inputs.narrow(1, 0, steps)?.transpose(0, 1)?.contiguous()?;
        let all = if fused {
            // The fused op projects the inputs itself and adds both biases in its gate loop.
            let packed = Tensor::cat(&[&self.weight_ih.flatten_all()?, &self.bias_ih, &self.bias_hh], 0)?;
            recurrence::gru_layer(&inputs, &self.weight_hh, &packed, lengths)?
        } else {
            // The input projection of every step in one matrix product, instead of one
            // per step.
            let projected = inputs
                .reshape((steps * batch, input_dim))?
                .matmul(&self.weight_ih.t()?)?
                .broadcast_add(&self.bias_ih)?
                .reshape((steps, batch, 3 * h))?;
            self.composed_recurrence(&projected)?
        };
        let last: Vec<u32> = lengths
            .iter()
            .enumerate()
            .map(|(i, &l)| ((l - 1) * batch + i) as u32)
            .collect();
        let index = Tensor::from_vec(last, batch, inputs.device())?;
        let last = all.reshape((steps * batch, h))?.index_select(&index, 0)?;
        Ok((all, last))
    }

    /// Every step's state (T, N, H) from the input projections (T, N, 3H), one candle op at
    /// a time.
    fn composed_recurrence(&self, projected: &Tensor) -> Result<Tensor> {
        let (steps, batch, _) = projected.dims3()?;
        let h = self.hidden_dim;
        let mut state = Tensor::zeros((batch, h), projected.dtype(), projected.device())?;
        let mut states = Vec::with_capacity(steps);
        for t in 0..steps {
            let x = projected.get(t)?;
            let hh = state.matmul(&self.weight_hh.t()?)?.broadcast_add(&self.bias_hh)?;
            let (x_r, x_z, x_n) = (x.narrow(1, 0, h)?, x.narrow(1, h, h)?, x.narrow(1, 2 * h, h)?);
            let (h_r, h_z, h_n) = (hh.narrow(1, 0, h)?, hh.narrow(1, h, h)?, hh.narrow(1, 2 * h, h)?);
            let reset = candle_nn::ops::sigmoid(&(x_r + h_r)?)?;
            let update = candle_nn::ops::sigmoid(&(x_z + h_z)?)?;
            let candidate = (x_n + (reset * h_n)?)?.tanh()?;
            // h' = (1 - z) ⊙ n + z ⊙ h = n + z ⊙ (h - n)
            state = (&candidate + (update * (state - &candidate)?)?)?;
            states.push(state.clone());
        }
        Tensor::stack(&states, 0)
    }
}
