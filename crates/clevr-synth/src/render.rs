//! A small ray tracer for CLEVR scenes: a matte ground plane, three area-ish
//! lights (key, fill, back) with soft shadows, ambient occlusion near
//! contacts, matte rubber and reflective metal, and edge-adaptive
//! anti-aliasing. Fast because scenes are tiny: per 16x16 tile it keeps the
//! short lists of objects that can be seen or cast a shadow there, and it
//! shades the slowly varying ground on a 4-pixel grid, so most ground pixels
//! cost a few bounding-box tests and an interpolation.

use crate::camera::Camera;
use crate::math::Vec3;
use crate::shapes::{Primitive, ShapeKind};

/// One object as the renderer needs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenderObject {
    pub shape: ShapeKind,
    pub metal: bool,
    /// sRGB colour from the colour table.
    pub color: [u8; 3],
    /// Centre of the object (CLEVR's `3d_coords`: it rests on z = 0).
    pub center: Vec3,
    /// CLEVR's size scale (0.7 large, 0.35 small): the half extent.
    pub size: f32,
    pub rotation_deg: f32,
}

/// A light: CLEVR's base scene lights them from fixed positions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Light {
    pub position: Vec3,
    /// Linear RGB irradiance on a surface facing the light.
    pub intensity: Vec3,
    /// Inverse angular size: higher gives crisper shadows.
    pub sharpness: f32,
}

/// Look parameters; `Default` is tuned against the real reference images.
#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    pub lights: [Light; LIGHTS],
    /// Linear albedo of the ground.
    pub ground_albedo: f32,
    /// Uniform sky/backdrop light reaching every surface.
    pub ambient: Vec3,
    /// Reflected environment brightness for rays leaving the scene upwards
    /// (at the horizon and straight up); CLEVR's backdrop is a lit grey sheet.
    pub environment: (f32, f32),
    /// Strength of contact darkening on the ground.
    pub occlusion: f32,
    /// Specular strength and exponent of rubber.
    pub rubber_specular: (f32, i32),
    /// Specular strength and exponent of metal highlights.
    pub metal_specular: (f32, i32),
    /// Fraction of diffuse light a metal still shows (CLEVR's metal is not
    /// a perfect mirror).
    pub metal_diffuse: f32,
}

impl Default for Look {
    fn default() -> Self {
        Self {
            lights: [
                // Key light: front right of the camera, casting the main shadows.
                Light {
                    position: Vec3::new(6.45, -2.9, 4.26),
                    intensity: Vec3::new(0.40, 0.39, 0.37),
                    sharpness: 6.0,
                },
                // Fill light: front left, softer and weaker.
                Light {
                    position: Vec3::new(-4.67, -4.01, 3.01),
                    intensity: Vec3::new(0.12, 0.125, 0.14),
                    sharpness: 3.0,
                },
                // Back light: behind the objects, rims them.
                Light {
                    position: Vec3::new(-1.17, 2.65, 5.82),
                    intensity: Vec3::splat(0.12),
                    sharpness: 4.0,
                },
            ],
            ground_albedo: 0.6,
            ambient: Vec3::splat(0.11),
            environment: (0.12, 0.3),
            occlusion: 0.6,
            rubber_specular: (0.06, 12),
            metal_specular: (0.9, 60),
            metal_diffuse: 0.25,
        }
    }
}

/// An RGBA image, row-major, 8 bits per channel (CLEVR writes RGBA PNGs).
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

/// The most pixels [`Renderer::render`] draws: an 8192 x 8192 image. Its buffers (linear
/// colour twice, object ids, RGBA) take 29 bytes a pixel, so a size from the command line
/// or a scene file must not choose it unbounded; CLEVR renders 480 x 320.
pub const MAX_PIXELS: usize = 8192 * 8192;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    #[error("a {width} x {height} image has more than the {MAX_PIXELS} pixels the renderer draws")]
    TooLarge { width: u32, height: u32 },
}

/// Pixels of a `width` x `height` image, counted in usize (a u32 product wraps above
/// 65536 x 65536), within [`MAX_PIXELS`].
pub fn pixel_count(width: u32, height: u32) -> Result<usize, RenderError> {
    (width as usize)
        .checked_mul(height as usize)
        .filter(|&n| n <= MAX_PIXELS)
        .ok_or(RenderError::TooLarge { width, height })
}

