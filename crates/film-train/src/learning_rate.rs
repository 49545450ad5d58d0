//! The learning rate of each step: an optional linear warmup over the first steps, the
//! configured rate, and an optional linear decay to zero over the end of the run's budget.
//!
//! A run's budget is epochs, minutes or both, so the decay is placed by the share of the
//! budget spent rather than by step number: under minutes the number of steps a run will
//! take is not known in advance.

use crate::presets::TrainingConfig;
use crate::run_dir::{RunConfig, RunState};

/// The rate of step `step` (1 for the first) under `training`, taken when `budget_spent`
/// (0 to 1) of the run's budget is spent.
pub fn learning_rate(training: &TrainingConfig, step: u64, budget_spent: f64) -> f64 {
    let warmed = match training.warmup_steps {
        0 => 1.0,
        n => (step as f64 / n as f64).min(1.0),
    };
    let kept = match training.lr_decay_from {
        Some(from) if budget_spent > from => ((1.0 - budget_spent) / (1.0 - from)).clamp(0.0, 1.0),
        _ => 1.0,
    };
    training.learning_rate * warmed * kept
}

/// The share of its budget a run has spent, from 0 to 1: under an epoch budget the epochs
/// done (the current one by its batches), under a time budget the minutes trained, under
/// both the larger, since the run stops at whichever it reaches first.
pub fn budget_spent(config: &RunConfig, state: &RunState, batches_per_epoch: usize) -> f64 {
    let by_epochs = config.epochs.map(|epochs| {
        let in_epoch = state.batches_done_in_epoch as f64 / batches_per_epoch.max(1) as f64;
        (state.epoch as f64 + in_epoch) / epochs.max(1) as f64
    });
    let by_minutes = config.minutes.map(|m| state.train_seconds / (m * 60.0));
    by_epochs
        .into_iter()
        .chain(by_minutes)
        .fold(0.0f64, f64::max)
        .clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::by_name;

    /// The rate of each step under lr 2e-3 with this warmup and decay.
    fn schedule(warmup_steps: u64, decay_from: Option<f64>) -> impl Fn(u64, f64) -> f64 {
        let mut training = by_name("tiny").unwrap().training;
        training.learning_rate = 2e-3;
        training.warmup_steps = warmup_steps;
        training.lr_decay_from = decay_from;
        move |step, spent| learning_rate(&training, step, spent)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn without_warmup_or_decay_every_step_takes_the_configured_rate() {
        let s = schedule(0, None);
        for (step, spent) in [(1, 0.0), (500, 0.4), (10_000, 0.99), (10_001, 1.0)] {
            assert_eq!(s(step, spent), 2e-3);
        }
    }

    #[test]
    fn the_decay_is_linear_to_zero_from_its_start_to_the_end_of_the_budget() {
        let s = schedule(0, Some(0.75));
        assert_eq!(s(100, 0.5), 2e-3);
        assert_eq!(s(100, 0.75), 2e-3);
        assert!(close(s(100, 0.875), 1e-3));
        assert!(close(s(100, 0.95), 2e-3 * 0.2));
        assert_eq!(s(100, 1.0), 0.0);
        // From the start of the budget: the whole run decays.
        assert!(close(schedule(0, Some(0.0))(1, 0.25), 1.5e-3));
    }

    #[test]
    fn warmup_and_decay_multiply() {
        let s = schedule(10, Some(0.5));
        assert!(close(s(5, 0.0), 1e-3));
        assert!(close(s(10, 0.0), 2e-3));
        assert!(close(s(5, 0.75), 0.5e-3));
    }

    fn config(epochs: Option<usize>, minutes: Option<f64>) -> RunConfig {
        let preset = by_name("tiny").unwrap();
        RunConfig {
            preset: preset.name,
            model: preset.model,
            training: preset.training,
            data: "data".into(),
            seed: 0,
            epochs,
            minutes,
        }
    }

    fn state(epoch: u64, batches_done_in_epoch: usize, train_seconds: f64) -> RunState {
        RunState {
            epoch,
            batches_done_in_epoch,
            train_seconds,
            ..RunState::default()
        }
    }

    #[test]
    fn the_budget_spent_counts_epochs_minutes_or_the_nearer_limit() {
        let s = state(3, 25, 90.0);
        assert!(close(budget_spent(&config(Some(10), None), &s, 100), 0.325));
        assert!(close(budget_spent(&config(None, Some(6.0)), &s, 100), 0.25));
        assert!(close(budget_spent(&config(Some(10), Some(6.0)), &s, 100), 0.325));
        assert!(close(budget_spent(&config(Some(10), Some(3.0)), &s, 100), 0.5));
        assert_eq!(budget_spent(&config(None, Some(1.0)), &s, 100), 1.0);
        assert_eq!(budget_spent(&config(None, None), &s, 100), 0.0);
    }
}
