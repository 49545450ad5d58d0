//! Reading JSON files with errors that say file, line, column and field.
//!
//! Every reader goes through `serde_path_to_error`, so a type error deep in a
//! 700k-record file reads as
//! `questions/CLEVR_train_questions.json:1843:17: questions[52].answer: invalid type: …`.

use serde::de::DeserializeOwned;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

/// What can go wrong opening or parsing one JSON file.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    #[error("{}: cannot open {what}: {source}", path.display())]
    Open {
        path: PathBuf,
        /// What the caller expected to find there (e.g. "CLEVR scenes JSON").
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: {field}: {message}", path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        /// Path of the offending field, e.g. `questions[52].answer` (`.` for the top level).
        field: String,
        message: String,
    },
}

impl JsonError {
    pub(crate) fn from_path_error(path: &Path, err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let field = err.path().to_string();
        let inner = err.into_inner();
        JsonError::Parse {
            path: path.to_path_buf(),
            line: inner.line(),
            column: inner.column(),
            field,
            message: strip_position(&inner.to_string()),
        }
    }
}

/// serde_json appends " at line L column C" to its messages; we print the position
/// as `file:line:column` in front instead, so drop the tail.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(i) => message[..i].to_string(),
        None => message.to_string(),
    }
}

/// Opens `path` for buffered reading, naming `what` was expected there on failure.
pub(crate) fn open(path: &Path, what: &'static str) -> Result<BufReader<File>, JsonError> {
    File::open(path)
        .map(|f| BufReader::with_capacity(1 << 20, f))
        .map_err(|source| JsonError::Open {
            path: path.to_path_buf(),
            what,
            source,
        })
}

/// Parses a whole reader as one `T`, reporting errors against `path`.
pub(crate) fn from_reader<T: DeserializeOwned, R: Read>(path: &Path, reader: R) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_reader(reader);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| JsonError::from_path_error(path, e))?;
    de.end().map_err(|e| JsonError::Parse {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        field: ".".to_string(),
        message: strip_position(&e.to_string()),
    })?;
    Ok(value)
}

/// Reads a whole JSON file as one `T`.
pub fn read_json<T: DeserializeOwned>(path: &Path, what: &'static str) -> Result<T, JsonError> {
    from_reader(path, open(path, what)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Doc {
        items: Vec<Item>,
    }
    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Item {
        name: String,
    }

    #[test]
    fn type_error_names_line_column_and_field() {
        let text = "{\"items\": [\n  {\"name\": \"a\"},\n  {\"name\": 7}\n]}";
        let err = from_reader::<Doc, _>(Path::new("x.json"), text.as_bytes()).unwrap_err();
        match &err {
            JsonError::Parse {
                line, column, field, ..
            } => {
                assert_eq!((*line, field.as_str()), (3, "items[1].name"));
                assert!(*column > 0);
            }
            other => panic!("expected a parse error, got {other:?}"),
        }
        let shown = err.to_string();
        assert!(shown.starts_with("x.json:3:"), "{shown}");
        assert!(!shown.contains(" at line "), "{shown}");
    }

    #[test]
    fn missing_file_names_path_and_expectation() {
        let err = read_json::<Doc>(Path::new("/no/such/file.json"), "CLEVR scenes JSON").unwrap_err();
        let shown = err.to_string();
        assert!(shown.contains("/no/such/file.json"), "{shown}");
        assert!(shown.contains("CLEVR scenes JSON"), "{shown}");
    }

    #[test]
    fn trailing_garbage_is_an_error() {
        let text = "{\"items\": []} x";
        assert!(from_reader::<Doc, _>(Path::new("x.json"), text.as_bytes()).is_err());
    }
}
