//! Fits the CLEVR camera (orientation and focal length) to real scene graphs
//! and prints the constants for `camera.rs` and the residual pixel error.
//!
//! cargo run --release -p clevr-synth --example fit_camera -- [SCENES_JSON]

use clevr_synth::camera::CameraModel;
use clevr_synth::math::Vec3;
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    scenes: Vec<Scene>,
}
#[derive(Deserialize)]
struct Scene {
    objects: Vec<Object>,
}
#[derive(Deserialize)]
struct Object {
    #[serde(rename = "3d_coords")]
    coords: [f32; 3],
    pixel_coords: [f32; 3],
}

const WIDTH: u32 = 480;
const HEIGHT: u32 = 320;

/// Per-object pixel errors when each scene's position is solved for `model`.
fn errors(model: &CameraModel, scenes: &[Vec<(Vec3, [f32; 3])>]) -> Vec<f32> {
    let mut out = Vec::new();
    for obs in scenes {
        let pos = model.fit_position(WIDTH, HEIGHT, obs).expect("scene has objects");
        let cam = model.at(pos, WIDTH, HEIGHT);
        for (w, p) in obs {
            let q = cam.project(*w);
            out.push(((q[0] - p[0]).powi(2) + (q[1] - p[1]).powi(2)).sqrt());
        }
    }
    out
}

fn mean_sq(model: &CameraModel, scenes: &[Vec<(Vec3, [f32; 3])>]) -> f32 {
    let e = errors(model, scenes);
    e.iter().map(|x| x * x).sum::<f32>() / e.len() as f32
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/clevr-reference/CLEVR_val_scenes_40.json".into());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let file: File = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    let scenes: Vec<Vec<(Vec3, [f32; 3])>> = file
        .scenes
        .iter()
        .map(|s| {
            s.objects
                .iter()
                .map(|o| (Vec3::from_array(o.coords), o.pixel_coords))
                .collect()
        })
        .collect();

    // Coordinate descent with shrinking steps over the three free angles /
    // lengths; the loss is smooth and has one basin near Blender's defaults.
    let mut model = CameraModel::clevr();
    let mut steps = [2f32.to_radians(), 2f32.to_radians(), 0.05];
    for _ in 0..60 {
        for (k, step) in steps.iter_mut().enumerate() {
            let mut best = mean_sq(&model, &scenes);
            for dir in [-1.0f32, 1.0] {
                let mut m = model.clone();
                match k {
                    0 => m.yaw += dir * *step,
                    1 => m.pitch += dir * *step,
                    _ => m.focal_per_width += dir * *step,
                }
                let l = mean_sq(&m, &scenes);
                if l < best {
                    best = l;
                    model = m;
                }
            }
            *step *= 0.8;
        }
    }
    let positions: Vec<Vec3> = scenes
        .iter()
        .map(|o| model.fit_position(WIDTH, HEIGHT, o).unwrap())
        .collect();
    let n = positions.len() as f32;
    let mean = positions.iter().fold(Vec3::ZERO, |a, p| a + *p) * (1.0 / n);
    let spread = positions
        .iter()
        .map(|p| (*p - mean).abs())
        .fold(Vec3::ZERO, |a, d| {
            Vec3::new(a.x.max(d.x), a.y.max(d.y), a.z.max(d.z))
        });
    let mut e = errors(&model, &scenes);
    e.sort_by(f32::total_cmp);
    // Why the residual cannot go to zero: within a scene, recorded depth
    // differences should equal the 3D offsets along the (fixed) view axis.
    let [forward, _, _] = model.frame();
    let depth_disagreement = scenes
        .iter()
        .flat_map(|obs| {
            let (w0, p0) = obs[0];
            obs.iter()
                .map(move |(w, p)| ((p[2] - p0[2]) - (*w - w0).dot(forward)).abs())
        })
        .fold(0f32, f32::max);
    println!("max disagreement of depth differences with 3d_coords = {depth_disagreement:.3}");
    println!("yaw_deg = {:.3}", model.yaw.to_degrees());
    println!("pitch_deg = {:.3}", model.pitch.to_degrees());
    println!("focal_per_width = {:.5}", model.focal_per_width);
    println!("base_position = [{:.3}, {:.3}, {:.3}]", mean.x, mean.y, mean.z);
    println!(
        "max |position - mean| per axis = [{:.3}, {:.3}, {:.3}]",
        spread.x, spread.y, spread.z
    );
    println!(
        "pixel error over {} objects: mean {:.3}, median {:.3}, p99 {:.3}, max {:.3}",
        e.len(),
        e.iter().sum::<f32>() / e.len() as f32,
        e[e.len() / 2],
        e[e.len() * 99 / 100],
        e[e.len() - 1]
    );
}
