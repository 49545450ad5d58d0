//! What the generator adds to CLEVR's attribute values (the clevr crate's
//! enums): the size scales and the CoGenT conditions (the colour table is
//! `clevr::Color::rgb`).

use crate::shapes::ShapeKind;
use clevr::{Color, Shape, Size};

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
