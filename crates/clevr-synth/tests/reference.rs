//! Checks against the real CLEVR v1.0 scene graphs of the fixture
//! `fixtures/clevr-reference` (validation scenes 0 to 39); a missing file fails.

use clevr::ScenesFile;
use clevr_synth::camera::{CameraModel, Directions};
use clevr_synth::math::Vec3;
use clevr_synth::render::Renderer;
use clevr_synth::sampler::relationships;
use clevr_synth::scene_graph::{fitted_camera, render_objects};
use std::path::PathBuf;

fn reference_scenes() -> ScenesFile {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fixtures/clevr-reference/CLEVR_val_scenes_40.json");
    ScenesFile::read(&path).unwrap_or_else(|e| panic!("the real CLEVR fixture (fixtures/README.md): {e}"))
}

fn v(a: [f64; 3]) -> Vec3 {
    Vec3::from_array(a.map(|c| c as f32))
}

#[test]
fn fitted_camera_projects_real_objects_onto_their_pixel_coords() {
    let file = reference_scenes();
    let model = CameraModel::clevr();
    let mut errors = Vec::new();
    for scene in &file.scenes {
        let camera = fitted_camera(&model, scene, 480, 320);
        for o in &scene.objects {
            let p = camera.project(v(o.coords_3d));
            let (x, y, _) = o.pixel_coords;
            errors.push(((p[0] - x as f32).powi(2) + (p[1] - y as f32).powi(2)).sqrt());
        }
    }
    errors.sort_by(f32::total_cmp);
    let median = errors[errors.len() / 2];
    let mean = errors.iter().sum::<f32>() / errors.len() as f32;
    assert!(median < 3.0 && mean < 3.5, "median {median} px, mean {mean} px");
}

#[test]
fn rendered_real_scenes_show_each_object_at_its_pixel_coords() {
    let file = reference_scenes();
    let model = CameraModel::clevr();
    let renderer = Renderer::default();
    let (mut hits, mut total) = (0, 0);
    for scene in file.scenes.iter().take(40) {
        let camera = fitted_camera(&model, scene, 480, 320);
        let objects = render_objects(scene);
        for (i, o) in scene.objects.iter().enumerate() {
            let (x, y, _) = o.pixel_coords;
            total += 1;
            // Partly hidden objects may show another object at their centre.
            if renderer.object_at(&camera, &objects, x as f32 + 0.5, y as f32 + 0.5) == Some(i) {
                hits += 1;
            }
        }
    }
    assert!(
        hits as f32 >= 0.9 * total as f32,
        "{hits} of {total} centres hit their object"
    );
}

#[test]
fn fitted_directions_and_relationship_rule_match_real_scenes() {
    let file = reference_scenes();
    let ours = CameraModel::clevr().directions();
    for scene in &file.scenes {
        let d = &scene.directions;
        let real = Directions {
            left: v(d.left),
            right: v(d.right),
            front: v(d.front),
            behind: v(d.behind),
            above: v(d.above),
            below: v(d.below),
        };
        assert!(
            (real.left - ours.left).length() < 2e-3,
            "{:?} vs {:?}",
            real.left,
            ours.left
        );
        assert!(
            (real.front - ours.front).length() < 2e-3,
            "{:?} vs {:?}",
            real.front,
            ours.front
        );
        let positions: Vec<Vec3> = scene.objects.iter().map(|o| v(o.coords_3d)).collect();
        let [(_, left), (_, right), (_, front), (_, behind)] = relationships(&positions, &real);
        assert_eq!(left, scene.relationships.left);
        assert_eq!(right, scene.relationships.right);
        assert_eq!(front, scene.relationships.front);
        assert_eq!(behind, scene.relationships.behind);
    }
}
