//! CLEVR for Rust: reads the real CLEVR v1.0, CoGenT and CLEVR-Humans files (and
//! the generated default in the same layout) through one code path.
//!
//! - [`layout`]: where a release's files live, by their real names.
//! - [`scene`], [`question`], [`attributes`]: the JSON records, field for field.
//! - [`json`], [`stream`]: JSON reading with `file:line:column: field` errors;
//!   streaming over the questions list.
//! - [`dataset`]: a split's questions in the flat form training uses.
//! - [`question_type`]: the paper's five question-type columns.
//! - [`vocab`]: the `tokenizer.json` question vocabulary and the answer index.
//! - [`image`], [`cache`]: PNG decode, resize, normalise; the safetensors cache.
//! - [`atomic`]: files replaced whole (temporary file, rename, folder sync).
//! - [`features`], [`feature_writer`]: pre-extracted image features (`.npy`) for the
//!   features stem; writing them row by row, resumably.
//! - [`batch`]: seeded, prefetched batches as candle tensors.
//! - [`executor`], [`verify`]: functional programs on scene graphs; dataset checks.
//!
//! Formats, measured figures and error behaviour: `docs/clevr-loader.md`.

pub mod atomic;
pub mod attributes;
pub mod batch;
pub mod cache;
pub mod dataset;
pub mod executor;
pub mod feature_writer;
pub mod features;
pub mod image;
pub mod json;
pub mod layout;
pub mod question;
pub mod question_type;
pub mod scene;
pub mod stream;
pub mod verify;
pub mod vocab;

#[cfg(test)]
mod testing;

pub use attributes::{AttributeKind, AttributeValue, Color, Material, Relation, Shape, Size};
pub use executor::{execute, Answer, ExecError};
pub use question::{ProgramNode, Question};
pub use question_type::QuestionType;
pub use scene::{Object, Scene, ScenesFile};
