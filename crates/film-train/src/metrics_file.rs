//! `metrics.jsonl`: one JSON object per line, appended at every evaluation.
//!
//! Appending is the one write in the run directory that is not a rename, so a crash can
//! leave the last line half written. Such a line (no newline, not JSON) is a torn write,
//! not a corrupt file: readers skip it and the next append cuts it away. Any other line
//! that is not JSON is an error naming the file and line.

use std::fs;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("{}: {what}: {source}", path.display())]
    Io {
        path: std::path::PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("{}:{line}: not JSON: {source}", path.display())]
    NotJson {
        path: std::path::PathBuf,
        line: usize,
        source: serde_json::Error,
    },
}

/// One record with its 1-based line number in the file.
pub type Record = (usize, Value);

/// The records of a metrics file's text: blank lines are skipped, and so is a last line
/// torn by a crash (unterminated and not JSON). `path` names the file in errors.
pub fn parse(text: &str, path: &Path) -> Result<Vec<Record>, MetricsError> {
    let torn = torn_tail(text);
    let complete = &text[..text.len() - torn.len()];
    complete
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map(|record| (i + 1, record))
                .map_err(|source| MetricsError::NotJson {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
        })
        .collect()
}

/// Reads and parses the metrics file at `path`.
pub fn read(path: &Path) -> Result<Vec<Record>, MetricsError> {
    let text = fs::read_to_string(path).map_err(|source| MetricsError::Io {
        path: path.to_path_buf(),
        what: "cannot read the metrics",
        source,
    })?;
    parse(&text, path)
}

/// The end of `text` left by an interrupted append: an unterminated last line that is not
/// JSON, or nothing. A hand-written last line that is JSON but lacks its newline is kept.
fn torn_tail(text: &str) -> &str {
    if text.ends_with('\n') {
        return "";
    }
    let last = &text[text.rfind('\n').map_or(0, |i| i + 1)..];
    match serde_json::from_str::<Value>(last) {
        Ok(_) => "",
        Err(_) => last,
    }
}

/// Appends `record` as one line to the metrics file at `path`, first cutting away a line
/// torn by a crash (or ending an unterminated complete one), so that every line stays one
/// record.
pub fn append(path: &Path, record: &Value) -> Result<(), MetricsError> {
    let io = |what| {
        move |source| MetricsError::Io {
            path: path.to_path_buf(),
            what,
            source,
        }
    };
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io("cannot read the metrics")(e)),
    };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(io("cannot open the metrics for appending"))?;
    let torn = torn_tail(&text);
    if !torn.is_empty() {
        file.set_len((text.len() - torn.len()) as u64)
            .map_err(io("cannot cut away the torn last line"))?;
    } else if !text.is_empty() && !text.ends_with('\n') {
        file.write_all(b"\n")
            .map_err(io("cannot append to the metrics"))?;
    }
    writeln!(file, "{record}").map_err(io("cannot append to the metrics"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_last_line_is_skipped_and_cut_away_on_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        fs::write(&path, "{\"step\":10}\n{\"step\":20}\n{\"step\":3").unwrap();
        let records = read(&path).unwrap();
        assert_eq!(
            records,
            [
                (1, serde_json::json!({"step": 10})),
                (2, serde_json::json!({"step": 20}))
            ]
        );

        append(&path, &serde_json::json!({"step": 30})).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "{\"step\":10}\n{\"step\":20}\n{\"step\":30}\n"
        );
        // An unterminated line that is JSON is a record, and stays one.
        fs::write(&path, "{\"step\":10}").unwrap();
        append(&path, &serde_json::json!({"step": 20})).unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
    }

    #[test]
    fn a_malformed_line_in_the_middle_names_the_file_and_line() {
        let path = Path::new("runs/x/metrics.jsonl");
        let err = parse("{\"step\":10}\n{\"step\":2\n{\"step\":30}\n", path)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("runs/x/metrics.jsonl:2: not JSON"), "{err}");
        // A complete (newline-ended) last line that is not JSON was not torn by a crash.
        assert!(parse("{\"step\":10}\n{\"ste\n", path).is_err());
    }
}
