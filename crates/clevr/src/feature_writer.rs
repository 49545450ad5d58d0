//! Writing a split's feature file row by row, for extractors that run for hours: the rows
//! go through a memory map of the output (the page cache, not the process, holds them), a
//! killed extraction resumes after the last rows it flushed, and only a complete file ever
//! carries the final name.
//!
//! While rows are missing the data lives in `<name>.partial` beside a progress record
//! `<name>.progress.json`, which is replaced, whole, after each flush of rows to disk. When
//! the last row is flushed the partial file is renamed to `<name>`: the rename is what
//! records completeness, so a reader of `<name>` never sees an unfinished file.

use crate::atomic::{replace, write_atomic};
use crate::features::{encode_values, npy_header, FeatureDType, FeatureError};
use memmap2::MmapMut;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

/// What an unfinished extraction was started with, and how far it got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Progress {
    rows: usize,
    map_shape: (usize, usize, usize),
    dtype: String,
    /// The caller's description of what produces the rows (the weights, the images): a
    /// resumed extraction must produce the same rows as the one it continues.
    inputs: String,
    rows_done: usize,
}

/// A feature file being written, rows in order.
pub struct FeatureWriter {
    path: PathBuf,
    partial: PathBuf,
    progress_path: PathBuf,
    map: MmapMut,
    data_offset: usize,
    progress: Progress,
    dtype: FeatureDType,
}

impl std::fmt::Debug for FeatureWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureWriter")
            .field("path", &self.path)
            .field("rows", &self.progress.rows)
            .field("rows_done", &self.progress.rows_done)
            .finish()
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

fn dtype_name(dtype: FeatureDType) -> &'static str {
    match dtype {
        FeatureDType::F32 => "float32",
        FeatureDType::F16 => "float16",
    }
}

impl FeatureWriter {
    /// The unfinished file of `path` while rows are missing.
    pub fn partial_path(path: &Path) -> PathBuf {
        sibling(path, ".partial")
    }

    /// The progress record of `path`'s unfinished file.
    pub fn progress_path(path: &Path) -> PathBuf {
        sibling(path, ".progress.json")
    }

