//! Questions from templates in the official CLEVR generator's format
//! (facebookresearch/clevr-dataset-gen, `question_generation/`), by its rules: the
//! templates are tried on each scene in order of how few questions each has produced so
//! far, each is filled in by a depth-first search over its slots ([`mod@instantiate`]), the
//! first ones that fit give the scene's questions, and per-template answer counts (reset
//! every few hundred scenes) hold back answers that run ahead. Every question's answer
//! comes from the clevr crate's executor.
//!
//! The project's own templates, written in the same format, are built in
//! ([`TemplateSet::builtin`], files under `crates/clevr-synth/templates/`); a folder of
//! official templates, or anyone's, is read with [`TemplateSet::read_dir`].

pub mod format;
pub mod instantiate;
pub mod text;

pub use format::{TemplateError, TemplateSet};

use clevr::{Question, Scene};
use instantiate::{instantiate, AnswerCounts, SceneIndex};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The project's own templates (`crates/clevr-synth/templates/`), compiled in.
const BUILTIN_METADATA: &str = include_str!("../../templates/metadata.json");
const BUILTIN_SYNONYMS: &str = include_str!("../../templates/synonyms.json");
const BUILTIN_FILES: [(&str, &str); 9] = [
    (
        "compare_integer.json",
        include_str!("../../templates/families/compare_integer.json"),
    ),
    (
        "comparison.json",
        include_str!("../../templates/families/comparison.json"),
    ),
    (
        "one_hop.json",
        include_str!("../../templates/families/one_hop.json"),
    ),
    (
        "same_relate.json",
        include_str!("../../templates/families/same_relate.json"),
    ),
    (
        "single_and.json",
        include_str!("../../templates/families/single_and.json"),
    ),
    (
        "single_or.json",
        include_str!("../../templates/families/single_or.json"),
    ),
    (
        "three_hop.json",
        include_str!("../../templates/families/three_hop.json"),
    ),
    (
        "two_hop.json",
        include_str!("../../templates/families/two_hop.json"),
    ),
    (
        "zero_hop.json",
        include_str!("../../templates/families/zero_hop.json"),
    ),
];

impl TemplateSet {
    /// The built-in templates: CLEVR's 90 question families in the project's own words
    /// (docs/embedded-dataset.md, "Questions").
    pub fn builtin() -> TemplateSet {
        // The files are part of the build and a unit test reads them, so a failure here
        // is a broken build, not bad input.
        fn parse<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> T {
            serde_json::from_str(text).unwrap_or_else(|e| panic!("built-in {what}: {e}"))
        }
        let metadata = parse("metadata.json", BUILTIN_METADATA);
        let synonyms = parse("synonyms.json", BUILTIN_SYNONYMS);
        let files = BUILTIN_FILES
            .iter()
            .map(|(name, text)| (name.to_string(), parse(name, text)))
            .collect();
        TemplateSet::new(
            std::path::Path::new("built-in metadata.json"),
            metadata,
            synonyms,
            files,
        )
        .unwrap_or_else(|e| panic!("built-in templates: {e}"))
    }

    /// Positions of the templates that look one object up by its attributes and ask for
    /// one of its attributes ("What color is the large metal cube?"): no relation, no
    /// comparison, no set operation. The simplest question whose answer depends on the
    /// image, which `--lookups-first` trains on alone before the rest.
    pub fn lookups(&self) -> Vec<usize> {
        self.queries_through(&[])
    }

    /// Positions of the templates that look one object up, directly or across one spatial
    /// relation, and ask for one of its attributes: the [lookups](Self::lookups) and
    /// "What color is the cube left of the large sphere?". `--relations-first` trains on
    /// them after the lookups, so that one relation is learnt before questions build on it.
    pub fn relation_lookups(&self) -> Vec<usize> {
        self.queries_through(&["relate_filter_unique"])
    }

