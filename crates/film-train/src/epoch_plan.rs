//! The check that an epoch has a batch left to train on before the training loop enters it.
//!
//! The step counter, the epoch counter and the clock only advance when a batch is
//! trained, so an epoch without one would be repeated forever, under `--minutes` too.

/// Why an epoch of the training split has no batch to train on.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EpochPlanError {
    #[error(
        "epoch {epoch} of split {split:?} has no batches: {source_name} holds no questions \
         (an empty split cannot be trained on)"
    )]
    Empty {
        split: String,
        epoch: u64,
        source_name: String,
    },
    #[error(
        "the run stopped after batch {done} of epoch {epoch}, but split {split:?} now makes \
         only {batches} batches of {batch_size} from {questions} questions ({source_name}): \
         the training data changed since the run started; restore it or start a new run"
    )]
    Shrunk {
        split: String,
        epoch: u64,
        done: usize,
        batches: usize,
        batch_size: usize,
        questions: usize,
        source_name: String,
    },
}

/// What the training loop is about to enter: epoch `epoch` of `split`, whose plan has
/// `batches` batches cut from `questions` questions of `source_name` (the questions file,
/// or the generated questions), `done` of which a resumed run already trained.
pub struct EpochPlan<'a> {
    pub split: &'a str,
    pub source_name: &'a str,
    pub epoch: u64,
    pub questions: usize,
    pub batch_size: usize,
    pub batches: usize,
    pub done: usize,
}

impl EpochPlan<'_> {
    /// An error unless at least one batch of the epoch is left to train.
    pub fn check(&self) -> Result<(), EpochPlanError> {
        if self.batches == 0 {
            return Err(EpochPlanError::Empty {
                split: self.split.to_string(),
                epoch: self.epoch,
                source_name: self.source_name.to_string(),
            });
        }
        if self.done >= self.batches {
            return Err(EpochPlanError::Shrunk {
                split: self.split.to_string(),
                epoch: self.epoch,
                done: self.done,
                batches: self.batches,
                batch_size: self.batch_size,
                questions: self.questions,
                source_name: self.source_name.to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(batches: usize, done: usize) -> EpochPlan<'static> {
        EpochPlan {
            split: "train",
            source_name: "the questions file",
            epoch: 3,
            questions: batches * 16,
            batch_size: 16,
            batches,
            done,
        }
    }

    #[test]
    fn an_epoch_needs_a_batch_left() {
        assert_eq!(plan(3, 2).check(), Ok(()));
        let empty = plan(0, 0).check().unwrap_err().to_string();
        assert!(
            empty.contains("epoch 3 of split \"train\" has no batches"),
            "{empty}"
        );
        let shrunk = plan(1, 2).check().unwrap_err().to_string();
        assert!(
            shrunk.contains("stopped after batch 2 of epoch 3, but split \"train\" now makes only 1 batches"),
            "{shrunk}"
        );
    }
}
