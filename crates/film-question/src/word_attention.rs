//! Each block's own reading of the question: attention over the GRU's state at every word.
//!
//! The paper's generator gives every block its (γ, β) from one vector, the GRU's state
//! after the last word, which must carry the whole question. A relational question
//! ("the cube left of the red sphere") asks its blocks for different things in turn: find
//! the red sphere, then look left of it. Here block k weighs the question's words itself,
//! with a query made from the last state and what block k − 1 read, as the control unit of
//! MAC (Hudson & Manning, 2018) and multi-hop FiLM (Strub et al., 2018) do, and its
//! (γ, β) come from the words it weighed. The vision network is unchanged: it still gets
//! one (γ, β) pair per block.

use candle_core::{Result, Tensor, D};
use candle_nn::{Init, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

/// How the attended words combine with the paper's head on the last state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WordAttention {
    /// (γ, β) = the paper's head on the last state + a head on the attended words.
    Add,
    /// (γ, β) from the attended words alone; the paper's head is not used.
    Replace,
}

/// The attention of every block over the question's words, and its (γ, β) head.
///
/// Variables, per block k: `query.k` (H, 2H) reads [last state, block k − 1's attended
/// words]; `film.k` (2C, H) turns the attended words into (raw γ, β); and one `keys.weight`
/// K (H, H) shared by the blocks. The score of word t for block k is (K h_t) · query_k / √H
/// over the question's real words; the attended words are the scores' softmax-weighted
/// sum of the states h_t. A bias on the keys would add the same number to every word's
/// score, which the softmax ignores, so there is none.
#[derive(Clone, Debug)]
pub struct WordAttentionHead {
    keys: Tensor,
    queries: Vec<Linear>,
    films: Vec<Linear>,
}

