//! The film-train library behind the binary: presets, the assembled model, data loading,
//! the training loop with checkpoints, evaluation, analysis with plots, the local web server
//! and the command line.

pub mod analyze;
pub mod answer_attention;
pub mod ask;
pub mod cli;
pub mod compare;
pub mod curriculum;
pub mod data;
pub mod epoch_plan;
pub mod evaluate;
pub mod extract;
pub mod fresh_questions;
pub mod gpu;
pub mod intermediate_answers;
pub mod learning_rate;
pub mod limits;
pub mod metrics_file;
pub mod model;
pub mod perception;
pub mod plots;
pub mod presets;
pub mod profile;
pub mod program_scenes;
pub mod run_dir;
pub mod runtime;
pub mod scene_bottleneck;
pub mod seeded;
pub mod serve;
pub mod train;
pub mod training_curve;
pub mod weight_average;
