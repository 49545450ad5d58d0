//! CLEVR-style questions: candidates from the families in [`families`],
//! answered by the clevr crate's executor (which also rejects ambiguous
//! references), then a sequential pass that keeps answers balanced within
//! each family.

pub mod families;
pub mod program;
pub mod reference;
pub mod words;

use clevr::{execute, Question, Scene};
use families::{Candidate, FAMILIES};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::{HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct QuestionConfig {
    pub per_image: usize,
    /// Candidates drawn per wanted question, so the balancer has a choice.
    pub candidates_per_question: usize,
    /// Largest share of a yes/no family one answer may take.
    pub binary_share: f64,
    /// In families with k > 2 answers seen, one answer may take at most
    /// `spread_share / k` (twice its uniform share for the default).
    pub spread_share: f64,
    /// Questions a family accepts before the shares apply, so the first
    /// questions are not refused.
    pub balance_slack: usize,
}

impl Default for QuestionConfig {
    fn default() -> Self {
        Self {
            per_image: 10,
            candidates_per_question: 6,
            binary_share: 0.55,
            spread_share: 2.0,
            balance_slack: 3,
        }
    }
}

/// An answered candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answered {
    pub candidate: Candidate,
    pub answer: String,
}

/// Answered, well-posed, distinct candidates for one scene; deterministic
/// for `seed`.
pub fn candidates(scene: &Scene, count: usize, seed: u64) -> Vec<Answered> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(count);
    // Some families rarely fit a given scene; bound the attempts.
    for _ in 0..count * ATTEMPTS_PER_CANDIDATE {
        if out.len() == count || scene.objects.is_empty() {
            break;
        }
        let family = rng.random_range(0..FAMILIES.len());
        let Some(candidate) = families::generate(family, scene, &mut rng) else {
            continue;
        };
        // The executor is the judge: a program that does not run (e.g. a
        // `unique` over zero or several objects) is a degenerate question.
        let Ok(answer) = execute(&candidate.program, scene) else {
            continue;
        };
        if seen.insert(candidate.text.clone()) {
            out.push(Answered {
                candidate,
                answer: answer.to_string(),
            });
        }
    }
    out
}

const ATTEMPTS_PER_CANDIDATE: usize = 8;

/// Keeps per-family answer counts and decides which candidates to keep.
#[derive(Debug, Default)]
pub struct Balancer {
    counts: Vec<HashMap<String, usize>>,
}

impl Balancer {
    fn accepts(&self, family: usize, answer: &str, config: &QuestionConfig) -> bool {
        let Some(counts) = self.counts.get(family) else {
            return true;
        };
        let total: usize = counts.values().sum();
        let seen = counts.len() + usize::from(!counts.contains_key(answer));
        let share = if seen <= 2 {
            config.binary_share
        } else {
            config.spread_share / seen as f64
        };
        let current = counts.get(answer).copied().unwrap_or(0);
        ((current + 1) as f64) <= share * (total + 1) as f64 + config.balance_slack as f64
    }

    fn record(&mut self, family: usize, answer: &str) {
        if self.counts.len() <= family {
            self.counts.resize(family + 1, HashMap::new());
        }
        *self.counts[family].entry(answer.to_string()).or_insert(0) += 1;
    }

    /// Picks up to `want` candidates in order, skipping answers that would
    /// dominate their family.
    pub fn select(
        &mut self,
        candidates: Vec<Answered>,
        want: usize,
        config: &QuestionConfig,
    ) -> Vec<Answered> {
        let mut out = Vec::with_capacity(want);
        for c in candidates {
            if out.len() == want {
                break;
            }
            if self.accepts(c.candidate.family, &c.answer, config) {
                self.record(c.candidate.family, &c.answer);
                out.push(c);
            }
        }
        out
    }
}

/// Questions for every scene, numbered in scene order. Candidate generation
/// runs in parallel; balancing is one sequential pass, so the result
/// depends only on `seed`.
pub fn generate_questions(
    scenes: &[Scene],
    split: &str,
    config: &QuestionConfig,
    seed: u64,
) -> Vec<Question> {
    QuestionStream::new(split, config, seed).ask(scenes)
}

/// [`generate_questions`] a batch of scenes at a time, for a generator that does not hold
/// all its scenes: the balancer's counts and the question numbering carry over from one
/// batch to the next, so any split of the scenes into consecutive batches gives the
/// questions `generate_questions` gives for all of them.
pub struct QuestionStream<'a> {
    split: &'a str,
    config: &'a QuestionConfig,
    seed: u64,
    balancer: Balancer,
    asked: usize,
}

impl<'a> QuestionStream<'a> {
    pub fn new(split: &'a str, config: &'a QuestionConfig, seed: u64) -> Self {
        QuestionStream {
            split,
            config,
            seed,
            balancer: Balancer::default(),
            asked: 0,
        }
    }

