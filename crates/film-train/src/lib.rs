//! The film-train library behind the binary: presets, the assembled model, data loading,
//! the training loop with checkpoints, evaluation and the command line.

pub mod adam;
pub mod cli;
pub mod data;
pub mod evaluate;
pub mod gpu;
pub mod model;
pub mod presets;
pub mod profile;
pub mod run_dir;
pub mod runtime;
pub mod seeded;
pub mod train;