    /// Templates that end in a query of one object found by the lookup steps alone, plus
    /// at most one of `also` (so at most one relation when `also` names relate steps).
    fn queries_through(&self, also: &[&str]) -> Vec<usize> {
        const LOOKUP_STEPS: [&str; 4] = ["scene", "filter", "filter_unique", "unique"];
        self.templates
            .iter()
            .enumerate()
            .filter(|(_, t)| match t.template.nodes.split_last() {
                Some((last, before)) => {
                    let extra = before
                        .iter()
                        .filter(|n| also.contains(&n.function.as_str()))
                        .count();
                    last.function.starts_with("query_")
                        && extra <= 1
                        && before.iter().all(|n| {
                            LOOKUP_STEPS.contains(&n.function.as_str()) || also.contains(&n.function.as_str())
                        })
                }
                None => false,
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Positions of the templates whose objects are all named by their attributes alone:
    /// no relation, no "same … as", no "and" or "or". CLEVR's zero-hop questions (the
    /// lookups, counts and exists) and the comparisons of two such objects or counts,
    /// which `--zero-hop-first` trains on after the lookups and before the rest.
    pub fn zero_hop(&self) -> Vec<usize> {
        self.templates
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.template.nodes.iter().all(|n| {
                    let f = n.function.as_str();
                    !(f.starts_with("relate") || f.starts_with("same_") || f == "union" || f == "intersect")
                })
            })
            .map(|(i, _)| i)
            .collect()
    }
}

/// How many questions to ask and how the balance is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateConfig {
    /// Templates filled in per scene, one question each.
    pub per_image: usize,
    /// Scenes after which the template and answer counts start again from zero, so the
    /// balance stays local (the official generator's `--reset_counts_every`).
    pub reset_every: usize,
    /// Search steps one template may take on one scene before it is given up there.
    pub max_states: usize,
    /// The templates asked from, as positions in the set; all of them when `None`.
    pub only: Option<Vec<usize>>,
    /// Fill a template in more than once on a scene (other values, never the same
    /// question twice) until `per_image` questions are found. The official generator asks
    /// each template at most once per scene; a few templates need this to give a scene
    /// as many questions as all of them do.
    pub repeat: bool,
}

impl Default for TemplateConfig {
    fn default() -> Self {
        TemplateConfig {
            per_image: 10,
            reset_every: 250,
            max_states: 2_000,
            only: None,
            repeat: false,
        }
    }
}

/// Asks about scenes a batch at a time; counts and question numbering carry over from one
/// batch to the next, so any split of the scenes into consecutive batches gives the same
/// questions.
pub struct TemplateStream<'a> {
    set: &'a TemplateSet,
    config: &'a TemplateConfig,
    split: &'a str,
    seed: u64,
    template_counts: Vec<usize>,
    answer_counts: Vec<AnswerCounts>,
    scenes_seen: usize,
    asked: usize,
}

impl<'a> TemplateStream<'a> {
    pub fn new(set: &'a TemplateSet, split: &'a str, config: &'a TemplateConfig, seed: u64) -> Self {
        TemplateStream {
            set,
            config,
            split,
            seed,
            template_counts: Vec::new(),
            answer_counts: Vec::new(),
            scenes_seen: 0,
            asked: 0,
        }
    }

    fn reset_counts(&mut self) {
        self.template_counts = vec![0; self.set.templates.len()];
        self.answer_counts = self
            .set
            .templates
            .iter()
            .map(|t| AnswerCounts::new(&t.answers))
            .collect();
    }

    /// The questions about `scenes`, the scenes that follow those of the earlier calls.
    pub fn ask(&mut self, scenes: &[Scene]) -> Vec<Question> {
        let mut questions = Vec::new();
        for scene in scenes {
            if self.scenes_seen.is_multiple_of(self.config.reset_every.max(1)) {
                self.reset_counts();
            }
            self.scenes_seen += 1;
            let scene_seed = self.seed ^ (scene.image_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let mut rng = ChaCha8Rng::seed_from_u64(scene_seed);
            let Some(index) = SceneIndex::new(scene) else {
                continue;
            };
            // The least used templates first; a stable sort keeps file order among equals.
            let mut order: Vec<usize> = match &self.config.only {
                Some(only) => only.clone(),
                None => (0..self.set.templates.len()).collect(),
            };
            order.sort_by_key(|&t| self.template_counts[t]);
            let rounds = if self.config.repeat {
                self.config.per_image
            } else {
                1
            };
            let mut asked_here = 0;
            // Kept only when a template may be asked again, to refuse a repeat.
            let mut programs_here: Vec<Vec<clevr::ProgramNode>> = Vec::new();
            'rounds: for _ in 0..rounds {
                let before = asked_here;
                for &family in &order {
                    if asked_here == self.config.per_image {
                        break 'rounds;
                    }
                    let loaded = &self.set.templates[family];
                    let found = instantiate(
                        self.set,
                        loaded,
                        &index,
                        &mut self.answer_counts[family],
                        self.config.max_states,
                        &mut rng,
                    );
                    let Some(found) = found else { continue };
                    if self.config.repeat {
                        if programs_here.contains(&found.program) {
                            continue;
                        }
                        programs_here.push(found.program.clone());
                    }
                    let question =
                        text::realise(&loaded.template.text, &found.filled, &self.set.synonyms, &mut rng);
                    questions.push(Question {
                        image_index: scene.image_index,
                        program: Some(found.program),
                        question_index: Some(self.asked),
                        image_filename: scene.image_filename.clone(),
                        question_family_index: Some(family),
                        split: self.split.to_string(),
                        answer: Some(found.answer),
                        question,
                    });
                    self.asked += 1;
                    self.template_counts[family] += 1;
                    asked_here += 1;
                }
                if asked_here == before {
                    break;
                }
            }
        }
        questions
    }
}

