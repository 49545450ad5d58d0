//! Conversion between sampled scenes and CLEVR scene graphs (the clevr
//! crate's records, written field for field like the release), and back
//! from any CLEVR scene graph to what the renderer needs.

use crate::attributes::{shape_kind, size_scale};
use crate::camera::{Camera, CameraModel, Directions};
use crate::math::Vec3;
use crate::render::RenderObject;
use crate::sampler::{relationships, SampledScene};
use clevr::scene::{Directions as JsonDirections, Relationships};
use clevr::{Material, Object, Scene};

/// The scene graph of a sampled scene, as image `index` of `split`.
pub fn to_scene_graph(sampled: &SampledScene, split: &str, index: usize) -> Scene {
    let objects: Vec<Object> = sampled
        .objects
        .iter()
        .map(|o| {
            let [x, y, depth] = sampled.camera.project(o.position);
            Object {
                color: o.color,
                size: o.size,
                rotation: o.rotation_deg as f64,
                shape: o.shape,
                coords_3d: o.position.to_array().map(f64::from),
                material: o.material,
                pixel_coords: (x.round() as i64, y.round() as i64, depth as f64),
            }
        })
        .collect();
    let positions: Vec<Vec3> = sampled.objects.iter().map(|o| o.position).collect();
    let [(_, left), (_, right), (_, front), (_, behind)] = relationships(&positions, &sampled.directions);
    Scene {
        image_index: index,
        objects,
        relationships: Relationships {
            right,
            behind,
            front,
            left,
        },
        image_filename: image_filename(split, index),
        split: split.to_string(),
        directions: json_directions(&sampled.directions),
    }
}

/// CLEVR's image file name.
pub fn image_filename(split: &str, index: usize) -> String {
    format!("CLEVR_{split}_{index:06}.png")
}

fn json_directions(d: &Directions) -> JsonDirections {
    let a = |v: Vec3| v.to_array().map(f64::from);
    JsonDirections {
        right: a(d.right),
        behind: a(d.behind),
        above: a(d.above),
        below: a(d.below),
        left: a(d.left),
        front: a(d.front),
    }
}

/// What the renderer draws for a scene graph.
pub fn render_objects(scene: &Scene) -> Vec<RenderObject> {
    scene
        .objects
        .iter()
        .map(|o| RenderObject {
            shape: shape_kind(o.shape),
            metal: o.material == Material::Metal,
            color: o.color.rgb(),
            center: Vec3::from_array(o.coords_3d.map(|c| c as f32)),
            size: size_scale(o.size),
            rotation_deg: o.rotation as f32,
        })
        .collect()
}

/// The camera a scene graph was seen from: CLEVR jitters the camera per
/// scene, so its position is solved from the objects' `pixel_coords`
/// (recorded at CLEVR's 480x320) and then used at `width`×`height`.
pub fn fitted_camera(model: &CameraModel, scene: &Scene, width: u32, height: u32) -> Camera {
    let observations: Vec<(Vec3, [f32; 3])> = scene
        .objects
        .iter()
        .map(|o| {
            let (x, y, depth) = o.pixel_coords;
            (
                Vec3::from_array(o.coords_3d.map(|c| c as f32)),
                [x as f32, y as f32, depth as f32],
            )
        })
        .collect();
    let position = model
        .fit_position(CLEVR_WIDTH, CLEVR_HEIGHT, &observations)
        .unwrap_or(model.base_position);
    model.at(position, width, height)
}

/// The resolution of the real CLEVR images (and of their `pixel_coords`).
pub const CLEVR_WIDTH: u32 = 480;
pub const CLEVR_HEIGHT: u32 = 320;
