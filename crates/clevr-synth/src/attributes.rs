//! What the generator adds to CLEVR's attribute values (the clevr crate's
//! enums): the colour table, the size scales, and the CoGenT conditions.

use crate::shapes::ShapeKind;
use clevr::{Color, Shape, Size};

/// sRGB values of CLEVR's colour table (properties.json of the CLEVR
/// dataset generator).
pub fn color_rgb(color: Color) -> [u8; 3] {
    match color {
        Color::Gray => [87, 87, 87],
        Color::Red => [173, 35, 35],
        Color::Blue => [42, 75, 215],
        Color::Green => [29, 105, 20],
        Color::Brown => [129, 74, 25],
        Color::Purple => [129, 38, 192],
        Color::Cyan => [41, 208, 208],
        Color::Yellow => [255, 238, 51],
    }
}

/// CLEVR's size scale: the sphere radius, and the height of the centre.
pub fn size_scale(size: Size) -> f32 {
    match size {
        Size::Large => 0.7,
        Size::Small => 0.35,
    }
}

pub fn shape_kind(shape: Shape) -> ShapeKind {
    match shape {
        Shape::Cube => ShapeKind::Cube,
        Shape::Sphere => ShapeKind::Sphere,
        Shape::Cylinder => ShapeKind::Cylinder,
    }
}

/// CLEVR-CoGenT: which colours cubes and cylinders may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cogent {
    /// Cubes gray/blue/brown/yellow, cylinders red/green/purple/cyan.
    A,
    /// The two palettes swapped.
    B,
}

impl Cogent {
    /// The letter CoGenT appends to split names (`trainA`, `valB`).
    pub fn letter(self) -> &'static str {
        match self {
            Cogent::A => "A",
            Cogent::B => "B",
        }
    }
}

const PALETTE_1: [Color; 4] = [Color::Gray, Color::Blue, Color::Brown, Color::Yellow];
const PALETTE_2: [Color; 4] = [Color::Red, Color::Green, Color::Purple, Color::Cyan];

/// The colours `shape` may take under an optional CoGenT condition.
pub fn allowed_colors(shape: Shape, cogent: Option<Cogent>) -> &'static [Color] {
    match (shape, cogent) {
        (_, None) | (Shape::Sphere, _) => Color::ALL,
        (Shape::Cube, Some(Cogent::A)) | (Shape::Cylinder, Some(Cogent::B)) => &PALETTE_1,
        (Shape::Cylinder, Some(Cogent::A)) | (Shape::Cube, Some(Cogent::B)) => &PALETTE_2,
    }
}