/// Key, fill and back light.
pub const LIGHTS: usize = 3;
const TILE: u32 = 16;
/// Ground shading (soft shadows, contact darkening, light falloff) varies
/// slowly: it is computed every GRID_STEP pixels and interpolated, which
/// removes most of the ground work.
const GRID_STEP: u32 = 4;
const GRID: usize = (TILE / GRID_STEP) as usize + 1;
const CUBE_EXTENT: f32 = 0.88;
const NO_OBJECT: u8 = u8::MAX;
/// Offsets of the extra anti-aliasing samples (rotated grid), in pixels.
const AA_OFFSETS: [(f32, f32); 4] = [(-0.125, -0.375), (0.375, -0.125), (0.125, 0.375), (-0.375, 0.125)];

pub struct Renderer {
    look: Look,
    srgb: Vec<u8>,
}

impl Default for Renderer {
    fn default() -> Self {
        Self::new(Look::default())
    }
}

impl Renderer {
    pub fn new(look: Look) -> Self {
        let srgb = (0..SRGB_TABLE)
            .map(|i| {
                let l = i as f32 / (SRGB_TABLE - 1) as f32;
                let s = if l <= 0.003_130_8 {
                    12.92 * l
                } else {
                    1.055 * l.powf(1.0 / 2.4) - 0.055
                };
                (s * 255.0 + 0.5) as u8
            })
            .collect();
        Self { look, srgb }
    }

    /// The image `camera` sees of `objects`; an error for an image of more than
    /// [`MAX_PIXELS`] pixels.
    pub fn render(&self, camera: &Camera, objects: &[RenderObject]) -> Result<Image, RenderError> {
        let (w, h) = (camera.width, camera.height);
        let pixels = pixel_count(w, h)?;
        let scene = SceneGeometry::new(&self.look, objects, camera);
        let mut linear = vec![Vec3::ZERO; pixels];
        let mut ids = vec![NO_OBJECT; pixels];
        let all: Vec<u8> = (0..objects.len() as u8).collect();
        let mut tile = TileLists::default();
        for ty in (0..h).step_by(TILE as usize) {
            for tx in (0..w).step_by(TILE as usize) {
                let x1 = (tx + TILE).min(w);
                let y1 = (ty + TILE).min(h);
                scene.fill_tile_lists(camera, [tx, ty, x1, y1], &mut tile);
                let grid = scene.ground_grid(camera, tx, ty, &tile);
                for y in ty..y1 {
                    for x in tx..x1 {
                        let dir = camera.ray_direction(x as f32 + 0.5, y as f32 + 0.5);
                        let at = ((x - tx) as f32 + 0.5, (y - ty) as f32 + 0.5);
                        let (c, id) =
                            scene.shade_primary(camera.position, dir, &tile, &all, Some((&grid, at)));
                        let i = y as usize * w as usize + x as usize;
                        linear[i] = c;
                        ids[i] = id;
                    }
                }
            }
        }
        // Anti-alias where the visible object changes: silhouettes are the
        // only place a one-sample-per-pixel image looks jagged. Samples stay
        // inside their pixel, so the tile's lists still hold.
        let edge = |x: u32, y: u32| {
            let i = y as usize * w as usize + x as usize;
            let id = ids[i];
            (x > 0 && ids[i - 1] != id)
                || (x + 1 < w && ids[i + 1] != id)
                || (y > 0 && ids[i - w as usize] != id)
                || (y + 1 < h && ids[i + w as usize] != id)
        };
        let mut smoothed = linear.clone();
        for ty in (0..h).step_by(TILE as usize) {
            for tx in (0..w).step_by(TILE as usize) {
                let x1 = (tx + TILE).min(w);
                let y1 = (ty + TILE).min(h);
                let mut lists_ready = false;
                for y in ty..y1 {
                    for x in tx..x1 {
                        if !edge(x, y) {
                            continue;
                        }
                        if !lists_ready {
                            scene.fill_tile_lists(camera, [tx, ty, x1, y1], &mut tile);
                            lists_ready = true;
                        }
                        let i = y as usize * w as usize + x as usize;
                        let mut c = linear[i];
                        for (dx, dy) in AA_OFFSETS {
                            let dir = camera.ray_direction(x as f32 + 0.5 + dx, y as f32 + 0.5 + dy);
                            c += scene.shade_primary(camera.position, dir, &tile, &all, None).0;
                        }
                        smoothed[i] = c * (1.0 / (AA_OFFSETS.len() + 1) as f32);
                    }
                }
            }
        }
        // Within MAX_PIXELS, four bytes a pixel cannot overflow a usize.
        let mut out = vec![255u8; pixels * 4];
        for (i, c) in smoothed.iter().enumerate() {
            out[i * 4] = self.encode(c.x);
            out[i * 4 + 1] = self.encode(c.y);
            out[i * 4 + 2] = self.encode(c.z);
        }
        Ok(Image {
            width: w,
            height: h,
            rgba: out,
        })
    }

