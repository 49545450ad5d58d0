//! Streaming parse of `{"info": …, "questions": [ … ]}` files.
//!
//! The train file holds ~700k questions in hundreds of MB of JSON; it is read
//! through a buffered reader and handed to the caller one [`Question`] at a time,
//! so at no point does the whole file, or a tree of all its records, sit in memory.

use crate::json::{open, JsonError};
use crate::question::Question;
use crate::scene::Info;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::io::Read;
use std::marker::PhantomData;
use std::path::Path;

/// What the caller expects at a questions path, for "cannot open" errors.
const WHAT: &str = "a CLEVR questions JSON file ({\"info\", \"questions\"})";

/// Calls `visit` with each question of the file at `path`, in file order, and
/// returns the file's `info` block. `visit` may reject a record by returning a
/// message, which becomes a [`JsonError::Parse`] naming that record
/// (`questions[i]`) at the position just after it.
pub fn for_each_question<F>(path: &Path, visit: F) -> Result<Info, JsonError>
where
    F: FnMut(Question) -> Result<(), String>,
{
    for_each_record(path, visit)
}

/// As [`for_each_question`], reading from `reader`; `path` is used in errors.
pub fn for_each_question_in<R: Read, F>(path: &Path, reader: R, visit: F) -> Result<Info, JsonError>
where
    F: FnMut(Question) -> Result<(), String>,
{
    for_each_record_in(path, reader, visit)
}

/// As [`for_each_question`], but each record is read as a `T`: a type with fewer
/// fields than [`Question`] skips the rest without allocating them.
pub fn for_each_record<T: DeserializeOwned, F>(path: &Path, visit: F) -> Result<Info, JsonError>
where
    F: FnMut(T) -> Result<(), String>,
{
    for_each_record_in(path, open(path, WHAT)?, visit)
}

/// As [`for_each_record`], reading from `reader`; `path` is used in errors.
pub fn for_each_record_in<T: DeserializeOwned, R: Read, F>(
    path: &Path,
    reader: R,
    visit: F,
) -> Result<Info, JsonError>
where
    F: FnMut(T) -> Result<(), String>,
{
    let mut json = serde_json::Deserializer::from_reader(reader);
    let mut track = serde_path_to_error::Track::new();
    let seed = FileSeed {
        visit,
        record: PhantomData,
    };
    let info = seed
        .deserialize(serde_path_to_error::Deserializer::new(&mut json, &mut track))
        .map_err(|e| JsonError::from_path_error(path, serde_path_to_error::Error::new(track.path(), e)))?;
    json.end().map_err(|e| JsonError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        field: ".".to_string(),
        message: "trailing characters after the top-level object".to_string(),
    })?;
    Ok(info)
}

struct FileSeed<T, F> {
    visit: F,
    record: PhantomData<T>,
}

impl<'de, T: DeserializeOwned, F: FnMut(T) -> Result<(), String>> DeserializeSeed<'de> for FileSeed<T, F> {
    type Value = Info;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Info, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned, F: FnMut(T) -> Result<(), String>> Visitor<'de> for FileSeed<T, F> {
    type Value = Info;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with \"info\" and \"questions\"")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<Info, A::Error> {
        let mut info = None;
        let mut saw_questions = false;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "info" => info = Some(map.next_value::<Info>()?),
                "questions" => {
                    map.next_value_seed(QuestionsSeed {
                        visit: &mut self.visit,
                        record: PhantomData,
                    })?;
                    saw_questions = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !saw_questions {
            return Err(de::Error::missing_field("questions"));
        }
        // CLEVR-Humans files carry no info block; that is not an error.
        Ok(info.unwrap_or_default())
    }
}

struct QuestionsSeed<'a, T, F> {
    visit: &'a mut F,
    record: PhantomData<T>,
}

impl<'de, T: DeserializeOwned, F: FnMut(T) -> Result<(), String>> DeserializeSeed<'de>
    for QuestionsSeed<'_, T, F>
{
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned, F: FnMut(T) -> Result<(), String>> Visitor<'de> for QuestionsSeed<'_, T, F> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of question records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Each element goes through `VisitOne`, so a rejection from the callback
        // is raised while the path tracker still points at that element.
        while seq
            .next_element_seed(VisitOne {
                visit: &mut *self.visit,
                record: PhantomData::<T>,
            })?
            .is_some()
        {}
        Ok(())
    }
}

struct VisitOne<'a, T, F> {
    visit: &'a mut F,
    record: PhantomData<T>,
}

impl<'de, T: DeserializeOwned, F: FnMut(T) -> Result<(), String>> DeserializeSeed<'de>
    for VisitOne<'_, T, F>
{
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        let record = T::deserialize(d)?;
        (self.visit)(record).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str) -> Result<(Info, Vec<Question>), JsonError> {
        let mut seen = Vec::new();
        let info = for_each_question_in(Path::new("q.json"), text.as_bytes(), |q| {
            seen.push(q);
            Ok(())
        })?;
        Ok((info, seen))
    }

    const GOOD: &str = r#"{"info": {"split": "val", "version": "1.0"}, "questions": [
{"image_index": 0, "image_filename": "CLEVR_val_000000.png", "split": "val", "question": "Is it?", "answer": "yes"},
{"image_index": 1, "image_filename": "CLEVR_val_000001.png", "split": "val", "question": "How many?", "answer": "2"}
]}"#;

    #[test]
    fn visits_every_question_in_order() {
        let (info, qs) = run(GOOD).unwrap();
        assert_eq!(info.split, "val");
        assert_eq!(qs.len(), 2);
        assert_eq!(qs[1].answer.as_deref(), Some("2"));
    }

    #[test]
    fn questions_before_info_and_unknown_keys_are_fine() {
        let text = r#"{"extra": [1, {"a": 2}], "questions": [], "info": {"split": "test"}}"#;
        let (info, qs) = run(text).unwrap();
        assert_eq!((info.split.as_str(), qs.len()), ("test", 0));
    }

    #[test]
    fn type_error_names_file_line_column_and_record_field() {
        // A whole number is an answer (the official generator writes counts so); a list
        // is not.
        let text = GOOD.replace("\"answer\": \"2\"", "\"answer\": [2]");
        let err = run(&text).unwrap_err();
        let JsonError::Parse { line, field, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!((*line, field.as_str()), (3, "questions[1].answer"));
        assert!(err.to_string().starts_with("q.json:3:"), "{err}");
    }

    #[test]
    fn missing_field_names_the_record() {
        let text = GOOD.replace("\"question\": \"How many?\", ", "");
        let err = run(&text).unwrap_err().to_string();
        assert!(err.contains("questions[1]") && err.contains("question"), "{err}");
    }

    #[test]
    fn rejection_by_the_visitor_points_at_the_record() {
        let err = for_each_question_in(Path::new("q.json"), GOOD.as_bytes(), |q| {
            if q.image_index == 1 {
                Err("no scene for image 1".to_string())
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        let shown = err.to_string();
        // The position is where the parser stands after reading the record (the
        // start of the next line here); the field path names the record exactly.
        assert!(shown.starts_with("q.json:4:1: questions[1]: "), "{shown}");
        assert!(shown.contains("no scene for image 1"), "{shown}");
    }

    #[test]
    fn missing_questions_key_and_truncation_are_errors() {
        assert!(run(r#"{"info": {}}"#)
            .unwrap_err()
            .to_string()
            .contains("questions"));
        let truncated = &GOOD[..GOOD.len() / 2];
        let err = run(truncated).unwrap_err();
        assert!(matches!(err, JsonError::Parse { .. }), "{err:?}");
    }
}
