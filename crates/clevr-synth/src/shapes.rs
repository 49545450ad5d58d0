//! The three CLEVR primitives: exact ray intersection for visibility, a
//! bevelled normal (CLEVR's meshes are "SmoothCube" / "SmoothCylinder", whose
//! rounded edges catch highlights) and a signed distance for soft shadows.
//!
//! Everything is computed in the object's local frame: origin at its centre,
//! z up, rotated by the object's `rotation` about z.

use crate::math::Vec3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeKind {
    Cube,
    Sphere,
    Cylinder,
}

/// Radius of the rounded edges, as a fraction of the half extent.
const BEVEL_FRACTION: f32 = 0.12;

/// A primitive placed in the world.
#[derive(Debug, Clone, Copy)]
pub struct Primitive {
    pub kind: ShapeKind,
    pub center: Vec3,
    /// Half extent: sphere radius, cube half side, cylinder radius and
    /// half height.
    pub half: f32,
    cos: f32,
    sin: f32,
    /// Radius of a sphere around `center` that contains the primitive.
    pub bound: f32,
}

impl Primitive {
    pub fn new(kind: ShapeKind, center: Vec3, half: f32, rotation_deg: f32) -> Self {
        let (sin, cos) = rotation_deg.to_radians().sin_cos();
        let bound = match kind {
            ShapeKind::Sphere => half,
            ShapeKind::Cube => half * 3f32.sqrt(),
            ShapeKind::Cylinder => half * 2f32.sqrt(),
        };
        Self {
            kind,
            center,
            half,
            cos,
            sin,
            bound,
        }
    }

    fn local_of(&self, v: Vec3) -> Vec3 {
        Vec3::new(
            self.cos * v.x + self.sin * v.y,
            -self.sin * v.x + self.cos * v.y,
            v.z,
        )
    }

    fn world_of(&self, v: Vec3) -> Vec3 {
        Vec3::new(
            self.cos * v.x - self.sin * v.y,
            self.sin * v.x + self.cos * v.y,
            v.z,
        )
    }

    /// Entry and exit distances of the ray through the bounding sphere.
    pub fn bound_span(&self, origin: Vec3, dir: Vec3) -> Option<(f32, f32)> {
        let oc = origin - self.center;
        let b = oc.dot(dir);
        let c = oc.dot(oc) - self.bound * self.bound;
        let disc = b * b - c;
        if disc < 0.0 {
            return None;
        }
        let s = disc.sqrt();
        Some((-b - s, -b + s))
    }

    /// Nearest hit distance in (t_min, t_max) of a ray with unit `dir`.
    pub fn intersect(&self, origin: Vec3, dir: Vec3, t_min: f32, t_max: f32) -> Option<f32> {
        let (t0, t1) = self.bound_span(origin, dir)?;
        if t1 < t_min || t0 > t_max {
            return None;
        }
        let o = self.local_of(origin - self.center);
        let d = self.local_of(dir);
        let hit = match self.kind {
            ShapeKind::Sphere => Some(t0),
            ShapeKind::Cube => slab(o, d, Vec3::splat(self.half)),
            ShapeKind::Cylinder => cylinder(o, d, self.half),
        }?;
        (hit > t_min && hit < t_max).then_some(hit)
    }

    /// The shading normal at a surface point, with rounded edges.
    pub fn normal(&self, point: Vec3) -> Vec3 {
        let p = self.local_of(point - self.center);
        let bevel = self.half * BEVEL_FRACTION;
        let core = self.half - bevel;
        let n = match self.kind {
            ShapeKind::Sphere => p,
            ShapeKind::Cube => Vec3::new(
                p.x - p.x.clamp(-core, core),
                p.y - p.y.clamp(-core, core),
                p.z - p.z.clamp(-core, core),
            ),
            ShapeKind::Cylinder => {
                let radial = (p.x * p.x + p.y * p.y).sqrt().max(1e-6);
                let excess = (radial - core).max(0.0) / radial;
                Vec3::new(p.x * excess, p.y * excess, p.z - p.z.clamp(-core, core))
            }
        };
        // A point on a face exactly at the core boundary would give a zero
        // vector; fall back on the dominant axis there.
        let n = if n.dot(n) < 1e-12 { dominant_axis(p) } else { n };
        self.world_of(n).normalized()
    }

    /// Signed distance from a world point to the primitive's surface.
    pub fn distance(&self, point: Vec3) -> f32 {
        let p = self.local_of(point - self.center);
        match self.kind {
            ShapeKind::Sphere => p.length() - self.half,
            ShapeKind::Cube => {
                let q = p.abs() - Vec3::splat(self.half);
                q.max_elem(0.0).length() + q.x.max(q.y.max(q.z)).min(0.0)
            }
            ShapeKind::Cylinder => {
                let dx = (p.x * p.x + p.y * p.y).sqrt() - self.half;
                let dz = p.z.abs() - self.half;
                dx.max(dz).min(0.0) + (dx.max(0.0).powi(2) + dz.max(0.0).powi(2)).sqrt()
            }
        }
    }

    /// Soft visibility of a light along a shadow ray (1 lit, 0 blocked):
    /// the narrowest clearance relative to distance travelled. `sharpness` is the inverse
    /// angular size of the light: larger means harder shadows.
    pub fn soft_shadow(&self, origin: Vec3, dir: Vec3, t_max: f32, sharpness: f32) -> f32 {
        let oc = origin - self.center;
        let b = oc.dot(dir);
        if b > self.bound {
            // The object lies behind the shading point.
            return 1.0;
        }
        let closest_t = (-b).max(0.0);
        let miss2 = oc.dot(oc) - closest_t * closest_t;
        let clearance = miss2.max(0.0).sqrt() - self.bound;
        // The ratio clearance / distance is smallest near the closest
        // approach; past the far side of the bound it only grows.
        let reach = closest_t + self.bound;
        if clearance * sharpness >= reach {
            return 1.0;
        }
        let v = if self.kind == ShapeKind::Sphere {
            // Exact clearance of a sphere is the bound clearance.
            sharpness * clearance / closest_t.max(1e-3)
        } else {
            self.sampled_shadow(origin, dir, closest_t, t_max.min(reach), sharpness)
        };
        // Smoothstep so the penumbra edge has no visible kink.
        let v = v.clamp(0.0, 1.0);
        v * v * (3.0 - 2.0 * v)
    }

