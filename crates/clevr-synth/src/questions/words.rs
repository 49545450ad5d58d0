//! The English of the generated questions, with synonyms so that the same
//! program is phrased several ways (as CLEVR's templates do).

use super::reference::Filters;
use clevr::{AttributeKind, Material, Relation, Shape, Size};
use rand::seq::IndexedRandom;
use rand::Rng;

/// A phrase builder drawing synonyms from `rng`.
pub struct Words<'r, R: Rng> {
    rng: &'r mut R,
}

impl<'r, R: Rng> Words<'r, R> {
    pub fn new(rng: &'r mut R) -> Self {
        Self { rng }
    }

    pub fn rng(&mut self) -> &mut R {
        self.rng
    }

    pub fn coin(&mut self, p: f64) -> bool {
        self.rng.random_bool(p)
    }

    pub fn pick(&mut self, options: &[&'static str]) -> &'static str {
        options.choose(self.rng).copied().unwrap_or_default()
    }

    /// "large red metal cube(s)" / "thing(s)".
    pub fn noun_phrase(&mut self, filters: &Filters, plural: bool) -> String {
        let mut words: Vec<&str> = Vec::new();
        if let Some(size) = filters.size {
            words.push(match size {
                Size::Large => self.pick(&["large", "big"]),
                Size::Small => self.pick(&["small", "tiny"]),
            });
        }
        if let Some(color) = filters.color {
            words.push(color.as_str());
        }
        if let Some(material) = filters.material {
            words.push(match material {
                Material::Metal => self.pick(&["metal", "metallic", "shiny"]),
                Material::Rubber => self.pick(&["rubber", "matte"]),
            });
        }
        let noun = match (filters.shape, plural) {
            (Some(Shape::Cube), false) => self.pick(&["cube", "block"]),
            (Some(Shape::Cube), true) => self.pick(&["cubes", "blocks"]),
            (Some(Shape::Sphere), false) => self.pick(&["sphere", "ball"]),
            (Some(Shape::Sphere), true) => self.pick(&["spheres", "balls"]),
            (Some(Shape::Cylinder), false) => "cylinder",
            (Some(Shape::Cylinder), true) => "cylinders",
            (None, false) => self.pick(&["thing", "object"]),
            (None, true) => self.pick(&["things", "objects"]),
        };
        words.push(noun);
        words.join(" ")
    }

    /// The attribute's name in a question ("color", "size", …).
    pub fn attribute_noun(&mut self, kind: AttributeKind) -> &'static str {
        match kind {
            AttributeKind::Color => "color",
            AttributeKind::Size => "size",
            AttributeKind::Shape => "shape",
            AttributeKind::Material => self.pick(&["material", "material type"]),
        }
    }
}

/// "left of", "to the left of", "in front of", …
pub fn relation_phrase(relation: Relation, rng: &mut impl Rng) -> &'static str {
    let options: &[&str] = match relation {
        Relation::Left => &["left of", "to the left of", "on the left side of"],
        Relation::Right => &["right of", "to the right of", "on the right side of"],
        Relation::Front => &["in front of"],
        Relation::Behind => &["behind"],
    };
    options.choose(rng).copied().unwrap_or_default()
}

/// Upper-cases the first letter and ends with a question mark.
pub fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => format!("{}{}?", first.to_uppercase(), chars.as_str()),
        None => String::new(),
    }
}
