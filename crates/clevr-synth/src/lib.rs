//! clevr-synth: the embedded default dataset. Samples CLEVR-like scenes,
//! renders them with a small ray tracer, asks questions from templates in the
//! official CLEVR generator's format (its own 90 families built in) and writes
//! everything in the CLEVR v1.0 layout.

pub mod attributes;
pub mod camera;
pub mod dataset;
pub mod math;
pub mod png_out;
pub mod render;
pub mod sampler;
pub mod scene_graph;
pub mod shapes;
pub mod templates;
