//! Noun phrases that pick out objects: attribute filters on the whole scene
//! or on the objects in a relation to another, uniquely described object
//! (the relate chains). Each phrase knows its object set on a scene, its
//! functional program and its English text.

use super::program::ProgramBuilder;
use super::words::{relation_phrase, Words};
use clevr::{AttributeKind, AttributeValue, Color, Material, Relation, Scene, Shape, Size};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

/// Attribute filters, applied in CLEVR's order: size, colour, material, shape.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    pub size: Option<Size>,
    pub color: Option<Color>,
    pub material: Option<Material>,
    pub shape: Option<Shape>,
}

impl Filters {
    pub fn values(&self) -> Vec<AttributeValue> {
        let mut v = Vec::new();
        v.extend(self.size.map(AttributeValue::Size));
        v.extend(self.color.map(AttributeValue::Color));
        v.extend(self.material.map(AttributeValue::Material));
        v.extend(self.shape.map(AttributeValue::Shape));
        v
    }

    pub fn set(&mut self, value: AttributeValue) {
        match value {
            AttributeValue::Size(s) => self.size = Some(s),
            AttributeValue::Color(c) => self.color = Some(c),
            AttributeValue::Material(m) => self.material = Some(m),
            AttributeValue::Shape(s) => self.shape = Some(s),
        }
    }

    pub fn has(&self, kind: AttributeKind) -> bool {
        self.values().iter().any(|v| v.kind() == kind)
    }

    fn keep(&self, scene: &Scene, set: &[usize]) -> Vec<usize> {
        let values = self.values();
        set.iter()
            .copied()
            .filter(|&i| {
                values
                    .iter()
                    .all(|v| scene.objects[i].attribute(v.kind()) == *v)
            })
            .collect()
    }
}

