//! Pre-extracted image features: the paper's `paper-features` model reads, instead of
//! pixels, one feature map per image (a ResNet-101's conv4 output, 1024 × 14 × 14 for
//! CLEVR's 224 × 224 inputs), extracted once ahead of training.
//!
//! The file format is NumPy's `.npy` (versions 1.0 to 3.0): a C-ordered array of shape
//! `(images, C, H, W)`, float32 (`<f4`) or float16 (`<f2`), where row `i` belongs to the
//! image with `image_index` i, as the reference code's `extract_features.py` orders them.
//! Its HDF5 output converts with one line of Python (see `docs/training.md`). The file is
//! memory-mapped: a split's features are tens of gigabytes for the real CLEVR, and the page
//! cache, not the process, decides what stays in memory.

use half::f16;
use memmap2::Mmap;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The most values one image's feature map may hold. Readers allocate a map's worth per
/// image of a batch, sized by the header; ResNet-101's conv4 maps of the paper are
/// 1024 x 14 x 14, so this leaves room for far larger extractors.
pub const MAX_MAP_VALUES: usize = 1 << 26;

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    /// The I/O error is part of the message (not a `source`), so that it is printed once.
    #[error("{}: {what}: {error}", path.display())]
    Io {
        path: PathBuf,
        what: &'static str,
        error: std::io::Error,
    },
    #[error("{}: not a NumPy .npy file ({problem})", path.display())]
    NotNpy { path: PathBuf, problem: String },
    #[error("{}: header field '{field}': {problem}", path.display())]
    Header {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error("{}: an unfinished extraction cannot be continued: {problem}", path.display())]
    Unfinished { path: PathBuf, problem: String },
    #[error("{}: holds {actual} bytes of data, but shape {shape:?} of {dtype} needs {expected}", path.display())]
    Truncated {
        path: PathBuf,
        shape: Vec<usize>,
        dtype: FeatureDType,
        expected: usize,
        actual: usize,
    },
}

/// The element types a feature file may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeatureDType {
    F32,
    F16,
}

impl FeatureDType {
    pub(crate) fn size(self) -> usize {
        match self {
            FeatureDType::F32 => 4,
            FeatureDType::F16 => 2,
        }
    }
}

impl std::fmt::Display for FeatureDType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FeatureDType::F32 => "float32 ('<f4')",
            FeatureDType::F16 => "float16 ('<f2')",
        })
    }
}

/// One split's feature maps, memory-mapped.
pub struct FeatureFile {
    path: PathBuf,
    map: Mmap,
    data_offset: usize,
    dtype: FeatureDType,
    rows: usize,
    /// (C, H, W) of one image.
    map_shape: (usize, usize, usize),
}

impl std::fmt::Debug for FeatureFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FeatureFile")
            .field("path", &self.path)
            .field("dtype", &self.dtype)
            .field("rows", &self.rows)
            .field("map_shape", &self.map_shape)
            .finish()
    }
}

/// What the header says.
struct Header {
    dtype: FeatureDType,
    shape: Vec<usize>,
}

