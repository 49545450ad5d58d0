//! Dataset verification: run every question's program on its scene and compare
//! with the recorded answer. On real CLEVR this must agree on every question;
//! on generated data it checks the generator and the executor against each other.

use crate::executor::execute;
use crate::json::JsonError;
use crate::layout::SplitFiles;
use crate::scene::{Scene, ScenesFile};
use crate::stream::for_each_question;
use std::collections::HashMap;
use std::fmt;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("{release} split {split} has no scene graphs to verify against")]
    NoScenes { release: String, split: String },
}

/// Why one question failed verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The program ran and gave another answer.
    WrongAnswer { expected: String, executed: String },
    /// The program could not be run (ill-posed, unknown function, …).
    ExecutionFailed { expected: String, error: String },
    /// No scene in the scenes file has the question's `image_index`.
    NoScene,
}

/// One question that failed, by its position in the questions file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub position: usize,
    pub image_index: usize,
    pub question: String,
    pub problem: Problem,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Questions in the file.
    pub questions: usize,
    /// Questions with both a program and an answer, which were checked.
    pub checked: usize,
    pub matched: usize,
    /// Questions without a program or an answer (test split, CLEVR-Humans).
    pub unverifiable: usize,
    pub mismatches: Vec<Mismatch>,
}

impl VerifyReport {
    /// True when something was checked and everything checked matched: the
    /// condition for a zero exit code.
    pub fn passed(&self) -> bool {
        self.checked > 0 && self.mismatches.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let percent = if self.checked == 0 {
            0.0
        } else {
            100.0 * self.matched as f64 / self.checked as f64
        };
        writeln!(
            f,
            "{} questions, {} checked, {} match ({percent:.3} %), {} mismatch, {} without program or answer",
            self.questions,
            self.checked,
            self.matched,
            self.mismatches.len(),
            self.unverifiable
        )?;
        for m in &self.mismatches {
            write!(
                f,
                "  questions[{}] (image {}): {:?}: ",
                m.position, m.image_index, m.question
            )?;
            match &m.problem {
                Problem::WrongAnswer { expected, executed } => {
                    writeln!(f, "answer {expected:?}, program gives {executed:?}")?
                }
                Problem::ExecutionFailed { expected, error } => {
                    writeln!(f, "answer {expected:?}, program fails: {error}")?
                }
                Problem::NoScene => writeln!(f, "no scene with this image_index")?,
            }
        }
        if self.checked == 0 {
            writeln!(
                f,
                "nothing to verify: no question has both a program and an answer"
            )?;
        }
        Ok(())
    }
}

/// Verifies a split: reads its scenes, then streams its questions.
pub fn verify(files: &SplitFiles) -> Result<VerifyReport, VerifyError> {
    let scenes_path = files.scenes.as_ref().ok_or_else(|| VerifyError::NoScenes {
        release: files.release.to_string(),
        split: files.split.clone(),
    })?;
    let scenes = ScenesFile::read(scenes_path)?.scenes;
    // Keyed, not a vector indexed by image_index: a hostile index (10^12) must not size
    // an allocation.
    let by_index: HashMap<usize, Scene> = scenes.into_iter().map(|s| (s.image_index, s)).collect();
    let mut report = VerifyReport::default();
    for_each_question(&files.questions, |q| {
        let position = report.questions;
        report.questions += 1;
        let (Some(program), Some(expected)) = (&q.program, &q.answer) else {
            report.unverifiable += 1;
            return Ok(());
        };
        report.checked += 1;
        let problem = match by_index.get(&q.image_index) {
            None => Some(Problem::NoScene),
            Some(scene) => match execute(program, scene) {
                Ok(answer) if answer.to_string() == *expected => None,
                Ok(answer) => Some(Problem::WrongAnswer {
                    expected: expected.clone(),
                    executed: answer.to_string(),
                }),
                Err(e) => Some(Problem::ExecutionFailed {
                    expected: expected.clone(),
                    error: e.to_string(),
                }),
            },
        };
        match problem {
            None => report.matched += 1,
            Some(problem) => report.mismatches.push(Mismatch {
                position,
                image_index: q.image_index,
                question: q.question.clone(),
                problem,
            }),
        }
        Ok(())
    })?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::Release;

    #[test]
    fn a_huge_image_index_in_the_scenes_file_is_a_missing_scene_not_an_allocation() {
        let root = tempfile::tempdir().unwrap();
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini");
        for dir in ["questions", "scenes"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
            let name = format!("{dir}/CLEVR_val_{dir}.json");
            std::fs::copy(fixture.join(&name), root.path().join(&name)).unwrap();
        }
        let scenes_path = root.path().join("scenes/CLEVR_val_scenes.json");
        let mut scenes: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&scenes_path).unwrap()).unwrap();
        scenes["scenes"][1]["image_index"] = 1_000_000_000_000u64.into();
        std::fs::write(&scenes_path, scenes.to_string()).unwrap();

        let files = SplitFiles::clevr(root.path(), Release::V1, "val").unwrap();
        let report = verify(&files).unwrap();
        assert!(report.checked > 0);
        assert!(
            !report.mismatches.is_empty(),
            "image 1's questions lost their scene"
        );
        assert!(report
            .mismatches
            .iter()
            .all(|m| m.image_index == 1 && m.problem == Problem::NoScene));
        assert_eq!(report.matched + report.mismatches.len(), report.checked);
    }
}