    /// Blocked rays are found exactly by intersection; otherwise the
    /// narrowest clearance relative to distance travelled is sampled at a
    /// few points around the closest approach (a convex object's clearance
    /// along a line has one minimum, so a handful of samples finds it).
    fn sampled_shadow(&self, origin: Vec3, dir: Vec3, closest_t: f32, end: f32, sharpness: f32) -> f32 {
        if self.intersect(origin, dir, 1e-3, end).is_some() {
            return 0.0;
        }
        let mut visibility = 1.0f32;
        for k in 0..SHADOW_SAMPLES {
            let offset = (k as f32 / (SHADOW_SAMPLES - 1) as f32 * 2.0 - 1.0) * self.bound;
            let t = closest_t + offset;
            if t <= 1e-3 || t > end {
                continue;
            }
            let h = self.distance(origin + dir * t).max(0.0);
            visibility = visibility.min(sharpness * h / t);
        }
        visibility
    }
}

/// Clearance samples per shadow ray and object.
const SHADOW_SAMPLES: usize = 5;

fn dominant_axis(p: Vec3) -> Vec3 {
    let a = p.abs();
    if a.x >= a.y && a.x >= a.z {
        Vec3::new(p.x.signum(), 0.0, 0.0)
    } else if a.y >= a.z {
        Vec3::new(0.0, p.y.signum(), 0.0)
    } else {
        Vec3::new(0.0, 0.0, p.z.signum())
    }
}

/// Ray against the axis-aligned box [-half, half]: entry distance.
fn slab(o: Vec3, d: Vec3, half: Vec3) -> Option<f32> {
    let inv = Vec3::new(1.0 / d.x, 1.0 / d.y, 1.0 / d.z);
    let n = Vec3::new(o.x * inv.x, o.y * inv.y, o.z * inv.z);
    let k = Vec3::new(half.x * inv.x.abs(), half.y * inv.y.abs(), half.z * inv.z.abs());
    let t_near = (-n.x - k.x).max((-n.y - k.y).max(-n.z - k.z));
    let t_far = (-n.x + k.x).min((-n.y + k.y).min(-n.z + k.z));
    (t_near <= t_far && t_far > 0.0).then_some(t_near)
}

/// Ray against the capped cylinder of radius and half height `half` about z.
fn cylinder(o: Vec3, d: Vec3, half: f32) -> Option<f32> {
    let a = d.x * d.x + d.y * d.y;
    let b = o.x * d.x + o.y * d.y;
    let c = o.x * o.x + o.y * o.y - half * half;
    // Side: the infinite cylinder's span, clipped to the caps' slab.
    let (mut t_near, mut t_far) = if a > 1e-9 {
        let disc = b * b - a * c;
        if disc < 0.0 {
            return None;
        }
        let s = disc.sqrt();
        ((-b - s) / a, (-b + s) / a)
    } else if c > 0.0 {
        return None;
    } else {
        (f32::NEG_INFINITY, f32::INFINITY)
    };
    if d.z.abs() > 1e-9 {
        let t1 = (-half - o.z) / d.z;
        let t2 = (half - o.z) / d.z;
        t_near = t_near.max(t1.min(t2));
        t_far = t_far.min(t1.max(t2));
    } else if o.z.abs() > half {
        return None;
    }
    (t_near <= t_far && t_far > 0.0).then_some(t_near)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rays_hit_each_shape_at_its_near_surface() {
        let down = Vec3::new(0.0, 0.0, -1.0);
        let origin = Vec3::new(0.1, 0.1, 5.0);
        for kind in [ShapeKind::Cube, ShapeKind::Sphere, ShapeKind::Cylinder] {
            let p = Primitive::new(kind, Vec3::new(0.0, 0.0, 0.7), 0.7, 30.0);
            let t = p.intersect(origin, down, 0.0, 100.0).expect("hit");
            let hit = origin + down * t;
            assert!(p.distance(hit).abs() < 0.02, "{kind:?}: {}", p.distance(hit));
            assert!(p.normal(hit).z > 0.9, "{kind:?} top normal points up");
        }
    }

    #[test]
    fn rays_passing_beside_miss_and_shadows_soften_with_clearance() {
        let p = Primitive::new(ShapeKind::Cube, Vec3::new(0.0, 0.0, 0.7), 0.7, 45.0);
        let dir = Vec3::new(1.0, 0.0, 0.0);
        assert!(p.intersect(Vec3::new(-5.0, 1.5, 0.7), dir, 0.0, 100.0).is_none());
        let blocked = p.soft_shadow(Vec3::new(-5.0, 0.0, 0.5), dir, 20.0, 8.0);
        let grazing = p.soft_shadow(Vec3::new(-5.0, 1.1, 0.5), dir, 20.0, 8.0);
        let clear = p.soft_shadow(Vec3::new(-5.0, 3.0, 0.5), dir, 20.0, 8.0);
        assert_eq!(blocked, 0.0);
        assert!(grazing > 0.0 && grazing < 1.0, "penumbra {grazing}");
        assert_eq!(clear, 1.0);
    }
}
