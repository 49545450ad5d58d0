//! Renders real CLEVR scene graphs with the project's renderer, the camera
//! fitted to each scene's `pixel_coords`, for side-by-side comparison.
//!
//! cargo run --release -p clevr-synth --example render_scene -- SCENES_JSON OUT_DIR INDEX...

use clevr_synth::camera::CameraModel;
use clevr_synth::math::Vec3;
use clevr_synth::render::{RenderObject, Renderer};
use clevr_synth::shapes::ShapeKind;
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    scenes: Vec<Scene>,
}
#[derive(Deserialize)]
struct Scene {
    image_index: usize,
    objects: Vec<Object>,
}
#[derive(Deserialize)]
struct Object {
    #[serde(rename = "3d_coords")]
    coords: [f32; 3],
    pixel_coords: [f32; 3],
    shape: String,
    material: String,
    color: String,
    size: String,
    rotation: f32,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let file: File = serde_json::from_str(&std::fs::read_to_string(&args[1]).unwrap()).unwrap();
    let out = std::path::Path::new(&args[2]);
    std::fs::create_dir_all(out).unwrap();
    let model = CameraModel::clevr();
    let renderer = Renderer::default();
    for idx in &args[3..] {
        let idx: usize = idx.parse().unwrap();
        let scene = file.scenes.iter().find(|s| s.image_index == idx).unwrap();
        let obs: Vec<_> = scene
            .objects
            .iter()
            .map(|o| (Vec3::from_array(o.coords), o.pixel_coords))
            .collect();
        let pos = model.fit_position(480, 320, &obs).unwrap();
        let cam = model.at(pos, 480, 320);
        let objects: Vec<RenderObject> = scene
            .objects
            .iter()
            .map(|o| RenderObject {
                shape: match o.shape.as_str() {
                    "cube" => ShapeKind::Cube,
                    "sphere" => ShapeKind::Sphere,
                    _ => ShapeKind::Cylinder,
                },
                metal: o.material == "metal",
                color: match o.color.as_str() {
                    "gray" => [87, 87, 87],
                    "red" => [173, 35, 35],
                    "blue" => [42, 75, 215],
                    "green" => [29, 105, 20],
                    "brown" => [129, 74, 25],
                    "purple" => [129, 38, 192],
                    "cyan" => [41, 208, 208],
                    _ => [255, 238, 51],
                },
                center: Vec3::from_array(o.coords),
                size: if o.size == "large" { 0.7 } else { 0.35 },
                rotation_deg: o.rotation,
            })
            .collect();
        let t = std::time::Instant::now();
        let img = renderer.render(&cam, &objects);
        eprintln!("scene {idx}: {:?}", t.elapsed());
        let f = std::fs::File::create(out.join(format!("synth_{idx:06}.png"))).unwrap();
        clevr_synth::png_out::encode_png(&img, std::io::BufWriter::new(f)).unwrap();
    }
}