impl FeatureFile {
    /// Opens and checks `path`: magic, header fields, and that the data is all there.
    pub fn open(path: &Path) -> Result<Self, FeatureError> {
        let io = |what| {
            let path = path.to_path_buf();
            move |error| FeatureError::Io { path, what, error }
        };
        let file = std::fs::File::open(path).map_err(io("cannot open the feature file"))?;
        // SAFETY: the map is read-only; a file truncated by another process while mapped
        // would fault, as with every memory-mapped dataset, which the docs note.
        let map = unsafe { Mmap::map(&file) }.map_err(io("cannot memory-map the feature file"))?;
        let (header, data_offset) = parse_header(path, &map)?;
        let Header { dtype, shape } = header;
        let [rows, channels, height, width] = shape[..] else {
            return Err(FeatureError::Header {
                path: path.to_path_buf(),
                field: "shape",
                problem: format!(
                    "{shape:?} has {} axes; expected 4: (images, channels, height, width)",
                    shape.len()
                ),
            });
        };
        // An empty map would make every batch's chunks of zero length, which rayon refuses.
        if let Some(axis) = [(1, "channels"), (2, "height"), (3, "width")]
            .into_iter()
            .find_map(|(i, axis)| (shape[i] == 0).then_some(axis))
        {
            return Err(FeatureError::Header {
                path: path.to_path_buf(),
                field: "shape",
                problem: format!("{shape:?} has zero {axis}: each image's feature map must hold values"),
            });
        }
        let too_large = || FeatureError::Header {
            path: path.to_path_buf(),
            field: "shape",
            problem: format!("{shape:?} is larger than this machine can address"),
        };
        // The map is checked on its own: with zero images the whole file's size is zero
        // whatever the map's, so only this bound keeps a reader's per-image buffer small.
        let map_values = [channels, height, width]
            .into_iter()
            .try_fold(1usize, |n, d| n.checked_mul(d))
            .ok_or_else(too_large)?;
        if map_values > MAX_MAP_VALUES {
            return Err(FeatureError::Header {
                path: path.to_path_buf(),
                field: "shape",
                problem: format!(
                    "{shape:?}: one image's feature map holds {map_values} values, more than \
                     the limit of {MAX_MAP_VALUES}"
                ),
            });
        }
        let expected = (map_values * dtype.size())
            .checked_mul(rows)
            .ok_or_else(too_large)?;
        let actual = map.len() - data_offset;
        if actual < expected {
            return Err(FeatureError::Truncated {
                path: path.to_path_buf(),
                shape,
                dtype,
                expected,
                actual,
            });
        }
        Ok(FeatureFile {
            path: path.to_path_buf(),
            map,
            data_offset,
            dtype,
            rows,
            map_shape: (channels, height, width),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Images in the file.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// (C, H, W) of one image's feature map.
    pub fn map_shape(&self) -> (usize, usize, usize) {
        self.map_shape
    }

    pub fn dtype(&self) -> FeatureDType {
        self.dtype
    }

    /// Elements of one image's feature map.
    pub fn map_len(&self) -> usize {
        let (c, h, w) = self.map_shape;
        c * h * w
    }

    /// Writes the feature map of image `row` into `out` (`map_len()` values) as f32.
    ///
    /// # Panics
    /// If `row >= rows()` or `out` has the wrong length: callers check rows once up front.
    pub fn read_into(&self, row: usize, out: &mut [f32]) {
        assert!(row < self.rows, "feature row {row} of {}", self.rows);
        assert_eq!(out.len(), self.map_len());
        let size = self.dtype.size();
        let start = self.data_offset + row * self.map_len() * size;
        let bytes = &self.map[start..start + self.map_len() * size];
        match self.dtype {
            FeatureDType::F32 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                    *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                }
            }
            FeatureDType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
        }
    }
}

/// Reads the magic, version and header dictionary; returns the header and where the data
/// starts.
fn parse_header(path: &Path, bytes: &[u8]) -> Result<(Header, usize), FeatureError> {
    let not_npy = |problem: String| FeatureError::NotNpy {
        path: path.to_path_buf(),
        problem,
    };
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err(not_npy(
            "it does not start with the magic bytes \\x93NUMPY".into(),
        ));
    }
    let (header_len, header_start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        major => {
            return Err(not_npy(format!(
                "format version {major}.{} is not 1.0, 2.0 or 3.0",
                bytes[7]
            )))
        }
    };
    let end = header_start + header_len;
    let text = bytes.get(header_start..end).ok_or_else(|| {
        not_npy(format!(
            "the header claims {header_len} bytes but the file ends first"
        ))
    })?;
    let text = std::str::from_utf8(text).map_err(|_| not_npy("the header is not text".into()))?;
    let header_error = |field, problem: String| FeatureError::Header {
        path: path.to_path_buf(),
        field,
        problem,
    };
    let descr = dict_value(text, "descr").ok_or_else(|| header_error("descr", "missing".into()))?;
    let dtype = match descr.trim_matches(['\'', '"']) {
        "<f4" => FeatureDType::F32,
        "<f2" => FeatureDType::F16,
        other => {
            return Err(header_error(
                "descr",
                format!("'{other}'; expected '<f4' (float32) or '<f2' (float16), little-endian"),
            ))
        }
    };
    let order =
        dict_value(text, "fortran_order").ok_or_else(|| header_error("fortran_order", "missing".into()))?;
    if order != "False" {
        return Err(header_error(
            "fortran_order",
            format!("{order}; the array must be C-ordered (np.ascontiguousarray before saving)"),
        ));
    }
    let shape = dict_value(text, "shape").ok_or_else(|| header_error("shape", "missing".into()))?;
    let inner = shape
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| header_error("shape", format!("{shape} is not a tuple")))?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| header_error("shape", format!("({inner}) is not a tuple of sizes")))?;
    Ok((Header { dtype, shape }, end))
}