    /// The object seen through pixel coordinates (x, y), if any.
    pub fn object_at(&self, camera: &Camera, objects: &[RenderObject], x: f32, y: f32) -> Option<usize> {
        let scene = SceneGeometry::new(&self.look, objects, camera);
        let all: Vec<u8> = (0..objects.len() as u8).collect();
        let dir = camera.ray_direction(x, y);
        scene
            .nearest(camera.position, dir, &all, NO_OBJECT)
            .map(|(i, _)| i as usize)
    }

    /// How many pixels of each object are visible (primary rays only, on
    /// every `stride`-th pixel in each direction, scaled back up): the
    /// sampler's test that every object is at least partly visible.
    pub fn visible_pixels(&self, camera: &Camera, objects: &[RenderObject], stride: u32) -> Vec<u32> {
        let scene = SceneGeometry::new(&self.look, objects, camera);
        let mut counts = vec![0u32; objects.len()];
        let mut tile = TileLists::default();
        let step = (TILE / stride.max(1)).max(1) * stride.max(1);
        for ty in (0..camera.height).step_by(step as usize) {
            for tx in (0..camera.width).step_by(step as usize) {
                let x1 = (tx + step).min(camera.width);
                let y1 = (ty + step).min(camera.height);
                scene.fill_tile_lists(camera, [tx, ty, x1, y1], &mut tile);
                if tile.visible.is_empty() {
                    continue;
                }
                for y in (ty..y1).step_by(stride as usize) {
                    for x in (tx..x1).step_by(stride as usize) {
                        let dir = camera.ray_direction(x as f32 + 0.5, y as f32 + 0.5);
                        if let Some((i, _)) = scene.nearest(camera.position, dir, &tile.visible, NO_OBJECT) {
                            counts[i as usize] += stride * stride;
                        }
                    }
                }
            }
        }
        counts
    }

    fn encode(&self, linear: f32) -> u8 {
        let i = (linear.clamp(0.0, 1.0) * (SRGB_TABLE - 1) as f32) as usize;
        self.srgb[i]
    }
}

const SRGB_TABLE: usize = 4096;

fn srgb_to_linear(c: u8) -> f32 {
    let s = c as f32 / 255.0;
    if s <= 0.04045 {
        s / 12.92
    } else {
        ((s + 0.055) / 1.055).powf(2.4)
    }
}

/// Per-tile candidate lists (indices into the scene's objects).
#[derive(Default)]
struct TileLists {
    visible: Vec<u8>,
    /// For each light, the objects whose shadow may fall on the tile's ground.
    shadow: [Vec<u8>; LIGHTS],
    /// Objects close enough to darken the tile's ground by occlusion.
    occluders: Vec<u8>,
}

struct SceneGeometry<'a> {
    look: &'a Look,
    prims: Vec<Primitive>,
    albedo: Vec<Vec3>,
    metal: Vec<bool>,
    /// Per light, per object: ground-plane AABB [x0, y0, x1, y1] of its shadow.
    shadow_boxes: Vec<Vec<[f32; 4]>>,
    /// Per object: screen-space box of its bounding sphere.
    screen_boxes: Vec<[f32; 4]>,
    /// Unculled shadow lists, for reflected rays.
    every_object_per_light: [Vec<u8>; LIGHTS],
}