    /// The questions about `scenes`, the scenes that follow those of the earlier calls.
    pub fn ask(&mut self, scenes: &[Scene]) -> Vec<Question> {
        let (config, seed) = (self.config, self.seed);
        let want = config.per_image;
        let pools: Vec<Vec<Answered>> = scenes
            .par_iter()
            .map(|scene| {
                let scene_seed = seed ^ (scene.image_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                candidates(scene, want * config.candidates_per_question, scene_seed)
            })
            .collect();
        let mut questions = Vec::new();
        for (scene, pool) in scenes.iter().zip(pools) {
            for chosen in self.balancer.select(pool, want, config) {
                questions.push(Question {
                    image_index: scene.image_index,
                    program: Some(chosen.candidate.program),
                    question_index: Some(self.asked),
                    image_filename: scene.image_filename.clone(),
                    question_family_index: Some(chosen.candidate.family),
                    split: self.split.to_string(),
                    answer: Some(chosen.answer),
                    question: chosen.candidate.text,
                });
                self.asked += 1;
            }
        }
        questions
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::CameraModel;
    use crate::render::Renderer;
    use crate::sampler::{SamplerConfig, SceneSampler};
    use crate::scene_graph::to_scene_graph;
    use clevr::QuestionType;

    fn scenes(n: usize) -> Vec<Scene> {
        let renderer = Renderer::default();
        let sampler = SceneSampler::new(SamplerConfig::default(), CameraModel::clevr(), &renderer);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        (0..n)
            .map(|i| to_scene_graph(&sampler.sample(&mut rng), "train", i))
            .collect()
    }

    #[test]
    fn questions_cover_every_family_type_and_hop_count_with_correct_answers() {
        let scenes = scenes(60);
        let questions = generate_questions(&scenes, "train", &QuestionConfig::default(), 1);
        assert!(questions.len() >= 60 * 8, "{} questions", questions.len());
        let families: HashSet<usize> = questions.iter().filter_map(|q| q.question_family_index).collect();
        assert_eq!(families.len(), FAMILIES.len(), "families used: {families:?}");
        let types: HashSet<QuestionType> = questions
            .iter()
            .filter_map(|q| QuestionType::of_program(q.program.as_ref()?))
            .collect();
        assert_eq!(types.len(), QuestionType::ALL.len());
        let mut hops = HashSet::new();
        for q in &questions {
            let program = q.program.as_ref().unwrap();
            let scene = &scenes[q.image_index];
            assert_eq!(
                execute(program, scene).unwrap().to_string(),
                *q.answer.as_ref().unwrap()
            );
            // The longest relate chain: relates reached through unique nodes.
            let mut depth = vec![0usize; program.len()];
            for (i, node) in program.iter().enumerate() {
                let below = node.inputs.iter().map(|&j| depth[j]).max().unwrap_or(0);
                depth[i] = below + usize::from(node.function == "relate");
            }
            hops.insert(depth.into_iter().max().unwrap_or(0));
        }
        for h in 0..=3 {
            assert!(hops.contains(&h), "no question with a {h}-hop relate chain");
        }
    }

    #[test]
    fn yes_no_answers_are_balanced_within_each_family() {
        let scenes = scenes(80);
        let questions = generate_questions(&scenes, "train", &QuestionConfig::default(), 2);
        let mut counts: HashMap<usize, HashMap<&str, usize>> = HashMap::new();
        for q in &questions {
            let answer = q.answer.as_deref().unwrap();
            *counts
                .entry(q.question_family_index.unwrap())
                .or_default()
                .entry(answer)
                .or_default() += 1;
        }
        for (family, answers) in counts {
            let total: usize = answers.values().sum();
            let top = answers.values().max().copied().unwrap_or(0);
            if answers.keys().all(|a| *a == "yes" || *a == "no") && total >= 30 {
                assert!(
                    top as f64 <= 0.7 * total as f64,
                    "family {}: {answers:?}",
                    FAMILIES[family]
                );
            }
        }
    }

    #[test]
    fn questions_asked_in_batches_are_those_asked_at_once() {
        let scenes = scenes(30);
        let config = QuestionConfig {
            per_image: 4,
            ..QuestionConfig::default()
        };
        let whole = generate_questions(&scenes, "val", &config, 11);
        let mut stream = QuestionStream::new("val", &config, 11);
        let mut batched = Vec::new();
        for range in [0..7, 7..8, 8..8, 8..30] {
            batched.extend(stream.ask(&scenes[range]));
        }
        assert_eq!(batched, whole);
        assert!(whole.len() > 30, "only {} questions", whole.len());
    }

    #[test]
    fn phrasing_varies_through_synonyms() {
        let scenes = scenes(30);
        let questions = generate_questions(&scenes, "train", &QuestionConfig::default(), 3);
        let text: String = questions
            .iter()
            .map(|q| q.question.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for word in [
            "thing", "object", "ball", "sphere", "shiny", "metal", "big", "large",
        ] {
            assert!(text.contains(word), "no {word:?} in the questions");
        }
    }
}
