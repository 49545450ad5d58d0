//! Renders scene graphs from a CLEVR scenes JSON (e.g. real CLEVR val scenes)
//! with the project's renderer, each camera fitted to the scene's
//! `pixel_coords`, for side-by-side comparison with the real images.
//!
//! cargo run --release -p clevr-synth --example render_scene -- SCENES_JSON OUT_DIR INDEX...

use clevr::ScenesFile;
use clevr_synth::camera::CameraModel;
use clevr_synth::png_out::encode_png;
use clevr_synth::render::Renderer;
use clevr_synth::scene_graph::{fitted_camera, render_objects};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: render_scene SCENES_JSON OUT_DIR INDEX...".into());
    }
    let file = ScenesFile::read(&PathBuf::from(&args[1]))?;
    let out = PathBuf::from(&args[2]);
    std::fs::create_dir_all(&out)?;
    let model = CameraModel::clevr();
    let renderer = Renderer::default();
    for index in &args[3..] {
        let index: usize = index.parse()?;
        let scene = file
            .scenes
            .iter()
            .find(|s| s.image_index == index)
            .ok_or_else(|| format!("{}: no scene with image_index {index}", args[1]))?;
        let camera = fitted_camera(&model, scene, 480, 320);
        let start = std::time::Instant::now();
        let image = renderer.render(&camera, &render_objects(scene))?;
        eprintln!("scene {index}: rendered in {:?}", start.elapsed());
        let path = out.join(format!("synth_{index:06}.png"));
        encode_png(&image, std::io::BufWriter::new(std::fs::File::create(&path)?))?;
    }
    Ok(())
}