/// The value text of `key` in the header's Python dict literal: a quoted string, a word
/// (`True`/`False`) or a parenthesised tuple.
fn dict_value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let at = text
        .find(&format!("'{key}'"))
        .or_else(|| text.find(&format!("\"{key}\"")))?;
    let rest = text[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = match rest.chars().next()? {
        '(' => rest.find(')')? + 1,
        q @ ('\'' | '"') => rest[1..].find(q)? + 2,
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    Some(rest[..end].trim())
}

/// The magic, version and header of an `.npy` file holding a C-ordered array of `shape` in
/// `dtype`, padded so that the data starts on a 64-byte boundary.
pub(crate) fn npy_header(shape: &[usize], dtype: FeatureDType) -> Vec<u8> {
    let descr = match dtype {
        FeatureDType::F32 => "<f4",
        FeatureDType::F16 => "<f2",
    };
    let dims: Vec<String> = shape.iter().map(usize::to_string).collect();
    let tuple = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {tuple}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len());
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// Writes `values` into `out` as little-endian `dtype` (`out` holds exactly their bytes).
pub(crate) fn encode_values(values: &[f32], dtype: FeatureDType, out: &mut [u8]) {
    debug_assert_eq!(out.len(), values.len() * dtype.size());
    match dtype {
        FeatureDType::F32 => {
            for (o, v) in out.chunks_exact_mut(4).zip(values) {
                o.copy_from_slice(&v.to_le_bytes());
            }
        }
        FeatureDType::F16 => {
            for (o, v) in out.chunks_exact_mut(2).zip(values) {
                o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
            }
        }
    }
}

/// Writes `values` as an `.npy` file of `shape` in `dtype` at once (test fixtures and
/// examples; [`crate::feature_writer::FeatureWriter`] writes large files row by row).
pub fn write_npy(path: &Path, shape: &[usize], dtype: FeatureDType, values: &[f32]) -> std::io::Result<()> {
    let mut bytes = npy_header(shape, dtype);
    let header_len = bytes.len();
    bytes.resize(header_len + values.len() * dtype.size(), 0);
    encode_values(values, dtype, &mut bytes[header_len..]);
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| i as f32 * 0.25 - 3.0).collect()
    }

    #[test]
    fn rows_read_back_in_both_dtypes() {
        let dir = tempfile::tempdir().unwrap();
        let shape = [3, 2, 4, 5];
        let data = values(shape.iter().product());
        for dtype in [FeatureDType::F32, FeatureDType::F16] {
            let path = dir.path().join("f.npy");
            write_npy(&path, &shape, dtype, &data).unwrap();
            let file = FeatureFile::open(&path).unwrap();
            assert_eq!(
                (file.rows(), file.map_shape(), file.dtype()),
                (3, (2, 4, 5), dtype)
            );
            let mut row = vec![0.0; file.map_len()];
            file.read_into(2, &mut row);
            // Every value here is a multiple of 0.25 below 12: exact in float16 too.
            assert_eq!(row, data[2 * 40..3 * 40]);
        }
    }

    /// The header as NumPy itself writes it for `np.save(f, np.zeros((2,3,1,1), 'f4'))`.
    #[test]
    fn numpy_written_header_parses() {
        let text = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1, 1), }";
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(text.len() as u16).to_le_bytes());
        bytes.extend_from_slice(text.as_bytes());
        let (header, offset) = parse_header(Path::new("x.npy"), &bytes).unwrap();
        assert_eq!(
            (header.dtype, header.shape, offset),
            (FeatureDType::F32, vec![2, 3, 1, 1], bytes.len())
        );
    }

    fn error_of(header: &str, data_bytes: usize) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train_features.npy");
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 0]);
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_bytes, 0);
        std::fs::write(&path, bytes).unwrap();
        FeatureFile::open(&path).unwrap_err().to_string()
    }

    #[test]
    fn bad_files_say_which_field_is_wrong() {
        let e = error_of(
            "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 1, 1, 1), }",
            8,
        );
        assert!(
            e.contains("train_features.npy: header field 'descr': '<f8'"),
            "{e}"
        );
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1, 1, 1), }",
            4,
        );
        assert!(e.contains("header field 'fortran_order': True"), "{e}");
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4, 1024), }",
            0,
        );
        assert!(e.contains("header field 'shape': [4, 1024] has 2 axes"), "{e}");
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3, 1, 1), }",
            20,
        );
        assert!(
            e.contains("holds 20 bytes of data, but shape [2, 3, 1, 1] of float32 ('<f4') needs 24"),
            "{e}"
        );
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (9223372036854775807, 2, 1, 1), }",
            0,
        );
        assert!(
            e.contains("header field 'shape': [9223372036854775807, 2, 1, 1] is larger"),
            "{e}"
        );
        for (shape, axis) in [
            ("(2, 3, 0, 4)", "height"),
            ("(2, 3, 4, 0)", "width"),
            ("(2, 0, 4, 4)", "channels"),
        ] {
            let e = error_of(
                &format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}"),
                0,
            );
            assert!(
                e.contains("train_features.npy: header field 'shape': ")
                    && e.contains(&format!("has zero {axis}")),
                "{e}"
            );
        }
        // No images, so no data to check the map against: the map's own bound applies,
        // and its product may not overflow either.
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 9999999999999, 2, 1), }",
            0,
        );
        assert!(
            e.contains(
                "header field 'shape': [0, 9999999999999, 2, 1]: one image's feature map holds \
                 19999999999998 values, more than the limit of 67108864"
            ),
            "{e}"
        );
        let e = error_of(
            "{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4294967296, 4294967296, 2), }",
            0,
        );
        assert!(e.contains("is larger than this machine can address"), "{e}");
        let e = error_of("{'descr': '<f4', 'fortran_order': False }", 0);
        assert!(e.contains("header field 'shape': missing"), "{e}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.npy");
        std::fs::write(&path, b"PK\x03\x04 not numpy at all").unwrap();
        let e = FeatureFile::open(&path).unwrap_err().to_string();
        assert!(e.contains("x.npy: not a NumPy .npy file"), "{e}");
        let e = FeatureFile::open(&dir.path().join("missing.npy"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.npy: cannot open the feature file"), "{e}");
    }
}