impl<'a> SceneGeometry<'a> {
    fn new(look: &'a Look, objects: &[RenderObject], camera: &Camera) -> Self {
        let prims: Vec<Primitive> = objects
            .iter()
            .map(|o| {
                // CLEVR's cube mesh is smaller than its size scale (measured
                // on the reference images: 0.88 of the sphere's extent); it
                // still rests on the ground.
                let half = match o.shape {
                    ShapeKind::Cube => o.size * CUBE_EXTENT,
                    _ => o.size,
                };
                let center = Vec3::new(o.center.x, o.center.y, half);
                Primitive::new(o.shape, center, half, o.rotation_deg)
            })
            .collect();
        let shadow_boxes = look
            .lights
            .iter()
            .map(|l| prims.iter().map(|p| shadow_box(l, p)).collect())
            .collect();
        let every: Vec<u8> = (0..objects.len() as u8).collect();
        Self {
            look,
            screen_boxes: prims.iter().map(|p| screen_box(camera, p)).collect(),
            every_object_per_light: [every.clone(), every.clone(), every],
            albedo: objects
                .iter()
                .map(|o| {
                    Vec3::new(
                        srgb_to_linear(o.color[0]),
                        srgb_to_linear(o.color[1]),
                        srgb_to_linear(o.color[2]),
                    )
                })
                .collect(),
            metal: objects.iter().map(|o| o.metal).collect(),
            prims,
            shadow_boxes,
        }
    }

    fn fill_tile_lists(&self, camera: &Camera, [x0, y0, x1, y1]: [u32; 4], out: &mut TileLists) {
        out.visible.clear();
        out.occluders.clear();
        out.shadow.iter_mut().for_each(Vec::clear);
        let (fx0, fy0, fx1, fy1) = (x0 as f32, y0 as f32, x1 as f32, y1 as f32);
        for (i, &[bx0, by0, bx1, by1]) in self.screen_boxes.iter().enumerate() {
            if bx1 >= fx0 && bx0 <= fx1 && by1 >= fy0 && by0 <= fy1 {
                out.visible.push(i as u8);
            }
        }
        // The tile's ground footprint: where its corner rays meet z = 0.
        let mut g = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
        for (x, y) in [(fx0, fy0), (fx1, fy0), (fx0, fy1), (fx1, fy1)] {
            let d = camera.ray_direction(x, y);
            let t = if d.z < -1e-4 {
                -camera.position.z / d.z
            } else {
                1e4
            };
            let p = camera.position + d * t;
            g = [g[0].min(p.x), g[1].min(p.y), g[2].max(p.x), g[3].max(p.y)];
        }
        for (l, boxes) in self.shadow_boxes.iter().enumerate() {
            for (i, b) in boxes.iter().enumerate() {
                if b[2] >= g[0] && b[0] <= g[2] && b[3] >= g[1] && b[1] <= g[3] {
                    out.shadow[l].push(i as u8);
                }
            }
        }
        for (i, p) in self.prims.iter().enumerate() {
            let reach = p.bound * OCCLUSION_REACH;
            let c = p.center;
            if c.x + reach >= g[0] && c.x - reach <= g[2] && c.y + reach >= g[1] && c.y - reach <= g[3] {
                out.occluders.push(i as u8);
            }
        }
    }

    fn nearest(&self, origin: Vec3, dir: Vec3, candidates: &[u8], skip: u8) -> Option<(u8, f32)> {
        let mut best: Option<(u8, f32)> = None;
        for &i in candidates {
            if i == skip {
                continue;
            }
            let limit = best.map_or(f32::INFINITY, |b| b.1);
            if let Some(t) = self.prims[i as usize].intersect(origin, dir, 1e-4, limit) {
                best = Some((i, t));
            }
        }
        best
    }

    /// Light visibility of the tile's ground at every GRID_STEP pixels.
    /// Shaded ground of the tile at every GRID_STEP pixels.
    fn ground_grid(&self, camera: &Camera, tx: u32, ty: u32, tile: &TileLists) -> GroundGrid {
        let mut grid = [[Vec3::ZERO; GRID]; GRID];
        for (gy, row) in grid.iter_mut().enumerate() {
            for (gx, cell) in row.iter_mut().enumerate() {
                let x = (tx + gx as u32 * GRID_STEP) as f32;
                let y = (ty + gy as u32 * GRID_STEP) as f32;
                let p = ground_point(camera.position, camera.ray_direction(x, y));
                let vis = self.ground_visibility(p, &tile.shadow);
                *cell = self.shade_ground(p, vis, &tile.occluders);
            }
        }
        grid
    }

