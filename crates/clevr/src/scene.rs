//! Scene graphs: the `CLEVR_{split}_scenes.json` records, field for field.
//!
//! The types serialise back to the same field names as the release, so the
//! synthetic generator writes files the real-data loader reads unchanged.

use crate::attributes::{AttributeKind, AttributeValue, Color, Material, Relation, Shape, Size};
use crate::json::{read_json, JsonError};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The `info` block at the top of CLEVR scenes and questions files.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Info {
    pub split: String,
    pub license: String,
    pub version: String,
    pub date: String,
}

/// One object of a scene.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Object {
    pub color: Color,
    pub size: Size,
    /// Rotation about the vertical axis, in degrees.
    pub rotation: f64,
    pub shape: Shape,
    /// Centre in world coordinates (x, y on the ground plane, z up).
    #[serde(rename = "3d_coords")]
    pub coords_3d: [f64; 3],
    pub material: Material,
    /// Projected centre: pixel column, pixel row, depth from the camera.
    pub pixel_coords: (i64, i64, f64),
}

impl Object {
    pub fn attribute(&self, kind: AttributeKind) -> AttributeValue {
        match kind {
            AttributeKind::Color => AttributeValue::Color(self.color),
            AttributeKind::Shape => AttributeValue::Shape(self.shape),
            AttributeKind::Material => AttributeValue::Material(self.material),
            AttributeKind::Size => AttributeValue::Size(self.size),
        }
    }
}

/// For each relation and each object `i`, the indices of the objects that are in
/// that relation to `i` (`right[i]` lists the objects right of object `i`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Relationships {
    pub right: Vec<Vec<usize>>,
    pub behind: Vec<Vec<usize>>,
    pub front: Vec<Vec<usize>>,
    pub left: Vec<Vec<usize>>,
}

impl Relationships {
    pub fn get(&self, relation: Relation) -> &[Vec<usize>] {
        match relation {
            Relation::Left => &self.left,
            Relation::Right => &self.right,
            Relation::Front => &self.front,
            Relation::Behind => &self.behind,
        }
    }
}

/// Unit vectors of the camera-relative directions in world coordinates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Directions {
    pub right: [f64; 3],
    pub behind: [f64; 3],
    pub above: [f64; 3],
    pub below: [f64; 3],
    pub left: [f64; 3],
    pub front: [f64; 3],
}

/// One scene graph (one image).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scene {
    pub image_index: usize,
    pub objects: Vec<Object>,
    pub relationships: Relationships,
    pub image_filename: String,
    pub split: String,
    pub directions: Directions,
}

/// A whole `CLEVR_{split}_scenes.json` file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenesFile {
    pub info: Info,
    pub scenes: Vec<Scene>,
}

impl ScenesFile {
    /// Reads a scenes file whole: even the train split's 70k scenes are far smaller
    /// than its questions, and verification needs random access to them.
    pub fn read(path: &Path) -> Result<Self, JsonError> {
        read_json(path, "a CLEVR scenes JSON file ({\"info\", \"scenes\"})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{reference_file, REFERENCE_SCENES};

    #[test]
    fn reads_real_scenes_and_writes_identical_json() {
        let path = reference_file(REFERENCE_SCENES);
        let file = ScenesFile::read(&path).unwrap();
        assert_eq!(file.scenes.len(), 40);
        assert_eq!(file.info.split, "val");
        let first = &file.scenes[0];
        assert_eq!(first.image_filename, "CLEVR_val_000000.png");
        assert_eq!(first.objects[0].color, Color::Brown);
        assert_eq!(first.objects[0].pixel_coords.0, 119);
        assert_eq!(first.relationships.right[0], vec![1, 2, 3, 4]);

        // Field names and number types must survive a round trip exactly, since
        // clevr-synth writes its files with these types.
        let original: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let rewritten = serde_json::to_value(&file).unwrap();
        assert_eq!(original, rewritten);
    }
}
