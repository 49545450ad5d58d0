//! CLEVR's attribute values, the colour table and the CoGenT conditions.

use crate::shapes::ShapeKind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Color {
    Gray,
    Red,
    Blue,
    Green,
    Brown,
    Purple,
    Cyan,
    Yellow,
}

impl Color {
    pub const ALL: [Color; 8] = [
        Color::Gray,
        Color::Red,
        Color::Blue,
        Color::Green,
        Color::Brown,
        Color::Purple,
        Color::Cyan,
        Color::Yellow,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Color::Gray => "gray",
            Color::Red => "red",
            Color::Blue => "blue",
            Color::Green => "green",
            Color::Brown => "brown",
            Color::Purple => "purple",
            Color::Cyan => "cyan",
            Color::Yellow => "yellow",
        }
    }

    /// sRGB values of CLEVR's colour table (properties.json of the CLEVR
    /// dataset generator).
    pub fn rgb(self) -> [u8; 3] {
        match self {
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

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

pub const SHAPES: [ShapeKind; 3] = [ShapeKind::Cube, ShapeKind::Sphere, ShapeKind::Cylinder];

pub fn shape_name(shape: ShapeKind) -> &'static str {
    match shape {
        ShapeKind::Cube => "cube",
        ShapeKind::Sphere => "sphere",
        ShapeKind::Cylinder => "cylinder",
    }
}

pub fn shape_from_name(name: &str) -> Option<ShapeKind> {
    SHAPES.into_iter().find(|s| shape_name(*s) == name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Material {
    Rubber,
    Metal,
}

impl Material {
    pub const ALL: [Material; 2] = [Material::Rubber, Material::Metal];

    pub fn name(self) -> &'static str {
        match self {
            Material::Rubber => "rubber",
            Material::Metal => "metal",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Size {
    Large,
    Small,
}

impl Size {
    pub const ALL: [Size; 2] = [Size::Large, Size::Small];

    pub fn name(self) -> &'static str {
        match self {
            Size::Large => "large",
            Size::Small => "small",
        }
    }

    /// CLEVR's scale: the sphere radius, and the height of the centre.
    pub fn scale(self) -> f32 {
        match self {
            Size::Large => 0.7,
            Size::Small => 0.35,
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
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

const PALETTE_1: [Color; 4] = [Color::Gray, Color::Blue, Color::Brown, Color::Yellow];
const PALETTE_2: [Color; 4] = [Color::Red, Color::Green, Color::Purple, Color::Cyan];

/// The colours `shape` may take under an optional CoGenT condition.
pub fn allowed_colors(shape: ShapeKind, cogent: Option<Cogent>) -> &'static [Color] {
    match (shape, cogent) {
        (_, None) | (ShapeKind::Sphere, _) => &Color::ALL,
        (ShapeKind::Cube, Some(Cogent::A)) | (ShapeKind::Cylinder, Some(Cogent::B)) => &PALETTE_1,
        (ShapeKind::Cylinder, Some(Cogent::A)) | (ShapeKind::Cube, Some(Cogent::B)) => &PALETTE_2,
    }
}