/// Where a phrase starts from: every object, or the objects in `relation`
/// to the single object `anchor` describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scene,
    Related {
        relation: Relation,
        anchor: Box<Phrase>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Phrase {
    pub base: Base,
    pub filters: Filters,
}

impl Phrase {
    /// The objects the phrase denotes on `scene`; `None` where an anchor is
    /// not exactly one object.
    pub fn objects(&self, scene: &Scene) -> Option<Vec<usize>> {
        let base = match &self.base {
            Base::Scene => (0..scene.objects.len()).collect(),
            Base::Related { relation, anchor } => match anchor.objects(scene)?.as_slice() {
                [single] => scene.relationships.get(*relation)[*single].clone(),
                _ => return None,
            },
        };
        Some(self.filters.keep(scene, &base))
    }

    /// Number of relate hops in the chain.
    pub fn hops(&self) -> usize {
        match &self.base {
            Base::Scene => 0,
            Base::Related { anchor, .. } => 1 + anchor.hops(),
        }
    }

    /// Emits the program nodes computing the object set; returns its node.
    pub fn emit(&self, program: &mut ProgramBuilder) -> usize {
        let mut node = match &self.base {
            Base::Scene => program.scene(),
            Base::Related { relation, anchor } => {
                let a = anchor.emit(program);
                let u = program.node("unique", &[a], None);
                program.node("relate", &[u], Some(relation.as_str()))
            }
        };
        for v in self.filters.values() {
            let name = format!("filter_{}", v.kind().as_str());
            node = program.node(&name, &[node], Some(v.as_str()));
        }
        node
    }

    /// "the small red sphere [that is] left of the …" (one object).
    pub fn singular(&self, words: &mut Words<'_, impl Rng>) -> String {
        let noun = words.noun_phrase(&self.filters, false);
        format!("the {}{}", noun, self.relation_tail(words, false))
    }

    /// "small red spheres [that are] left of the …" (a set).
    pub fn plural(&self, words: &mut Words<'_, impl Rng>) -> String {
        let noun = words.noun_phrase(&self.filters, true);
        format!("{}{}", noun, self.relation_tail(words, true))
    }

    fn relation_tail(&self, words: &mut Words<'_, impl Rng>, plural: bool) -> String {
        match &self.base {
            Base::Scene => String::new(),
            Base::Related { relation, anchor } => {
                let link = if words.coin(0.4) {
                    if plural {
                        " that are"
                    } else {
                        " that is"
                    }
                } else {
                    ""
                };
                let rel = relation_phrase(*relation, words.rng());
                format!("{link} {rel} {}", anchor.singular(words))
            }
        }
    }
}

const ATTRIBUTE_ORDER: [AttributeKind; 4] = [
    AttributeKind::Size,
    AttributeKind::Color,
    AttributeKind::Material,
    AttributeKind::Shape,
];

/// A phrase denoting exactly `target` through `hops` relate steps, never
/// filtering the final object on `hidden` (the attribute a question asks
/// about). `None` when the scene admits no such description.
pub fn describe_unique(
    scene: &Scene,
    target: usize,
    hops: usize,
    hidden: Option<AttributeKind>,
    rng: &mut impl Rng,
) -> Option<Phrase> {
    let base = if hops == 0 {
        Base::Scene
    } else {
        // Anchors that have the target in some relation to them.
        let mut options: Vec<(usize, Relation)> = Vec::new();
        for &relation in Relation::ALL {
            for (anchor, related) in scene.relationships.get(relation).iter().enumerate() {
                if anchor != target && related.contains(&target) {
                    options.push((anchor, relation));
                }
            }
        }
        options.shuffle(rng);
        let (anchor, relation) = options
            .into_iter()
            .take(4)
            .find_map(|(a, r)| describe_unique(scene, a, hops - 1, None, rng).map(|p| (p, r)))?;
        Base::Related {
            relation,
            anchor: Box::new(anchor),
        }
    };
    let mut phrase = Phrase {
        base,
        filters: Filters::default(),
    };
    let mut kinds: Vec<AttributeKind> = ATTRIBUTE_ORDER
        .into_iter()
        .filter(|k| Some(*k) != hidden)
        .collect();
    kinds.shuffle(rng);
    let object = &scene.objects[target];
    for kind in kinds {
        let set = phrase.objects(scene)?;
        // Stop once unique, but sometimes name one more attribute than
        // needed, as people (and CLEVR's templates) do.
        if set == [target] && !rng.random_bool(EXTRA_ATTRIBUTE_P) {
            break;
        }
        phrase.filters.set(object.attribute(kind));
    }
    (phrase.objects(scene)? == [target]).then_some(phrase)
}

const EXTRA_ATTRIBUTE_P: f64 = 0.25;

/// A phrase denoting a set (possibly empty) for counting and existence:
/// up to `hops` relate steps, then zero to three filters taken either from
/// an object of the scene or at random from the vocabulary.
pub fn describe_set(scene: &Scene, hops: usize, rng: &mut impl Rng) -> Option<Phrase> {
    let base = if hops == 0 {
        Base::Scene
    } else {
        let anchor = rng.random_range(0..scene.objects.len());
        let relation = *Relation::ALL.choose(rng)?;
        Base::Related {
            relation,
            anchor: Box::new(describe_unique(scene, anchor, hops - 1, None, rng)?),
        }
    };
    let mut phrase = Phrase {
        base,
        filters: Filters::default(),
    };
    let count = rng.random_range(0..=3);
    let mut kinds = ATTRIBUTE_ORDER.to_vec();
    kinds.shuffle(rng);
    let model = rng.random_range(0..scene.objects.len());
    let from_scene = rng.random_bool(0.6);
    for kind in kinds.into_iter().take(count) {
        let value = if from_scene {
            scene.objects[model].attribute(kind)
        } else {
            random_value(kind, rng)
        };
        phrase.filters.set(value);
    }
    Some(phrase)
}

pub fn random_value(kind: AttributeKind, rng: &mut impl Rng) -> AttributeValue {
    match kind {
        AttributeKind::Color => {
            AttributeValue::Color(Color::ALL[rng.random_range(0..Color::ALL.len())])
        }
        AttributeKind::Shape => {
            AttributeValue::Shape(Shape::ALL[rng.random_range(0..Shape::ALL.len())])
        }
        AttributeKind::Material => {
            AttributeValue::Material(Material::ALL[rng.random_range(0..Material::ALL.len())])
        }
        AttributeKind::Size => {
            AttributeValue::Size(Size::ALL[rng.random_range(0..Size::ALL.len())])
        }
    }
}