/// A `Linear` initialised as PyTorch initialises one, so that the head starts as the
/// research probe's does.
fn linear(input: usize, output: usize, vb: VarBuilder) -> Result<Linear> {
    let weight = vb.get_with_hints(
        (output, input),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_UNIFORM,
    )?;
    let bound = 1.0 / (input as f64).sqrt();
    let bias = vb.get_with_hints(
        output,
        "bias",
        Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok(Linear::new(weight, Some(bias)))
}

impl WordAttentionHead {
    pub fn new(hidden: usize, channels: usize, blocks: usize, vb: VarBuilder) -> Result<Self> {
        let keys = vb.pp("keys").get_with_hints(
            (hidden, hidden),
            "weight",
            candle_nn::init::DEFAULT_KAIMING_UNIFORM,
        )?;
        let queries = (0..blocks)
            .map(|k| linear(2 * hidden, hidden, vb.pp("query").pp(k)))
            .collect::<Result<_>>()?;
        let films = (0..blocks)
            .map(|k| linear(hidden, 2 * channels, vb.pp("film").pp(k)))
            .collect::<Result<_>>()?;
        Ok(WordAttentionHead { keys, queries, films })
    }

    /// `states` (N, T, H): the GRU's state after every word; `padding` (N, T): 0 at a
    /// question's real words and a large negative number past its end; `last` (N, H) the
    /// state after its last word. Returns the raw FiLM parameters (N, K, 2C).
    pub fn params(&self, states: &Tensor, padding: &Tensor, last: &Tensor) -> Result<Tensor> {
        let hidden = last.dim(1)?;
        let scale = 1.0 / (hidden as f64).sqrt();
        // (K h_t) · q = h_t · (Kᵀ q): folding the key weight into the query costs one (N, H)
        // product instead of one per word.
        let mut attended = last.zeros_like()?;
        let mut films = Vec::with_capacity(self.films.len());
        for (query, film) in self.queries.iter().zip(&self.films) {
            let query = query.forward(&Tensor::cat(&[last, &attended], 1)?)?;
            let folded = (query.matmul(&self.keys)? * scale)?;
            let scores = states.matmul(&folded.unsqueeze(2)?)?.squeeze(2)?;
            let weights = candle_nn::ops::softmax(&(scores + padding)?, D::Minus1)?;
            attended = weights.unsqueeze(1)?.matmul(states)?.squeeze(1)?;
            films.push(film.forward(&attended)?);
        }
        Tensor::stack(&films, 1)
    }
}

/// (N, T): 0 at each question's real tokens, and past its length a score low enough that
/// the softmax gives those steps no weight.
pub(crate) fn padding_scores(
    lengths: &[usize],
    steps: usize,
    device: &candle_core::Device,
) -> Result<Tensor> {
    let scores: Vec<f32> = lengths
        .iter()
        .flat_map(|&length| (0..steps).map(move |t| if t < length { 0.0 } else { -1e9 }))
        .collect();
    Tensor::from_vec(scores, (lengths.len(), steps), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn head(hidden: usize, channels: usize, blocks: usize) -> Result<(VarMap, WordAttentionHead)> {
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &Device::Cpu);
        let head = WordAttentionHead::new(hidden, channels, blocks, vb)?;
        Ok((map, head))
    }

    fn randn(shape: &[usize]) -> Result<Tensor> {
        Tensor::randn(0f32, 1.0, shape, &Device::Cpu)
    }

    fn largest_gap(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.max_all()?.to_scalar::<f32>()
    }

    /// The probe's unfolded form: a key for every word, then its dot product with the query.
    fn unfolded(
        head: &WordAttentionHead,
        states: &Tensor,
        padding: &Tensor,
        last: &Tensor,
    ) -> Result<Tensor> {
        let scale = 1.0 / (last.dim(1)? as f64).sqrt();
        let keys = states.broadcast_matmul(&head.keys.t()?)?;
        let mut attended = last.zeros_like()?;
        let mut films = vec![];
        for (query, film) in head.queries.iter().zip(&head.films) {
            let query = query.forward(&Tensor::cat(&[last, &attended], 1)?)?;
            let scores = (keys.matmul(&query.unsqueeze(2)?)?.squeeze(2)? * scale)?;
            let weights = candle_nn::ops::softmax(&(scores + padding)?, D::Minus1)?;
            attended = weights.unsqueeze(1)?.matmul(states)?.squeeze(1)?;
            films.push(film.forward(&attended)?);
        }
        Tensor::stack(&films, 1)
    }

    #[test]
    fn folding_the_key_weight_into_the_query_changes_nothing() -> Result<()> {
        let (_map, head) = head(6, 3, 2)?;
        let (states, last) = (randn(&[2, 5, 6])?, randn(&[2, 6])?);
        let padding = padding_scores(&[5, 3], 5, &Device::Cpu)?;
        let params = head.params(&states, &padding, &last)?;
        assert_eq!(params.dims(), &[2, 2, 6]);
        let gap = largest_gap(&params, &unfolded(&head, &states, &padding, &last)?)?;
        assert!(gap < 1e-5, "folded and unfolded keys differ by {gap}");
        Ok(())
    }

    #[test]
    fn words_past_a_question_s_end_change_nothing() -> Result<()> {
        let (_map, head) = head(4, 2, 3)?;
        let (states, last) = (randn(&[1, 6, 4])?, randn(&[1, 4])?);
        let padding = padding_scores(&[4], 6, &Device::Cpu)?;
        let before = head.params(&states, &padding, &last)?;
        // Scribble over the two padded steps.
        let junk = Tensor::full(100f32, (1, 2, 4), &Device::Cpu)?;
        let scribbled = Tensor::cat(&[&states.narrow(1, 0, 4)?, &junk], 1)?;
        let after = head.params(&scribbled, &padding, &last)?;
        assert_eq!(largest_gap(&before, &after)?, 0.0);
        Ok(())
    }

    #[test]
    fn every_variable_gets_a_gradient() -> Result<()> {
        let (map, head) = head(4, 2, 2)?;
        let (states, last) = (randn(&[3, 5, 4])?, randn(&[3, 4])?);
        let padding = padding_scores(&[5, 2, 1], 5, &Device::Cpu)?;
        let grads = head
            .params(&states, &padding, &last)?
            .sqr()?
            .sum_all()?
            .backward()?;
        let data = map.data().lock().unwrap();
        for (name, var) in data.iter() {
            let grad = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{name} has no gradient"));
            let size = grad.abs()?.sum_all()?.to_scalar::<f32>()?;
            assert!(size > 0.0, "{name}'s gradient is zero");
        }
        Ok(())
    }
}