    fn shade_primary(
        &self,
        origin: Vec3,
        dir: Vec3,
        tile: &TileLists,
        all: &[u8],
        grid: Option<(&GroundGrid, (f32, f32))>,
    ) -> (Vec3, u8) {
        if let Some((i, t)) = self.nearest(origin, dir, &tile.visible, NO_OBJECT) {
            return (self.shade_object(origin + dir * t, dir, i, all, true), i);
        }
        if let Some((grid, (x, y))) = grid {
            let c = interpolate(grid, x / GRID_STEP as f32, y / GRID_STEP as f32);
            return (c, NO_OBJECT);
        }
        let p = ground_point(origin, dir);
        let vis = self.ground_visibility(p, &tile.shadow);
        (self.shade_ground(p, vis, &tile.occluders), NO_OBJECT)
    }

    /// A reflected ray: objects, then the ground, then the backdrop.
    fn shade_secondary(&self, origin: Vec3, dir: Vec3, from: u8, all: &[u8]) -> Vec3 {
        if let Some((i, t)) = self.nearest(origin, dir, all, from) {
            return self.shade_object(origin + dir * t, dir, i, all, false);
        }
        if dir.z < -1e-3 {
            let p = ground_point(origin, dir);
            let vis = self.ground_visibility(p, &self.every_object_per_light);
            return self.shade_ground(p, vis, all);
        }
        let (horizon, zenith) = self.look.environment;
        Vec3::splat(horizon + (zenith - horizon) * dir.z.max(0.0))
    }

    /// Soft visibility of each light from ground point `p`.
    fn ground_visibility(&self, p: Vec3, shadow: &[Vec<u8>; LIGHTS]) -> [f32; LIGHTS] {
        let mut out = [1.0; LIGHTS];
        for (l, lamp) in self.look.lights.iter().enumerate() {
            if shadow[l].is_empty() {
                continue;
            }
            let to = lamp.position - p;
            let dist = to.length();
            let ldir = to * (1.0 / dist);
            for &i in &shadow[l] {
                out[l] *= self.prims[i as usize].soft_shadow(p, ldir, dist, lamp.sharpness);
                if out[l] <= 0.0 {
                    break;
                }
            }
        }
        out
    }

    fn shade_ground(&self, p: Vec3, visibility: [f32; LIGHTS], occluders: &[u8]) -> Vec3 {
        let mut light = Vec3::ZERO;
        for (lamp, vis) in self.look.lights.iter().zip(visibility) {
            let to = lamp.position - p;
            let dist = to.length();
            let lambert = (to.z / dist).max(0.0) * falloff(lamp, dist);
            light += lamp.intensity * (lambert * vis);
        }
        let mut open = 1.0f32;
        for &i in occluders {
            let prim = &self.prims[i as usize];
            let to = prim.center - p;
            let d2 = to.dot(to);
            let cos = to.z / d2.sqrt();
            open -= self.look.occlusion * cos.max(0.0) * prim.bound * prim.bound / d2 * 0.5;
        }
        let open = open.max(0.0);
        (light + self.look.ambient * open) * (self.look.ground_albedo * open.sqrt())
    }

    fn shade_object(&self, p: Vec3, dir: Vec3, i: u8, all: &[u8], reflect: bool) -> Vec3 {
        let prim = &self.prims[i as usize];
        let n = prim.normal(p);
        let albedo = self.albedo[i as usize];
        let metal = self.metal[i as usize];
        let (spec_k, spec_exp) = if metal {
            self.look.metal_specular
        } else {
            self.look.rubber_specular
        };
        let view = -dir;
        let mut diffuse = Vec3::ZERO;
        let mut specular = Vec3::ZERO;
        for lamp in &self.look.lights {
            let to = lamp.position - p;
            let dist = to.length();
            let ldir = to * (1.0 / dist);
            let lambert = n.dot(ldir) * falloff(lamp, dist);
            if lambert <= 0.0 {
                continue;
            }
            let mut vis = 1.0;
            for &j in all {
                if j != i {
                    vis *= self.prims[j as usize].soft_shadow(p, ldir, dist, lamp.sharpness);
                }
            }
            if vis <= 0.0 {
                continue;
            }
            diffuse += lamp.intensity * (lambert * vis);
            let half = (ldir + view).normalized();
            specular += lamp.intensity * (n.dot(half).max(0.0).powi(spec_exp) * spec_k * vis);
        }
        // Light from the floor and backdrop reaches the lower half too.
        let ambient = self.look.ambient * (0.75 + 0.25 * n.z);
        if !metal {
            return (diffuse + ambient).mul_elem(albedo) + specular;
        }
        let reflected = if reflect {
            let r = dir.reflect(n);
            self.shade_secondary(p + n * 1e-3, r, i, all)
        } else {
            let (horizon, zenith) = self.look.environment;
            Vec3::splat((horizon + zenith) * 0.5)
        };
        // Coloured metal: the reflection is tinted by the base colour.
        let tint = albedo * 1.2;
        reflected.mul_elem(tint) + (diffuse + ambient).mul_elem(albedo) * self.look.metal_diffuse + specular
    }
}