/// Which of CLEVR's nine template files a question's program belongs to, told from the
/// program alone so that any questions file can be counted (the official generator's raw
/// output names the file; the release files do not): an integer comparison, an attribute
/// comparison, a `same_*` question, an "or" (union), an "and" (intersect), and otherwise by
/// the number of `relate` steps.
pub fn construction(program: &[clevr::ProgramNode]) -> &'static str {
    let functions: Vec<&str> = program.iter().map(|n| n.function.as_str()).collect();
    let last = functions.last().copied().unwrap_or_default();
    if matches!(last, "equal_integer" | "less_than" | "greater_than") {
        "compare_integer"
    } else if last.starts_with("equal_") {
        "comparison"
    } else if functions.iter().any(|f| f.starts_with("same_")) {
        "same_relate"
    } else if functions.contains(&"union") {
        "single_or"
    } else if functions.contains(&"intersect") {
        "single_and"
    } else {
        match functions.iter().filter(|&&f| f == "relate").count() {
            0 => "zero_hop",
            1 => "one_hop",
            2 => "two_hop",
            _ => "three_hop",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::CameraModel;
    use crate::render::Renderer;
    use crate::sampler::{SamplerConfig, SceneSampler};
    use crate::scene_graph::to_scene_graph;
    use clevr::{execute, ProgramNode, QuestionType};
    use std::collections::{BTreeMap, BTreeSet, HashMap};

    fn scenes(n: usize) -> Vec<Scene> {
        let renderer = Renderer::default();
        let sampler = SceneSampler::new(SamplerConfig::default(), CameraModel::clevr(), &renderer);
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        (0..n)
            .map(|i| to_scene_graph(&sampler.sample(&mut rng), "train", i))
            .collect()
    }

    fn ask(scenes: &[Scene], seed: u64) -> Vec<Question> {
        let set = TemplateSet::builtin();
        TemplateStream::new(&set, "train", &TemplateConfig::default(), seed).ask(scenes)
    }

    /// `program` with node `at` replaced by `scene` and the nodes the answer no longer
    /// needs removed.
    fn without_relate(program: &[ProgramNode], at: usize) -> Vec<ProgramNode> {
        let mut nodes = program.to_vec();
        nodes[at] = ProgramNode::new("scene", &[]);
        let mut used = vec![false; nodes.len()];
        let mut pending = vec![nodes.len() - 1];
        while let Some(i) = pending.pop() {
            used[i] = true;
            pending.extend(nodes[i].inputs.iter().filter(|&&j| !used[j]));
        }
        let mut renumbered = HashMap::new();
        let mut kept = Vec::new();
        for (i, mut node) in nodes.into_iter().enumerate().filter(|(i, _)| used[*i]) {
            node.inputs = node.inputs.iter().map(|j| renumbered[j]).collect();
            renumbered.insert(i, kept.len());
            kept.push(node);
        }
        kept
    }

    #[test]
    fn every_family_type_and_construction_comes_with_the_executors_answer() {
        let scenes = scenes(120);
        let questions = ask(&scenes, 1);
        assert_eq!(questions.len(), 1200, "ten questions about every scene");
        let families: BTreeSet<usize> = questions.iter().filter_map(|q| q.question_family_index).collect();
        assert!(
            families.len() >= 85,
            "only {} of 90 families used",
            families.len()
        );
        let types: BTreeSet<QuestionType> = questions
            .iter()
            .filter_map(|q| QuestionType::of_program(q.program.as_ref()?))
            .collect();
        assert_eq!(types.len(), QuestionType::ALL.len());
        let constructions: BTreeSet<&str> = questions
            .iter()
            .map(|q| construction(q.program.as_ref().unwrap()))
            .collect();
        assert_eq!(constructions.len(), 9, "{constructions:?}");
        let set = TemplateSet::builtin();
        let mut checked_relations = 0;
        for q in &questions {
            let program = q.program.as_ref().unwrap();
            let scene = &scenes[q.image_index];
            let answer = execute(program, scene).unwrap().to_string();
            assert_eq!(&answer, q.answer.as_ref().unwrap(), "{}", q.question);
            // Where the template has a bare `relate` (the official rule; composite relate
            // options are thinned instead), no relation is idle: without any one of them
            // the answer changes.
            let template = &set.templates[q.question_family_index.unwrap()].template;
            if !template.nodes.iter().any(|n| n.function == "relate") {
                continue;
            }
            for (at, node) in program.iter().enumerate().filter(|(_, n)| n.function == "relate") {
                checked_relations += 1;
                let shortened = without_relate(program, at);
                let other = execute(&shortened, scene).map(|a| a.to_string());
                assert_ne!(
                    other.as_ref(),
                    Ok(&answer),
                    "degenerate: {} (relate at {at}: {node:?})",
                    q.question
                );
            }
        }
        assert!(
            checked_relations >= 20,
            "only {checked_relations} relations checked"
        );
    }

    #[test]
    fn a_queried_attribute_never_describes_its_object() {
        let scenes = scenes(60);
        for q in ask(&scenes, 2) {
            let program = q.program.unwrap();
            for node in program.iter().filter(|n| n.function.starts_with("query_")) {
                let kind = &node.function["query_".len()..];
                // Walk from the queried `unique` back through the filters that pick it out.
                let mut at = node.inputs[0];
                assert_eq!(program[at].function, "unique");
                at = program[at].inputs[0];
                while program[at].function.starts_with("filter_") {
                    assert_ne!(program[at].function, format!("filter_{kind}"), "{}", q.question);
                    at = program[at].inputs[0];
                }
            }
        }
    }

    #[test]
    fn yes_no_answers_are_balanced_within_each_family() {
        let scenes = scenes(300);
        let mut counts: BTreeMap<usize, BTreeMap<String, usize>> = BTreeMap::new();
        for q in ask(&scenes, 3) {
            *counts
                .entry(q.question_family_index.unwrap())
                .or_default()
                .entry(q.answer.unwrap())
                .or_default() += 1;
        }
        for (family, answers) in counts {
            let total: usize = answers.values().sum();
            if answers.keys().all(|a| a == "yes" || a == "no") && total >= 20 {
                let top = answers.values().max().copied().unwrap_or(0);
                assert!(top as f64 <= 0.65 * total as f64, "family {family}: {answers:?}");
            }
        }
    }

    #[test]
    fn lookups_alone_repeated_fill_a_scene_with_distinct_lookups() {
        let set = TemplateSet::builtin();
        let lookups = set.lookups();
        // CLEVR's four zero-hop queries: size, colour, material and shape.
        assert_eq!(lookups.len(), 4);
        let scenes = scenes(20);
        let ask_with = |repeat| {
            let config = TemplateConfig {
                per_image: 8,
                only: Some(lookups.clone()),
                repeat,
                ..TemplateConfig::default()
            };
            TemplateStream::new(&set, "train", &config, 5).ask(&scenes)
        };
        let once = ask_with(false);
        assert!(once.len() <= 4 * scenes.len());
        let repeated = ask_with(true);
        assert!(repeated.len() > 6 * scenes.len(), "{} lookups", repeated.len());
        for q in &repeated {
            assert!(lookups.contains(&q.question_family_index.unwrap()));
            let program = q.program.as_ref().unwrap();
            assert!(
                program.last().unwrap().function.starts_with("query_"),
                "{}",
                q.question
            );
            assert!(program.iter().all(|n| n.function != "relate"), "{}", q.question);
        }
        for scene in &scenes {
            let programs: Vec<_> = repeated
                .iter()
                .filter(|q| q.image_index == scene.image_index)
                .map(|q| q.program.clone())
                .collect();
            for (i, p) in programs.iter().enumerate() {
                assert!(
                    !programs[..i].contains(p),
                    "scene {} asked twice",
                    scene.image_index
                );
            }
        }
    }

    /// The questions of `only`, each filled in as often as a scene allows, about 20 scenes.
    fn ask_repeated(set: &TemplateSet, only: &[usize], seed: u64) -> Vec<Question> {
        let config = TemplateConfig {
            only: Some(only.to_vec()),
            repeat: true,
            ..TemplateConfig::default()
        };
        TemplateStream::new(set, "train", &config, seed).ask(&scenes(20))
    }

    #[test]
    fn relation_lookups_look_up_across_at_most_one_relation() {
        let set = TemplateSet::builtin();
        let relation_lookups = set.relation_lookups();
        // The four lookups and one_hop.json's four queries across a relation.
        assert_eq!(relation_lookups.len(), 8);
        assert!(set.lookups().iter().all(|t| relation_lookups.contains(t)));
        let questions = ask_repeated(&set, &relation_lookups, 4);
        let mut relations_seen = BTreeSet::new();
        for q in &questions {
            let program = q.program.as_ref().unwrap();
            let relations = program.iter().filter(|n| n.function == "relate").count();
            assert!(relations <= 1, "{}", q.question);
            assert!(
                program.last().unwrap().function.starts_with("query_"),
                "{}",
                q.question
            );
            assert!(
                program.iter().all(|n| !n.function.starts_with("same_")
                    && n.function != "union"
                    && n.function != "intersect"),
                "{}",
                q.question
            );
            relations_seen.insert(relations);
        }
        assert_eq!(relations_seen, BTreeSet::from([0, 1]), "both kinds are asked");
    }

    #[test]
    fn zero_hop_templates_name_every_object_by_its_attributes() {
        let set = TemplateSet::builtin();
        let zero_hop = set.zero_hop();
        // Six of zero_hop.json, four attribute comparisons and three count comparisons.
        assert_eq!(zero_hop.len(), 13);
        assert!(set.lookups().iter().all(|t| zero_hop.contains(t)));
        let questions = ask_repeated(&set, &zero_hop, 3);
        let mut constructions = BTreeSet::new();
        for q in &questions {
            let program = q.program.as_ref().unwrap();
            assert!(
                program.iter().all(|n| n.function != "relate"
                    && !n.function.starts_with("same_")
                    && n.function != "union"
                    && n.function != "intersect"),
                "{}",
                q.question
            );
            constructions.insert(construction(program));
        }
        let expected = BTreeSet::from(["compare_integer", "comparison", "zero_hop"]);
        assert_eq!(constructions, expected);
    }

    #[test]
    fn questions_asked_in_batches_are_those_asked_at_once() {
        let scenes = scenes(30);
        let set = TemplateSet::builtin();
        let config = TemplateConfig {
            per_image: 4,
            reset_every: 7,
            ..TemplateConfig::default()
        };
        let whole = TemplateStream::new(&set, "val", &config, 11).ask(&scenes);
        let mut stream = TemplateStream::new(&set, "val", &config, 11);
        let mut batched = Vec::new();
        for range in [0..7, 7..8, 8..8, 8..30] {
            batched.extend(stream.ask(&scenes[range]));
        }
        assert_eq!(batched, whole);
        assert_eq!(whole.len(), 120);
    }

    #[test]
    fn phrasing_speaks_clevrs_language() {
        let scenes = scenes(60);
        let text: String = ask(&scenes, 4)
            .iter()
            .map(|q| q.question.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        for words in [
            "thing",
            "object",
            "ball",
            "sphere",
            "block",
            "cube",
            "shiny",
            "metallic",
            "matte",
            "rubber",
            "big",
            "large",
            "tiny",
            "small",
            "There is",
            ";",
            " its ",
            "same",
            "both",
            "greater",
            "less",
            "equal",
            "another",
            "left of",
            "right of",
            "in front of",
            "behind",
            "how",
        ] {
            assert!(text.contains(words), "no {words:?} in the questions");
        }
    }

    #[test]
    fn constructions_are_told_from_the_program() {
        let n = |f: &str, inputs: &[usize]| ProgramNode::new(f, inputs);
        let count = vec![n("scene", &[]), n("count", &[0])];
        assert_eq!(construction(&count), "zero_hop");
        let related = vec![
            n("scene", &[]),
            n("unique", &[0]),
            n("relate", &[1]),
            n("unique", &[2]),
            n("relate", &[3]),
            n("exist", &[4]),
        ];
        assert_eq!(construction(&related), "two_hop");
        let same = vec![
            n("scene", &[]),
            n("unique", &[0]),
            n("same_color", &[1]),
            n("count", &[2]),
        ];
        assert_eq!(construction(&same), "same_relate");
        let compare = vec![
            n("scene", &[]),
            n("count", &[0]),
            n("scene", &[]),
            n("count", &[2]),
            n("greater_than", &[1, 3]),
        ];
        assert_eq!(construction(&compare), "compare_integer");
    }
}
