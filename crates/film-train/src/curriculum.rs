//! Easy questions first (`--curriculum-steps`): how hard each training question is, from
//! the number of objects in its scene and the length of its program.
//!
//! Early in training, questions about a few objects with short programs tie words to
//! what they name with little ambiguity; the batcher ([`clevr::batch::Curriculum`])
//! draws the first steps' batches from the easiest questions, a pool that grows to all
//! of them. docs/results.md has the measured effect.

use std::collections::HashMap;

use anyhow::{bail, Result};
use clevr::batch::Curriculum;
use clevr::dataset::QuestionSet;
use clevr::Scene;

/// The share of the easiest questions that the first curriculum step draws from.
pub const START_FRACTION: f64 = 0.2;

/// The curriculum of a run that asked for one over `steps` steps.
pub fn curriculum(steps: u64) -> Curriculum {
    Curriculum {
        steps,
        start_fraction: START_FRACTION,
    }
}

/// Objects in each of `scenes`, by `image_index`.
pub fn object_counts(scenes: &[Scene]) -> HashMap<usize, usize> {
    scenes.iter().map(|s| (s.image_index, s.objects.len())).collect()
}

/// Each question's difficulty: its scene's object count and its program's length, each
/// scaled to 0..1 over the set, added. Lower is easier.
pub fn difficulty(set: &QuestionSet, objects: &HashMap<usize, usize>) -> Result<Vec<f32>> {
    let mut counts = Vec::with_capacity(set.len());
    for i in 0..set.len() {
        let image = set.image_index[i] as usize;
        let Some(&n) = objects.get(&image) else {
            bail!("question {i} is about image_index {image}, which the scene file does not have");
        };
        counts.push(n as f32);
    }
    let lengths: Vec<f32> = match set.program_lengths.len() {
        n if n == set.len() => set.program_lengths.iter().map(|&l| l as f32).collect(),
        _ => vec![0.0; set.len()],
    };
    if lengths.iter().all(|&l| l == 0.0) {
        bail!("a curriculum ranks questions by their programs' length, and these questions have no programs");
    }
    let (counts, lengths) = (scaled(&counts), scaled(&lengths));
    Ok(counts.iter().zip(&lengths).map(|(c, l)| c + l).collect())
}

/// `values` mapped linearly onto 0..1 (all 0 when they are all equal).
fn scaled(values: &[f32]) -> Vec<f32> {
    let lo = values.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let span = hi - lo;
    values
        .iter()
        .map(|&v| if span > 0.0 { (v - lo) / span } else { 0.0 })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_objects_and_shorter_programs_are_easier() {
        let set = QuestionSet {
            image_index: vec![0, 1, 0, 1],
            program_lengths: vec![3, 3, 9, 9],
            ..QuestionSet::default()
        };
        let objects = HashMap::from([(0, 3), (1, 10)]);
        let d = difficulty(&set, &objects).unwrap();
        assert_eq!(d, [0.0, 1.0, 1.0, 2.0]);
    }

    #[test]
    fn a_question_without_its_scene_or_program_is_an_error() {
        let set = QuestionSet {
            image_index: vec![0, 5],
            program_lengths: vec![3, 4],
            ..QuestionSet::default()
        };
        let objects = HashMap::from([(0, 3)]);
        let err = difficulty(&set, &objects).unwrap_err().to_string();
        assert!(err.contains("question 1 is about image_index 5"), "{err}");
        let no_programs = QuestionSet {
            image_index: vec![0],
            program_lengths: vec![0],
            ..QuestionSet::default()
        };
        let err = difficulty(&no_programs, &objects).unwrap_err().to_string();
        assert!(err.contains("no programs"), "{err}");
    }
}
