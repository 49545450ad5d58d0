//! CLEVR for Rust: reads the real CLEVR v1.0, CoGenT and CLEVR-Humans files (and
//! the generated default in the same layout) through one code path.
//!
//! - [`scene`], [`question`]: the JSON records, field for field.
//! - [`executor`]: runs functional programs on scene graphs.
//! - [`question_type`]: the paper's five question-type columns.

pub mod attributes;
pub mod batch;
pub mod cache;
pub mod dataset;
pub mod executor;
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
