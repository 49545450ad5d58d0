//! Checks against real CLEVR v1.0 scene graphs in
//! `<workspace root>/../shared/clevr-reference` (or `$CLEVR_REFERENCE_DIR`);
//! skipped with a message when absent.

use clevr_synth::camera::CameraModel;
use clevr_synth::math::Vec3;
use clevr_synth::sampler::relationships;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Deserialize)]
struct File {
    scenes: Vec<Scene>,
}
#[derive(Deserialize)]
struct Scene {
    objects: Vec<Object>,
    relationships: HashMap<String, Vec<Vec<usize>>>,
    directions: HashMap<String, [f32; 3]>,
}
#[derive(Deserialize)]
struct Object {
    #[serde(rename = "3d_coords")]
    coords: [f32; 3],
    pixel_coords: [f32; 3],
}

fn reference_scenes() -> Option<File> {
    let dir = std::env::var_os("CLEVR_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/clevr-reference"));
    let path = dir.join("CLEVR_val_scenes_500.json");
    let Ok(text) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found (set CLEVR_REFERENCE_DIR)", path.display());
        return None;
    };
    Some(serde_json::from_str(&text).expect("reference scenes parse"))
}

#[test]
fn fitted_camera_projects_real_objects_onto_their_pixel_coords() {
    let Some(file) = reference_scenes() else {
        return;
    };
    let model = CameraModel::clevr();
    let mut errors = Vec::new();
    for scene in &file.scenes {
        let obs: Vec<_> = scene
            .objects
            .iter()
            .map(|o| (Vec3::from_array(o.coords), o.pixel_coords))
            .collect();
        let camera = model.at(model.fit_position(480, 320, &obs).unwrap(), 480, 320);
        for (world, pixel) in obs {
            let p = camera.project(world);
            errors.push(((p[0] - pixel[0]).powi(2) + (p[1] - pixel[1]).powi(2)).sqrt());
        }
    }
    errors.sort_by(f32::total_cmp);
    let median = errors[errors.len() / 2];
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    assert!(median < 3.0 && mean < 3.5, "median {median} px, mean {mean} px");
}

#[test]
fn fitted_directions_and_relationship_rule_match_real_scenes() {
    let Some(file) = reference_scenes() else {
        return;
    };
    let dirs = CameraModel::clevr().directions();
    for scene in &file.scenes {
        for (name, ours) in [("left", dirs.left), ("front", dirs.front)] {
            let real = Vec3::from_array(scene.directions[name]);
            assert!((real - ours).length() < 2e-3, "{name}: {real:?} vs {ours:?}");
        }
        let positions: Vec<Vec3> = scene.objects.iter().map(|o| Vec3::from_array(o.coords)).collect();
        let real_dirs = clevr_synth::camera::Directions {
            left: Vec3::from_array(scene.directions["left"]),
            right: Vec3::from_array(scene.directions["right"]),
            front: Vec3::from_array(scene.directions["front"]),
            behind: Vec3::from_array(scene.directions["behind"]),
            above: Vec3::from_array(scene.directions["above"]),
            below: Vec3::from_array(scene.directions["below"]),
        };
        for (name, rel) in relationships(&positions, &real_dirs) {
            assert_eq!(rel, scene.relationships[name], "relation {name}");
        }
    }
}
