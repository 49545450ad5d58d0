//! A split's questions in the compact form training uses.
//!
//! One streaming pass turns the questions file into flat arrays: token ids of all
//! questions back to back, plus per-question image, answer, family and type.
//! Nothing else from the JSON survives (programs only on request), which is what
//! keeps the train split at about a hundred bytes per question.

use crate::json::JsonError;
use crate::layout::SplitFiles;
use crate::question::{ProgramNode, Question};
use crate::question_type::QuestionType;
use crate::stream::for_each_record;
use crate::vocab::{question_tokens, AnswerIndex, QuestionVocab, TokenizerConfig, VocabError, Vocabulary};
use rayon::prelude::*;
use serde::de::{self, DeserializeOwned};
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};

/// The most tokens (`<START>` and `<END>` included) a question may have. Batches are padded
/// to their longest question and the GRU unrolls over it, so one question of a hundred
/// thousand words would cost as much as thousands of batches.
pub const MAX_QUESTION_TOKENS: usize = 256;

/// Marks a question without answer (test split) in [`QuestionSet::answers`].
pub const NO_ANSWER: u32 = u32::MAX;
/// Marks a question without family (test split, CLEVR-Humans).
pub const NO_FAMILY: u16 = u16::MAX;
/// Marks a question whose type is unknown (no program: test split, CLEVR-Humans).
pub const NO_TYPE: u8 = u8::MAX;

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error(transparent)]
    Vocab(#[from] VocabError),
    #[error("more than 2^32 question tokens in one split")]
    TooManyTokens,
    #[error(
        "{origin}: questions[{position}] has {tokens} tokens, more than the limit of \
         {MAX_QUESTION_TOKENS} (CLEVR's questions have a few dozen)"
    )]
    QuestionTooLong {
        origin: String,
        position: usize,
        tokens: usize,
    },
    #[error(
        "question {position} is about image {image:?}, which is not among the {known} images of the set whose image cache it would read"
    )]
    UnknownImage {
        position: usize,
        image: String,
        known: usize,
    },
}

/// What to keep while loading.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions {
    /// Keep each question's program (for verification or program-supervised models).
    pub keep_programs: bool,
}

/// Why a question was left out of a [`QuestionSet`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// Its answer is not in the answer index (e.g. a val answer never seen in train):
    /// the classifier has no output for it, so it can be neither trained nor scored.
    UnknownAnswer { answer: String },
}

/// One skipped question, by its position in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// 0-based position in the file's `questions` list.
    pub position: usize,
    pub reason: SkipReason,
}

/// What loading did, for the caller to print.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    pub read: usize,
    pub kept: usize,
    pub skipped: Vec<Skip>,
}

impl std::fmt::Display for LoadReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} questions read, {} kept", self.read, self.kept)?;
        if !self.skipped.is_empty() {
            write!(f, ", {} skipped", self.skipped.len())?;
            for skip in self.skipped.iter().take(5) {
                match &skip.reason {
                    SkipReason::UnknownAnswer { answer } => write!(
                        f,
                        "\n  questions[{}]: answer {answer:?} is not in the answer index",
                        skip.position
                    )?,
                }
            }
            if self.skipped.len() > 5 {
                write!(f, "\n  … and {} more", self.skipped.len() - 5)?;
            }
        }
        Ok(())
    }
}

/// A split's questions, flat. Question `i` has tokens
/// `tokens[offsets[i]..offsets[i + 1]]` (with `<START>` and `<END>`).
#[derive(Debug, Clone, Default)]
pub struct QuestionSet {
    pub tokens: Vec<u32>,
    pub offsets: Vec<u32>,
    /// The scene / image index of each question (`image_index` in the JSON).
    pub image_index: Vec<u32>,
    /// Position of each question's image in [`QuestionSet::images`].
    pub image_slot: Vec<u32>,
    /// Distinct image file names, in order of first use.
    pub images: Vec<String>,
    /// Answer ids, or [`NO_ANSWER`].
    pub answers: Vec<u32>,
    /// `question_family_index`, or [`NO_FAMILY`].
    pub families: Vec<u16>,
    /// [`QuestionType::index`], or [`NO_TYPE`].
    pub types: Vec<u8>,
    /// Nodes in each question's program, 0 without one: a measure of how hard it is.
    pub program_lengths: Vec<u16>,
    pub programs: Option<Vec<Vec<ProgramNode>>>,
}

impl QuestionSet {
    pub fn len(&self) -> usize {
        self.image_index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.image_index.is_empty()
    }