/// A falloff much softer than inverse-square (CLEVR lights are large area
/// lights and the backdrop bounces light back), normalised to 1 at the scene centre, so that
/// `intensity` means the irradiance there; it darkens the far ground like
/// CLEVR's backdrop.
fn falloff(light: &Light, dist: f32) -> f32 {
    (light.position.length() / dist).sqrt()
}

type GroundGrid = [[Vec3; GRID]; GRID];

/// Bilinear interpolation in a ground grid at grid coordinates (gx, gy).
fn interpolate(grid: &GroundGrid, gx: f32, gy: f32) -> Vec3 {
    let x0 = (gx as usize).min(GRID - 2);
    let y0 = (gy as usize).min(GRID - 2);
    let fx = gx - x0 as f32;
    let fy = gy - y0 as f32;
    let top = grid[y0][x0].lerp(grid[y0][x0 + 1], fx);
    let bottom = grid[y0 + 1][x0].lerp(grid[y0 + 1][x0 + 1], fx);
    top.lerp(bottom, fy)
}

/// Where a ray meets the ground plane (far away for rays that never do).
fn ground_point(origin: Vec3, dir: Vec3) -> Vec3 {
    let t = if dir.z < -1e-6 { -origin.z / dir.z } else { 1e4 };
    origin + dir * t
}

/// Occluders count for ground points within this many bounding radii.
const OCCLUSION_REACH: f32 = 2.5;

/// Screen-space bounding box of a primitive's bounding sphere.
fn screen_box(camera: &Camera, p: &Primitive) -> [f32; 4] {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for corner in 0..8 {
        let s = |bit: i32| if corner & bit != 0 { p.bound } else { -p.bound };
        let q = camera.project(p.center + Vec3::new(s(1), s(2), s(4)));
        b = [b[0].min(q[0]), b[1].min(q[1]), b[2].max(q[0]), b[3].max(q[1])];
    }
    b
}

/// Ground-plane box that contains the shadow (and penumbra) of `p` cast by
/// `light`.
fn shadow_box(light: &Light, p: &Primitive) -> [f32; 4] {
    let mut b = [f32::INFINITY, f32::INFINITY, f32::NEG_INFINITY, f32::NEG_INFINITY];
    for corner in 0..8 {
        // The same inflated sphere that `Primitive::soft_shadow` marches in.
        let r = p.bound * 2.0;
        let s = |bit: i32| if corner & bit != 0 { r } else { -r };
        let q = p.center + Vec3::new(s(1), s(2), s(4));
        let q = Vec3::new(q.x, q.y, q.z.max(0.0));
        // Project the corner from the light onto z = 0.
        let t = light.position.z / (light.position.z - q.z).max(1e-3);
        let g = light.position + (q - light.position) * t;
        b = [b[0].min(g.x), b[1].min(g.y), b[2].max(g.x), b[3].max(g.y)];
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::CameraModel;
    use crate::math::Vec3;

    #[test]
    fn an_image_too_large_to_count_in_u32_is_an_error() {
        let model = CameraModel::clevr();
        // 70000 x 70000 pixels wraps a u32 product (to 605032704, which would pass a
        // bound checked after the multiplication).
        let camera = model.at(Vec3::new(7.0, -7.0, 5.0), 70_000, 70_000);
        assert_eq!(
            Renderer::default().render(&camera, &[]).unwrap_err(),
            RenderError::TooLarge {
                width: 70_000,
                height: 70_000
            }
        );
        assert!(pixel_count(8192, 8193).is_err());
        let small = model.at(Vec3::new(7.0, -7.0, 5.0), 32, 16);
        assert_eq!(
            Renderer::default().render(&small, &[]).unwrap().rgba.len(),
            32 * 16 * 4
        );
    }
}
