//! The perspective camera of CLEVR, fitted to the real scene graphs.
//!
//! In the real scene files `directions` is identical in every scene, so the
//! camera's orientation is fixed; only its position is jittered per scene
//! (CLEVR's renderer adds a uniform jitter to the location). The orientation
//! and focal length below were fitted by `examples/fit_camera.rs` on the 500
//! real val scene graphs (`3d_coords` → `pixel_coords`), solving each scene's
//! camera position in closed form from the depths CLEVR records as the third
//! `pixel_coords` value. docs/embedded-dataset.md reports the residual error.

use crate::math::Vec3;

/// The camera parameters shared by every scene of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraModel {
    /// Heading of the view direction projected on the ground, radians from +x.
    pub yaw: f32,
    /// Angle of the view direction below the horizon, radians.
    pub pitch: f32,
    /// Focal length divided by the image width (resolution independent).
    pub focal_per_width: f32,
    /// Mean camera position over the real scenes.
    pub base_position: Vec3,
    /// Half-width of the uniform per-axis jitter added to `base_position`.
    pub position_jitter: f32,
}

impl CameraModel {
    /// The fit to real CLEVR v1.0 (see the module comment).
    pub fn clevr() -> Self {
        Self {
            yaw: FITTED_YAW_DEG.to_radians(),
            pitch: FITTED_PITCH_DEG.to_radians(),
            focal_per_width: FITTED_FOCAL_PER_WIDTH,
            base_position: Vec3::from_array(FITTED_BASE_POSITION),
            position_jitter: FITTED_POSITION_JITTER,
        }
    }

    /// Unit view direction, camera right and camera up in world coordinates
    /// (z is up, no roll: the real `directions` have no vertical component).
    pub fn frame(&self) -> [Vec3; 3] {
        let (sy, cy) = self.yaw.sin_cos();
        let (sp, cp) = self.pitch.sin_cos();
        let forward = Vec3::new(cp * cy, cp * sy, -sp);
        let right = forward.cross(Vec3::new(0.0, 0.0, 1.0)).normalized();
        let up = right.cross(forward);
        [forward, right, up]
    }

    /// CLEVR's `directions` entry: unit ground-plane vectors for the four
    /// relations plus above/below.
    pub fn directions(&self) -> Directions {
        let [forward, right, _] = self.frame();
        let behind = Vec3::new(forward.x, forward.y, 0.0).normalized();
        let right = Vec3::new(right.x, right.y, 0.0).normalized();
        Directions {
            left: -right,
            right,
            front: -behind,
            behind,
            above: Vec3::new(0.0, 0.0, 1.0),
            below: Vec3::new(0.0, 0.0, -1.0),
        }
    }

    /// The camera of one scene at `position`, for a `width`×`height` image.
    pub fn at(&self, position: Vec3, width: u32, height: u32) -> Camera {
        let [forward, right, up] = self.frame();
        Camera {
            position,
            forward,
            right,
            up,
            focal_px: self.focal_per_width * width as f32,
            width,
            height,
        }
    }

    /// The position that best reproduces observed projections: each object
    /// with a known depth pins the camera down exactly, so the least-squares
    /// position is the mean of the per-object estimates. `None` without
    /// observations.
    pub fn fit_position(&self, width: u32, height: u32, observations: &[(Vec3, [f32; 3])]) -> Option<Vec3> {
        if observations.is_empty() {
            return None;
        }
        let camera = self.at(Vec3::ZERO, width, height);
        let mut sum = Vec3::ZERO;
        for &(world, [u, v, depth]) in observations {
            let offset = camera.unproject_offset(u, v, depth);
            sum += world - offset;
        }
        Some(sum * (1.0 / observations.len() as f32))
    }
}

/// Constants printed by `cargo run --release -p clevr-synth --example fit_camera`.
/// The residual (mean 2.9 px, median 2.3 px at 480x320) is noise in the real
/// files: depth differences between objects of one scene disagree with their
/// `3d_coords` by up to 0.4 units whatever the orientation, so no single
/// camera can do better. The jitter matches CLEVR's default of 0.5 and the
/// observed spread of fitted positions (at most 0.51 from the mean per axis).
const FITTED_YAW_DEG: f32 = 138.931;
const FITTED_PITCH_DEG: f32 = 28.360;
const FITTED_FOCAL_PER_WIDTH: f32 = 1.09299;
const FITTED_BASE_POSITION: [f32; 3] = [7.485, -6.522, 5.359];
const FITTED_POSITION_JITTER: f32 = 0.5;

/// The ground-plane unit vectors of the four spatial relations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Directions {
    pub left: Vec3,
    pub right: Vec3,
    pub front: Vec3,
    pub behind: Vec3,
    pub above: Vec3,
    pub below: Vec3,
}

/// One scene's camera.
#[derive(Debug, Clone, PartialEq)]
pub struct Camera {
    pub position: Vec3,
    pub forward: Vec3,
    pub right: Vec3,
    pub up: Vec3,
    pub focal_px: f32,
    pub width: u32,
    pub height: u32,
}

impl Camera {
    /// Pixel coordinates (x right, y down, pixel centres at +0.5) and depth
    /// along the view axis, as CLEVR writes `pixel_coords`.
    pub fn project(&self, world: Vec3) -> [f32; 3] {
        let d = world - self.position;
        let depth = d.dot(self.forward);
        let x = self.width as f32 * 0.5 + self.focal_px * d.dot(self.right) / depth;
        let y = self.height as f32 * 0.5 - self.focal_px * d.dot(self.up) / depth;
        [x, y, depth]
    }

    /// The world offset from the camera of the point seen at pixel (x, y)
    /// at `depth` along the view axis: the inverse of `project`.
    fn unproject_offset(&self, x: f32, y: f32, depth: f32) -> Vec3 {
        let cx = (x - self.width as f32 * 0.5) * depth / self.focal_px;
        let cy = -(y - self.height as f32 * 0.5) * depth / self.focal_px;
        self.forward * depth + self.right * cx + self.up * cy
    }

    /// Unit direction of the primary ray through pixel coordinates (x, y).
    pub fn ray_direction(&self, x: f32, y: f32) -> Vec3 {
        let cx = (x - self.width as f32 * 0.5) / self.focal_px;
        let cy = -(y - self.height as f32 * 0.5) / self.focal_px;
        (self.forward + self.right * cx + self.up * cy).normalized()
    }
}