    /// The token ids of question `i`.
    pub fn question_tokens(&self, i: usize) -> &[u32] {
        &self.tokens[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    pub fn question_type(&self, i: usize) -> Option<QuestionType> {
        QuestionType::ALL.get(self.types[i] as usize).copied()
    }

    /// Bytes held on the heap (capacity, not length): the "final in-memory size"
    /// that the streaming parse is measured against.
    pub fn heap_bytes(&self) -> usize {
        fn bytes<T>(v: &Vec<T>) -> usize {
            v.capacity() * std::mem::size_of::<T>()
        }
        bytes(&self.tokens)
            + bytes(&self.offsets)
            + bytes(&self.image_index)
            + bytes(&self.image_slot)
            + bytes(&self.answers)
            + bytes(&self.families)
            + bytes(&self.types)
            + bytes(&self.program_lengths)
            + bytes(&self.images)
            + self.images.iter().map(String::capacity).sum::<usize>()
            + self.programs.as_ref().map_or(0, |p| {
                bytes(p)
                    + p.iter()
                        .flat_map(|nodes| nodes.iter())
                        .map(|n| {
                            std::mem::size_of::<ProgramNode>()
                                + n.function.capacity()
                                + n.inputs.capacity() * std::mem::size_of::<usize>()
                                + n.value_inputs
                                    .iter()
                                    .map(|s| std::mem::size_of::<String>() + s.capacity())
                                    .sum::<usize>()
                        })
                        .sum::<usize>()
            })
    }

    /// Streams the questions file of `files` into a set, encoding questions with
    /// `vocab`. Questions with an answer outside the index are skipped and reported.
    pub fn load(
        files: &SplitFiles,
        vocab: &Vocabulary,
        options: LoadOptions,
    ) -> Result<(QuestionSet, LoadReport), DatasetError> {
        if options.keep_programs {
            Self::load_records::<Vec<ProgramNode>>(files, vocab, true)
        } else {
            Self::load_records::<LastFunction>(files, vocab, false)
        }
    }

    /// Encodes questions held in memory (generated ones, for instance) as
    /// [`QuestionSet::load`] encodes a file's, programs kept. Their images take the
    /// slots of `images`, the image list of the set whose image cache the new set will
    /// read, so a question about any other image is an error. Questions with an answer
    /// outside the index are skipped and reported.
    pub fn from_questions(
        questions: Vec<Question>,
        vocab: &Vocabulary,
        images: &[String],
    ) -> Result<(QuestionSet, LoadReport), DatasetError> {
        let mut set = QuestionSet {
            offsets: vec![0],
            images: images.to_vec(),
            programs: Some(Vec::new()),
            ..QuestionSet::default()
        };
        let mut slots: HashMap<String, u32> = images
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i as u32))
            .collect();
        let mut report = LoadReport::default();
        let mut pending = Vec::with_capacity(questions.len());
        for (position, q) in questions.into_iter().enumerate() {
            report.read += 1;
            if !slots.contains_key(&q.image_filename) {
                return Err(DatasetError::UnknownImage {
                    position,
                    image: q.image_filename,
                    known: images.len(),
                });
            }
            let Some(answer) = answer_id(q.answer.as_deref(), vocab, position, &mut report) else {
                continue;
            };
            let record = Record::<Vec<ProgramNode>> {
                image_index: q.image_index,
                image_filename: q.image_filename,
                question: q.question,
                answer: q.answer,
                question_family_index: q.question_family_index,
                template_filename: None,
                program: q.program,
            };
            pending.push((position, record, answer));
        }
        set.append(
            &mut pending,
            &vocab.questions,
            &mut slots,
            "the generated questions",
        )?;
        report.kept = set.len();
        Ok((set, report))
    }