    /// Continues the unfinished file of `path` if there is one, or starts it: `rows` maps
    /// of `map_shape` in `dtype`, produced from `inputs`. An unfinished file started with
    /// anything different is an error that says what differs; `restart` discards it first.
    pub fn open(
        path: &Path,
        rows: usize,
        map_shape: (usize, usize, usize),
        dtype: FeatureDType,
        inputs: &str,
        restart: bool,
    ) -> Result<Self, FeatureError> {
        let partial = Self::partial_path(path);
        let progress_path = Self::progress_path(path);
        let io = |path: &Path, what: &'static str| {
            let path = path.to_path_buf();
            move |error| FeatureError::Io { path, what, error }
        };
        if restart {
            for stale in [&partial, &progress_path] {
                match std::fs::remove_file(stale) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(io(stale, "cannot remove the unfinished extraction")(e))
                    }
                    _ => {}
                }
            }
        }
        let wanted = Progress {
            rows,
            map_shape,
            dtype: dtype_name(dtype).to_string(),
            inputs: inputs.to_string(),
            rows_done: 0,
        };
        let header = npy_header(&[rows, map_shape.0, map_shape.1, map_shape.2], dtype);
        let data_bytes = [rows, map_shape.0, map_shape.1, map_shape.2, dtype.size()]
            .into_iter()
            .try_fold(1usize, |n, d| n.checked_mul(d))
            .and_then(|n| n.checked_add(header.len()))
            .ok_or_else(|| FeatureError::Header {
                path: path.to_path_buf(),
                field: "shape",
                problem: format!("{rows} maps of {map_shape:?} are larger than this machine can address"),
            })?;
        let recorded =
            match (partial.exists(), std::fs::read(&progress_path)) {
                (true, Ok(bytes)) => Some(serde_json::from_slice::<Progress>(&bytes).map_err(|e| {
                    FeatureError::Unfinished {
                        path: path.to_path_buf(),
                        problem: format!(
                            "its progress record {} is unreadable ({e})",
                            progress_path.display()
                        ),
                    }
                })?),
                (_, Err(e)) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io(&progress_path, "cannot read the progress record")(e))
                }
                // No record yet: no row was ever flushed, so there is nothing to keep.
                _ => None,
            };
        let progress = match recorded {
            Some(recorded) => {
                let differs = |field: &str, then: String, now: String| FeatureError::Unfinished {
                    path: path.to_path_buf(),
                    problem: format!("it was started with {field} {then}, this run has {now}"),
                };
                if recorded.inputs != wanted.inputs {
                    return Err(differs("inputs", recorded.inputs, wanted.inputs));
                }
                if (recorded.rows, recorded.map_shape) != (rows, map_shape) {
                    return Err(differs(
                        "shape",
                        format!("{} x {:?}", recorded.rows, recorded.map_shape),
                        format!("{rows} x {map_shape:?}"),
                    ));
                }
                if recorded.dtype != wanted.dtype {
                    return Err(differs("dtype", recorded.dtype, wanted.dtype));
                }
                if recorded.rows_done > rows {
                    return Err(FeatureError::Unfinished {
                        path: path.to_path_buf(),
                        problem: format!("its record claims {} of {rows} rows", recorded.rows_done),
                    });
                }
                recorded
            }
            None => {
                let mut file = File::create(&partial).map_err(io(&partial, "cannot create the output"))?;
                std::io::Write::write_all(&mut file, &header)
                    .map_err(io(&partial, "cannot write the header"))?;
                wanted
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&partial)
            .map_err(io(&partial, "cannot open the output"))?;
        // The data is allocated sparsely: rows not written yet take no disk space.
        file.set_len(data_bytes as u64)
            .map_err(io(&partial, "cannot size the output"))?;
        // SAFETY: the file is this process's own output; another process truncating it
        // while mapped would fault, as with every memory-mapped file.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(io(&partial, "cannot memory-map the output"))?;
        if map[..header.len()] != header[..] {
            return Err(FeatureError::Unfinished {
                path: path.to_path_buf(),
                problem: format!("{} does not start with the expected header", partial.display()),
            });
        }
        Ok(FeatureWriter {
            path: path.to_path_buf(),
            partial,
            progress_path,
            map,
            data_offset: header.len(),
            progress,
            dtype,
        })
    }

    /// Rows already on disk; the next [`FeatureWriter::write_rows`] continues from here.
    pub fn rows_done(&self) -> usize {
        self.progress.rows_done
    }

    /// Rows the finished file holds.
    pub fn rows(&self) -> usize {
        self.progress.rows
    }

    fn map_len(&self) -> usize {
        let (c, h, w) = self.progress.map_shape;
        c * h * w
    }

    /// Appends whole maps (`values.len()` a multiple of one map's values), flushes them to
    /// disk, then records them as done.
    ///
    /// # Panics
    /// If `values` is not whole maps or holds more rows than are left: callers size their
    /// batches from [`FeatureWriter::rows_done`] and [`FeatureWriter::rows`].
    pub fn write_rows(&mut self, values: &[f32]) -> Result<(), FeatureError> {
        let map_len = self.map_len();
        assert_eq!(values.len() % map_len, 0, "feature rows must be whole maps");
        let new_rows = values.len() / map_len;
        assert!(
            self.progress.rows_done + new_rows <= self.progress.rows,
            "{} rows written past the {} of the file",
            self.progress.rows_done + new_rows,
            self.progress.rows
        );
        let row_bytes = map_len * self.dtype.size();
        let start = self.data_offset + self.progress.rows_done * row_bytes;
        let len = new_rows * row_bytes;
        encode_values(values, self.dtype, &mut self.map[start..start + len]);
        self.map
            .flush_range(start, len)
            .map_err(|error| FeatureError::Io {
                path: self.partial.clone(),
                what: "cannot flush rows to disk",
                error,
            })?;
        self.progress.rows_done += new_rows;
        let record = serde_json::to_vec_pretty(&self.progress).expect("a progress record serialises");
        write_atomic(&self.progress_path, &record).map_err(|error| FeatureError::Io {
            path: self.progress_path.clone(),
            what: "cannot record progress",
            error,
        })
    }

    /// Gives the complete file its final name and removes the progress record.
    pub fn finish(self) -> Result<PathBuf, FeatureError> {
        if self.progress.rows_done != self.progress.rows {
            return Err(FeatureError::Unfinished {
                path: self.path,
                problem: format!(
                    "only {} of {} rows were written",
                    self.progress.rows_done, self.progress.rows
                ),
            });
        }
        let io = |path: &Path, what: &'static str| {
            let path = path.to_path_buf();
            move |error| FeatureError::Io { path, what, error }
        };
        self.map
            .flush()
            .map_err(io(&self.partial, "cannot flush the output"))?;
        drop(self.map);
        replace(&self.partial, &self.path)
            .map_err(io(&self.path, "cannot give the output its final name"))?;
        std::fs::remove_file(&self.progress_path)
            .map_err(io(&self.progress_path, "cannot remove the progress record"))?;
        Ok(self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::FeatureFile;

    const SHAPE: (usize, usize, usize) = (2, 3, 2);

    fn row(i: usize) -> Vec<f32> {
        (0..12).map(|k| (i * 12 + k) as f32 * 0.5).collect()
    }

    fn read_row(path: &Path, i: usize) -> Vec<f32> {
        let file = FeatureFile::open(path).unwrap();
        let mut out = vec![0.0; file.map_len()];
        file.read_into(i, &mut out);
        out
    }

    #[test]
    fn a_killed_extraction_resumes_and_only_the_finished_file_has_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("val_features.npy");
        for dtype in [FeatureDType::F32, FeatureDType::F16] {
            let _ = std::fs::remove_file(&path);
            let mut writer = FeatureWriter::open(&path, 5, SHAPE, dtype, "weights w", true).unwrap();
            assert_eq!(writer.rows_done(), 0);
            writer.write_rows(&[row(0), row(1)].concat()).unwrap();
            // Killed here: nothing is finished, so the final name does not exist.
            drop(writer);
            assert!(!path.exists());
            let mut writer = FeatureWriter::open(&path, 5, SHAPE, dtype, "weights w", false).unwrap();
            assert_eq!(writer.rows_done(), 2);
            writer.write_rows(&row(2)).unwrap();
            writer.write_rows(&[row(3), row(4)].concat()).unwrap();
            assert_eq!(writer.finish().unwrap(), path);
            assert!(!FeatureWriter::partial_path(&path).exists());
            assert!(!FeatureWriter::progress_path(&path).exists());
            // Every value is a multiple of 0.5 below 30: exact in float16 too.
            for i in 0..5 {
                assert_eq!(read_row(&path, i), row(i), "row {i} as {dtype:?}");
            }
        }
    }

    #[test]
    fn an_unfinished_file_of_other_inputs_is_refused_until_restarted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_features.npy");
        let mut writer = FeatureWriter::open(&path, 3, SHAPE, FeatureDType::F16, "weights a", false).unwrap();
        writer.write_rows(&row(0)).unwrap();
        drop(writer);
        let error = |inputs, dtype, rows| {
            FeatureWriter::open(&path, rows, SHAPE, dtype, inputs, false)
                .unwrap_err()
                .to_string()
        };
        let e = error("weights b", FeatureDType::F16, 3);
        assert!(e.contains("train_features.npy: an unfinished extraction cannot be continued: it was started with inputs weights a, this run has weights b"), "{e}");
        let e = error("weights a", FeatureDType::F32, 3);
        assert!(
            e.contains("started with dtype float16, this run has float32"),
            "{e}"
        );
        let e = error("weights a", FeatureDType::F16, 4);
        assert!(
            e.contains("started with shape 3 x (2, 3, 2), this run has 4 x (2, 3, 2)"),
            "{e}"
        );
        let writer = FeatureWriter::open(&path, 3, SHAPE, FeatureDType::F16, "weights b", true).unwrap();
        assert_eq!(writer.rows_done(), 0);
        let e = writer.finish().unwrap_err().to_string();
        assert!(e.contains("only 0 of 3 rows were written"), "{e}");
        assert!(!path.exists());
    }

    #[test]
    fn a_partial_file_without_a_progress_record_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("val_features.npy");
        // Killed between creating the output and flushing its first rows.
        std::fs::write(FeatureWriter::partial_path(&path), b"half a header").unwrap();
        let mut writer = FeatureWriter::open(&path, 1, SHAPE, FeatureDType::F32, "w", false).unwrap();
        assert_eq!(writer.rows_done(), 0);
        writer.write_rows(&row(7)).unwrap();
        writer.finish().unwrap();
        assert_eq!(read_row(&path, 0), row(7));
    }
}
