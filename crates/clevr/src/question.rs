//! Question records and functional programs, field for field as released.
//!
//! Release files spell a program node `{"function", "inputs", "value_inputs"}`;
//! older CLEVR tooling wrote `{"type", "inputs", "side_inputs"}`. Both are read;
//! the release spelling is written. Likewise an answer: the release writes `"yes"`,
//! `"3"`, `"red"`, while the official question generator's raw output writes `true`,
//! `3`, `"red"`; both are read as the release's text.

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One node of a CLEVR functional program. `inputs` index earlier nodes of the
/// same program; `value_inputs` are literal arguments (`"red"`, `"left"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProgramNode {
    #[serde(alias = "type")]
    pub function: String,
    #[serde(default)]
    pub inputs: Vec<usize>,
    #[serde(default, alias = "side_inputs")]
    pub value_inputs: Vec<String>,
}

impl ProgramNode {
    /// A node with no literal argument.
    pub fn new(function: &str, inputs: &[usize]) -> Self {
        ProgramNode {
            function: function.to_string(),
            inputs: inputs.to_vec(),
            value_inputs: Vec::new(),
        }
    }

    /// A node with one literal argument, e.g. `filter_color[red]`.
    pub fn with_value(function: &str, inputs: &[usize], value: &str) -> Self {
        ProgramNode {
            function: function.to_string(),
            inputs: inputs.to_vec(),
            value_inputs: vec![value.to_string()],
        }
    }
}

/// One question record. CLEVR v1.0 and CoGenT train/val records carry every
/// field; test records have no `answer`, `program` or `question_family_index`;
/// CLEVR-Humans records have no `program`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Question {
    pub image_index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<Vec<ProgramNode>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_index: Option<usize>,
    pub image_filename: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub question_family_index: Option<usize>,
    #[serde(default)]
    pub split: String,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "answer_text"
    )]
    pub answer: Option<String>,
    pub question: String,
}

/// Reads an answer as the release spells it: a string as it is, `true` / `false` as
/// `"yes"` / `"no"`, and a whole number in decimal (the official question generator's raw
/// output writes booleans and counts as JSON values).
pub fn answer_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct AnswerVisitor;

    impl<'de> Visitor<'de> for AnswerVisitor {
        type Value = Option<String>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an answer: a string, a boolean or a whole number")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
            Ok(Some(if v { "yes" } else { "no" }.to_string()))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v.to_string()))
        }

        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(AnswerVisitor)
        }
    }

    deserializer.deserialize_option(AnswerVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELEASE: &str = r#"{"image_index": 0, "program": [
        {"inputs": [], "function": "scene", "value_inputs": []},
        {"inputs": [0], "function": "filter_size", "value_inputs": ["large"]},
        {"inputs": [1], "function": "exist", "value_inputs": []}],
        "question_index": 0, "image_filename": "CLEVR_val_000000.png",
        "question_family_index": 39, "split": "val", "answer": "yes",
        "question": "Are there any large things?"}"#;

    #[test]
    fn reads_release_and_older_program_spellings_alike() {
        let release: Question = serde_json::from_str(RELEASE).unwrap();
        let older = r#"{"type": "filter_size", "inputs": [0], "side_inputs": ["large"]}"#;
        let older: ProgramNode = serde_json::from_str(older).unwrap();
        let program = release.program.as_ref().unwrap();
        assert_eq!(program[1], older);
        assert_eq!(program[1], ProgramNode::with_value("filter_size", &[0], "large"));
        assert_eq!(release.answer.as_deref(), Some("yes"));
    }

    #[test]
    fn reads_the_official_generators_raw_answers_as_release_text() {
        let raw = |answer: &str| {
            let text = format!(
                r#"{{"image_index": 0, "image_filename": "CLEVR_new_000000.png", "image": "CLEVR_new_000000",
                "question": "Are there any cubes?", "answer": {answer},
                "template_filename": "zero_hop.json", "question_family_index": 3, "question_index": 0,
                "program": [{{"type": "scene", "inputs": [], "_output": [0, 1], "value_inputs": []}}]}}"#
            );
            serde_json::from_str::<Question>(&text).map(|q| q.answer)
        };
        assert_eq!(raw("true").unwrap().as_deref(), Some("yes"));
        assert_eq!(raw("false").unwrap().as_deref(), Some("no"));
        assert_eq!(raw("3").unwrap().as_deref(), Some("3"));
        assert_eq!(raw("\"cube\"").unwrap().as_deref(), Some("cube"));
        assert_eq!(raw("null").unwrap(), None);
        let err = raw("2.5").unwrap_err().to_string();
        assert!(err.contains("a string, a boolean or a whole number"), "{err}");
        // Written back, the answer takes the release's spelling.
        let q: Question = serde_json::from_str(
            r#"{"image_index": 0, "image_filename": "a.png", "question": "?", "answer": false}"#,
        )
        .unwrap();
        assert_eq!(serde_json::to_value(&q).unwrap()["answer"], "no");
    }

    #[test]
    fn writes_release_field_names() {
        let q: Question = serde_json::from_str(RELEASE).unwrap();
        let original: serde_json::Value = serde_json::from_str(RELEASE).unwrap();
        assert_eq!(serde_json::to_value(&q).unwrap(), original);
    }

    #[test]
    fn test_split_records_without_answer_or_program_parse() {
        let text = r#"{"image_index": 3, "question_index": 7, "image_filename": "CLEVR_test_000003.png",
            "split": "test", "question": "How many cubes?"}"#;
        let q: Question = serde_json::from_str(text).unwrap();
        assert!(q.answer.is_none() && q.program.is_none() && q.question_family_index.is_none());
        let written = serde_json::to_value(&q).unwrap();
        assert!(written.get("answer").is_none());
    }
}