    fn load_records<P: ProgramField>(
        files: &SplitFiles,
        vocab: &Vocabulary,
        keep_programs: bool,
    ) -> Result<(QuestionSet, LoadReport), DatasetError> {
        let mut set = QuestionSet {
            offsets: vec![0],
            programs: keep_programs.then(Vec::new),
            ..QuestionSet::default()
        };
        let mut report = LoadReport::default();
        let mut slots: HashMap<String, u32> = HashMap::new();
        let origin = files.questions.display().to_string();
        let mut pending: Vec<(usize, Record<P>, u32)> = Vec::with_capacity(ENCODE_CHUNK);
        let mut failure: Option<DatasetError> = None;
        let mut template_families = TemplateFamilies::default();
        let outcome = for_each_record(&files.questions, |record: Record<P>| {
            let position = report.read;
            report.read += 1;
            crate::layout::image_split(&record.image_filename).map_err(|e| e.to_string())?;
            u32::try_from(record.image_index)
                .map_err(|_| format!("image_index {} does not fit 32 bits", record.image_index))?;
            let Some(answer) = answer_id(record.answer.as_deref(), vocab, position, &mut report) else {
                return Ok(());
            };
            template_families.note(set.len() + pending.len(), &record);
            pending.push((position, record, answer));
            if pending.len() == ENCODE_CHUNK {
                set.append(&mut pending, &vocab.questions, &mut slots, &origin)
                    .map_err(|e| {
                        let message = e.to_string();
                        failure = Some(e);
                        message
                    })?;
            }
            Ok(())
        });
        if let Err(e) = outcome {
            return Err(failure.take().unwrap_or(DatasetError::Json(e)));
        }
        set.append(&mut pending, &vocab.questions, &mut slots, &origin)?;
        template_families.finish(&mut set.families);
        report.kept = set.len();
        Ok((set, report))
    }

    /// Encodes a chunk of records (each with its position in `origin`, the file or source
    /// named in errors) in parallel and appends them in file order.
    fn append<P: ProgramField>(
        &mut self,
        pending: &mut Vec<(usize, Record<P>, u32)>,
        questions: &QuestionVocab,
        slots: &mut HashMap<String, u32>,
        origin: &str,
    ) -> Result<(), DatasetError> {
        let encoded: Vec<Vec<u32>> = pending
            .par_iter()
            .map(|(_, record, _)| questions.encode(&record.question))
            .collect::<Result<_, _>>()?;
        if let Some(((position, _, _), ids)) = pending
            .iter()
            .zip(&encoded)
            .find(|(_, ids)| ids.len() > MAX_QUESTION_TOKENS)
        {
            return Err(DatasetError::QuestionTooLong {
                origin: origin.to_string(),
                position: *position,
                tokens: ids.len(),
            });
        }
        for ((_, record, answer), ids) in pending.drain(..).zip(encoded) {
            self.tokens.extend_from_slice(&ids);
            let end = u32::try_from(self.tokens.len()).map_err(|_| DatasetError::TooManyTokens)?;
            self.offsets.push(end);
            // Checked when the record was read.
            self.image_index.push(record.image_index as u32);
            let next_slot = self.images.len() as u32;
            let slot = match slots.get(&record.image_filename) {
                Some(&slot) => slot,
                None => {
                    slots.insert(record.image_filename.clone(), next_slot);
                    self.images.push(record.image_filename);
                    next_slot
                }
            };
            self.image_slot.push(slot);
            self.answers.push(answer);
            self.families.push(
                record
                    .question_family_index
                    .and_then(|f| u16::try_from(f).ok())
                    .unwrap_or(NO_FAMILY),
            );
            let qtype = record.program.as_ref().and_then(P::question_type);
            self.types.push(qtype.map_or(NO_TYPE, |t| t.index() as u8));
            let nodes = record.program.as_ref().map_or(0, P::node_count);
            self.program_lengths
                .push(u16::try_from(nodes).unwrap_or(u16::MAX));
            if let Some(programs) = &mut self.programs {
                programs.push(record.program.map(P::into_nodes).unwrap_or_default());
            }
        }
        Ok(())
    }
}

/// The answer id of the question at `position`: [`NO_ANSWER`] without an answer, `None`
/// (recorded in `report` as skipped) for an answer outside the index.
fn answer_id(
    answer: Option<&str>,
    vocab: &Vocabulary,
    position: usize,
    report: &mut LoadReport,
) -> Option<u32> {
    let Some(a) = answer else {
        return Some(NO_ANSWER);
    };
    let id = vocab.answers.id(a);
    if id.is_none() {
        report.skipped.push(Skip {
            position,
            reason: SkipReason::UnknownAnswer {
                answer: a.to_string(),
            },
        });
    }
    id
}

/// Questions encoded together on the thread pool: large enough to keep all
/// cores busy, small enough that the pending records are a few MB at most.
const ENCODE_CHUNK: usize = 8192;

/// The fields of a question record that training uses; the rest of the record
/// is skipped by the parser without being allocated.
#[derive(Deserialize)]
struct Record<P> {
    image_index: usize,
    image_filename: String,
    question: String,
    #[serde(default, deserialize_with = "crate::question::answer_text")]
    answer: Option<String>,
    #[serde(default)]
    question_family_index: Option<usize>,
    /// Only in the official question generator's raw output, where
    /// `question_family_index` counts within this template file.
    #[serde(default)]
    template_filename: Option<String>,
    #[serde(default = "none")]
    program: Option<P>,
}

