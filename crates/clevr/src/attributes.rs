//! The closed CLEVR attribute vocabulary: shapes, colours, materials, sizes and
//! spatial relations, spelled exactly as in the released JSON.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A value string that is not one of the known names of an attribute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: String,
}

macro_rules! clevr_enum {
    ($(#[$doc:meta])* $name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order of the CLEVR generator's properties.json.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The name used in the JSON files and in answers.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownValue {
                        kind: $kind,
                        value: s.to_string(),
                        expected: [$($text),+].join(", "),
                    }),
                }
            }
        }
    };
}

clevr_enum!(
    /// Object shape.
    Shape, "shape", { Cube => "cube", Sphere => "sphere", Cylinder => "cylinder" }
);
clevr_enum!(
    /// Object colour.
    Color, "color", {
        Gray => "gray", Red => "red", Blue => "blue", Green => "green",
        Brown => "brown", Purple => "purple", Cyan => "cyan", Yellow => "yellow",
    }
);
clevr_enum!(
    /// Object material.
    Material, "material", { Rubber => "rubber", Metal => "metal" }
);
clevr_enum!(
    /// Object size.
    Size, "size", { Large => "large", Small => "small" }
);
clevr_enum!(
    /// Spatial relation used by `relate` and by a scene's `relationships`.
    Relation, "relation", { Left => "left", Right => "right", Front => "front", Behind => "behind" }
);

/// Which attribute a `filter_*`, `query_*`, `same_*` or `equal_*` function is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttributeKind {
    Color,
    Shape,
    Material,
    Size,
}

impl AttributeKind {
    pub const ALL: [AttributeKind; 4] = [
        AttributeKind::Color,
        AttributeKind::Shape,
        AttributeKind::Material,
        AttributeKind::Size,
    ];

    /// The suffix in function names (`filter_color`, `query_size`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            AttributeKind::Color => "color",
            AttributeKind::Shape => "shape",
            AttributeKind::Material => "material",
            AttributeKind::Size => "size",
        }
    }

    /// Parses a value of this attribute (`"red"` for colour, …).
    pub fn parse_value(self, s: &str) -> Result<AttributeValue, UnknownValue> {
        Ok(match self {
            AttributeKind::Color => AttributeValue::Color(s.parse()?),
            AttributeKind::Shape => AttributeValue::Shape(s.parse()?),
            AttributeKind::Material => AttributeValue::Material(s.parse()?),
            AttributeKind::Size => AttributeValue::Size(s.parse()?),
        })
    }
}

impl FromStr for AttributeKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, UnknownValue> {
        AttributeKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownValue {
                kind: "attribute",
                value: s.to_string(),
                expected: "color, shape, material, size".to_string(),
            })
    }
}

/// One value of one attribute, e.g. `Color(Red)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AttributeValue {
    Color(Color),
    Shape(Shape),
    Material(Material),
    Size(Size),
}

impl AttributeValue {
    pub fn kind(self) -> AttributeKind {
        match self {
            AttributeValue::Color(_) => AttributeKind::Color,
            AttributeValue::Shape(_) => AttributeKind::Shape,
            AttributeValue::Material(_) => AttributeKind::Material,
            AttributeValue::Size(_) => AttributeKind::Size,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AttributeValue::Color(v) => v.as_str(),
            AttributeValue::Shape(v) => v.as_str(),
            AttributeValue::Material(v) => v.as_str(),
            AttributeValue::Size(v) => v.as_str(),
        }
    }
}

impl fmt::Display for AttributeValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Color {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str() {
        for c in Color::ALL {
            assert_eq!(c.as_str().parse::<Color>().unwrap(), *c);
        }
        for k in AttributeKind::ALL {
            assert_eq!(k.as_str().parse::<AttributeKind>().unwrap(), k);
        }
        assert_eq!(Color::ALL.len(), 8);
        assert_eq!(Shape::ALL.len() + Material::ALL.len() + Size::ALL.len(), 7);
    }

    #[test]
    fn unknown_value_lists_the_expected_names() {
        let err = "pink".parse::<Color>().unwrap_err();
        assert_eq!(err.kind, "color");
        assert!(err.to_string().contains("gray, red, blue"), "{err}");
    }

    #[test]
    fn serde_uses_the_json_spelling() {
        assert_eq!(serde_json::to_string(&Shape::Cylinder).unwrap(), "\"cylinder\"");
        let m: Material = serde_json::from_str("\"metal\"").unwrap();
        assert_eq!(m, Material::Metal);
    }
}
