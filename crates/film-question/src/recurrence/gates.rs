//! One question's GRU gates at one time step, forward and backward: the element-wise part
//! of the recurrence, which the CPU passes (`cpu.rs`) run per question and step, and which
//! the GPU kernels (`cuda/gru.cu`) mirror.

use crate::activations::{sigmoid, tanh, Lanes, LANES};

/// Values per hidden unit and step that the forward keeps for the backward: the reset,
/// update and candidate gates, and the candidate's hidden projection W_hn·h + b_hn.
pub(crate) const KEPT: usize = 4;

/// One question's gates at one step: from its input projection `x` (3H) and hidden
/// projection `hh` (3H), both without bias, the biases `bias_ih` and `bias_hh` (3H each) and
/// the previous state (H), writes the new state (H) and the kept gates (4H). In groups of
/// [`LANES`] units so that the non-linearities vectorise.
pub(crate) fn forward_gates(
    h: usize,
    x: &[f32],
    hh: &[f32],
    biases: (&[f32], &[f32]),
    previous: &[f32],
    state: &mut [f32],
    kept: &mut [f32],
) {
    let whole = h / LANES * LANES;
    for j0 in (0..whole).step_by(LANES) {
        // A literal group size, so that every copy below is one vector move.
        gate_group(h, j0, LANES, x, hh, biases, previous, state, kept);
    }
    if whole < h {
        gate_group(h, whole, h - whole, x, hh, biases, previous, state, kept);
    }
}

/// Units `j0..j0 + lanes` of [`forward_gates`]; a short last group is padded with zeros and
/// only its real lanes are stored.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn gate_group(
    h: usize,
    j0: usize,
    lanes: usize,
    x: &[f32],
    hh: &[f32],
    (bias_ih, bias_hh): (&[f32], &[f32]),
    previous: &[f32],
    state: &mut [f32],
    kept: &mut [f32],
) {
    // Whole vectors in and out: writing lanes one at a time and reading them back as a
    // vector stalls on store forwarding.
    let load = |v: &[f32], at: usize| -> Lanes {
        let mut out = [0.0; LANES];
        out[..lanes].copy_from_slice(&v[at..at + lanes]);
        out
    };
    let sum = |a: Lanes, b: Lanes| -> Lanes {
        let mut out = a;
        for i in 0..LANES {
            out[i] += b[i];
        }
        out
    };
    let hn = sum(load(hh, 2 * h + j0), load(bias_hh, 2 * h + j0));
    let reset = sigmoid(sum(
        sum(load(x, j0), load(bias_ih, j0)),
        sum(load(hh, j0), load(bias_hh, j0)),
    ));
    let update = sigmoid(sum(
        sum(load(x, h + j0), load(bias_ih, h + j0)),
        sum(load(hh, h + j0), load(bias_hh, h + j0)),
    ));
    let x_n = sum(load(x, 2 * h + j0), load(bias_ih, 2 * h + j0));
    let mut pre_n = [0.0; LANES];
    for i in 0..LANES {
        pre_n[i] = x_n[i] + reset[i] * hn[i];
    }
    let candidate = tanh(pre_n);
    let previous = load(previous, j0);
    let mut next = [0.0; LANES];
    for i in 0..LANES {
        next[i] = candidate[i] + update[i] * (previous[i] - candidate[i]);
    }
    state[j0..j0 + lanes].copy_from_slice(&next[..lanes]);
    for (g, values) in [reset, update, candidate, hn].iter().enumerate() {
        kept[g * h + j0..g * h + j0 + lanes].copy_from_slice(&values[..lanes]);
    }
}

/// One question's gradients at one step, from its kept gates (4H), the gradient reaching
/// its state (H: from the output, and in `next` from step t+1) and its previous state (H):
/// the input projection's gradient `gp` (3H), the hidden projection's `ghh` (3H), and in
/// `next` the gradient reaching the previous state along the direct path.
pub(crate) fn backward_gates(
    h: usize,
    kept: &[f32],
    grad_state: &[f32],
    previous: &[f32],
    gp: &mut [f32],
    ghh: &mut [f32],
    next: &mut [f32],
) {
    // Every slice cut to exactly h values, so that the loop below has no bounds checks
    // left and vectorises.
    let (reset, rest) = kept.split_at(h);
    let (update, rest) = rest.split_at(h);
    let (candidate, hn) = rest.split_at(h);
    let hn = &hn[..h];
    let (gp_reset, rest) = gp.split_at_mut(h);
    let (gp_update, gp_candidate) = rest.split_at_mut(h);
    let gp_candidate = &mut gp_candidate[..h];
    let (ghh_reset, rest) = ghh.split_at_mut(h);
    let (ghh_update, ghh_candidate) = rest.split_at_mut(h);
    let ghh_candidate = &mut ghh_candidate[..h];
    let (grad_state, previous, next) = (&grad_state[..h], &previous[..h], &mut next[..h]);
    for j in 0..h {
        let (r, z, n) = (reset[j], update[j], candidate[j]);
        let dh = grad_state[j] + next[j];
        let d_candidate = dh * (1.0 - z) * (1.0 - n * n);
        let d_update = dh * (previous[j] - n) * z * (1.0 - z);
        let d_reset = d_candidate * hn[j] * r * (1.0 - r);
        gp_reset[j] = d_reset;
        gp_update[j] = d_update;
        gp_candidate[j] = d_candidate;
        ghh_reset[j] = d_reset;
        ghh_update[j] = d_update;
        ghh_candidate[j] = d_candidate * r;
        // The direct path h' = … + z ⊙ h; the path through W_hh is added by the caller.
        next[j] = dh * z;
    }
}