/// Family numbers for the official question generator's raw output, whose
/// `question_family_index` counts within each `template_filename`: every distinct
/// (file, index) pair gets one number, in the order of file name, then index, so that
/// the numbering does not depend on the order of the records.
/// Records without a template file keep their own index.
#[derive(Default)]
struct TemplateFamilies {
    /// (file, index) → provisional number, in order of first appearance.
    seen: HashMap<(String, usize), usize>,
    /// (row of the question set, provisional number) of each record that named its file.
    rows: Vec<(usize, usize)>,
}

impl TemplateFamilies {
    /// Notes the family of the record that becomes row `row`, when it names its template
    /// file.
    fn note<P>(&mut self, row: usize, record: &Record<P>) {
        let (Some(file), Some(index)) = (&record.template_filename, record.question_family_index) else {
            return;
        };
        let next = self.seen.len();
        let provisional = *self.seen.entry((file.clone(), index)).or_insert(next);
        self.rows.push((row, provisional));
    }

    /// Writes each noted row's family number, in the sorted order, into `families`.
    fn finish(self, families: &mut [u16]) {
        let mut keys: Vec<_> = self.seen.into_iter().collect();
        keys.sort();
        let mut number = vec![NO_FAMILY; keys.len()];
        for (rank, (_, provisional)) in keys.into_iter().enumerate() {
            number[provisional] = u16::try_from(rank).unwrap_or(NO_FAMILY);
        }
        for (row, provisional) in self.rows {
            families[row] = number[provisional];
        }
    }
}

fn none<P>() -> Option<P> {
    None
}

/// What is kept of a record's program.
trait ProgramField: DeserializeOwned + Send + Sync {
    fn question_type(&self) -> Option<QuestionType>;
    fn node_count(&self) -> usize;
    fn into_nodes(self) -> Vec<ProgramNode>;
}

impl ProgramField for Vec<ProgramNode> {
    fn question_type(&self) -> Option<QuestionType> {
        QuestionType::of_program(self)
    }
    fn node_count(&self) -> usize {
        self.len()
    }
    fn into_nodes(self) -> Vec<ProgramNode> {
        self
    }
}

/// Only the last node's function name, which decides the question type, and the number
/// of nodes.
struct LastFunction {
    last: Option<String>,
    nodes: usize,
}

impl ProgramField for LastFunction {
    fn question_type(&self) -> Option<QuestionType> {
        QuestionType::of_function(self.last.as_deref()?)
    }
    fn node_count(&self) -> usize {
        self.nodes
    }
    fn into_nodes(self) -> Vec<ProgramNode> {
        Vec::new()
    }
}

impl<'de> Deserialize<'de> for LastFunction {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct FunctionOnly {
            #[serde(alias = "type")]
            function: String,
        }
        struct Nodes;
        impl<'de> de::Visitor<'de> for Nodes {
            type Value = LastFunction;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a list of program nodes")
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<LastFunction, A::Error> {
                let mut last = None;
                let mut nodes = 0;
                while let Some(node) = seq.next_element::<FunctionOnly>()? {
                    last = Some(node.function);
                    nodes += 1;
                }
                Ok(LastFunction { last, nodes })
            }
        }
        d.deserialize_seq(Nodes)
    }
}

/// Builds both vocabularies from a training questions file in one streaming pass.
pub fn build_vocabulary(train: &SplitFiles, config: TokenizerConfig) -> Result<Vocabulary, DatasetError> {
    let mut tokens = BTreeSet::new();
    let mut answers = BTreeSet::new();
    #[derive(Deserialize)]
    struct VocabRecord {
        question: String,
        #[serde(default, deserialize_with = "crate::question::answer_text")]
        answer: Option<String>,
    }
    for_each_record(&train.questions, |q: VocabRecord| {
        for t in question_tokens(&q.question, config) {
            if !tokens.contains(&t) {
                tokens.insert(t);
            }
        }
        if let Some(a) = q.answer {
            answers.insert(a);
        }
        Ok(())
    })?;
    Ok(Vocabulary {
        questions: QuestionVocab::from_sorted_tokens(tokens, config)?,
        answers: AnswerIndex::build(answers.iter().map(String::as_str)),
    })
}
