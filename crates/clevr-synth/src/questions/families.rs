//! The project's question families (CLEVR-style templates written here):
//! each turns a scene into a question text and its functional program, or
//! declines when the scene cannot support an unambiguous question.

use super::program::ProgramBuilder;
use super::reference::{describe_set, describe_unique, Base, Filters, Phrase};
use super::words::{relation_phrase, sentence, Words};
use clevr::{AttributeKind, ProgramNode, Relation, Scene};
use rand::seq::IndexedRandom;
use rand::Rng;

/// A question before its answer is computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub family: usize,
    pub text: String,
    pub program: Vec<ProgramNode>,
}

/// The families, indexed by `question_family_index`.
pub const FAMILIES: [&str; 18] = [
    "exist",
    "count",
    "count_or",
    "compare_more",
    "compare_fewer",
    "compare_equal",
    "query_color",
    "query_size",
    "query_shape",
    "query_material",
    "equal_color",
    "equal_size",
    "equal_shape",
    "equal_material",
    "count_same",
    "exist_same",
    "query_same",
    "exist_and",
];

/// Relate hops of a reference: 0 to 3, weighted towards short chains as in
/// CLEVR (most of its templates use zero or one relation).
fn hops(rng: &mut impl Rng) -> usize {
    *[0, 0, 0, 1, 1, 1, 2, 2, 3].choose(rng).unwrap_or(&0)
}

fn kind_of(family: usize) -> AttributeKind {
    [
        AttributeKind::Color,
        AttributeKind::Size,
        AttributeKind::Shape,
        AttributeKind::Material,
    ][family % 4]
}

fn random_kind(rng: &mut impl Rng) -> AttributeKind {
    AttributeKind::ALL[rng.random_range(0..AttributeKind::ALL.len())]
}

fn random_object(scene: &Scene, rng: &mut impl Rng) -> usize {
    rng.random_range(0..scene.objects.len())
}

/// Tries to instantiate `family` on `scene`.
pub fn generate(family: usize, scene: &Scene, rng: &mut impl Rng) -> Option<Candidate> {
    let mut p = ProgramBuilder::default();
    let text = match FAMILIES[family] {
        "exist" => {
            let s = describe_set(scene, hops(rng), rng)?;
            let set = s.emit(&mut p);
            p.node("exist", &[set], None);
            let mut w = Words::new(rng);
            if w.coin(0.5) {
                format!("are there any {}", s.plural(&mut w))
            } else {
                format!("is there {}", indefinite(&s, &mut w))
            }
        }
        "count" => {
            let s = describe_set(scene, hops(rng), rng)?;
            let set = s.emit(&mut p);
            p.node("count", &[set], None);
            let mut w = Words::new(rng);
            let opening = w.pick(&["how many", "what number of"]);
            let ending = w.pick(&["are there", "are visible", "are in the scene"]);
            format!("{opening} {} {ending}", s.plural(&mut w))
        }
        "count_or" => {
            let (a, b) = two_distinct_sets(scene, 0, rng)?;
            let x = a.emit(&mut p);
            let y = b.emit(&mut p);
            let u = p.node("union", &[x, y], None);
            p.node("count", &[u], None);
            let mut w = Words::new(rng);
            let opening = w.pick(&["how many", "what number of"]);
            format!(
                "{opening} things are either {} or {}",
                a.plural(&mut w),
                b.plural(&mut w)
            )
        }
        "compare_more" | "compare_fewer" | "compare_equal" => {
            let (a, b) = two_distinct_sets(scene, hops(rng).min(1), rng)?;
            let x = a.emit(&mut p);
            let cx = p.node("count", &[x], None);
            let y = b.emit(&mut p);
            let cy = p.node("count", &[y], None);
            let mut w = Words::new(rng);
            let (sa, sb) = (a.plural(&mut w), b.plural(&mut w));
            match FAMILIES[family] {
                "compare_more" => {
                    p.node("greater_than", &[cx, cy], None);
                    format!("are there more {sa} than {sb}")
                }
                "compare_fewer" => {
                    p.node("less_than", &[cx, cy], None);
                    format!("are there fewer {sa} than {sb}")
                }
                _ => {
                    p.node("equal_integer", &[cx, cy], None);
                    if w.coin(0.5) {
                        format!("are there the same number of {sa} and {sb}")
                    } else {
                        format!("is the number of {sa} the same as the number of {sb}")
                    }
                }
            }
        }
        "query_color" | "query_size" | "query_shape" | "query_material" => {
            let kind = kind_of(family - 6);
            let target = random_object(scene, rng);
            let u = describe_unique(scene, target, hops(rng), Some(kind), rng)?;
            let node = u.emit(&mut p);
            let one = p.node("unique", &[node], None);
            p.node(&format!("query_{}", kind.as_str()), &[one], None);
            let mut w = Words::new(rng);
            let it = u.singular(&mut w);
            query_text(kind, &it, &mut w)
        }
        "equal_color" | "equal_size" | "equal_shape" | "equal_material" => {
            let kind = kind_of(family - 10);
            let first = random_object(scene, rng);
            let second = random_object(scene, rng);
            if first == second {
                return None;
            }
            let a = describe_unique(scene, first, hops(rng).min(1), Some(kind), rng)?;
            let b = describe_unique(scene, second, hops(rng).min(1), Some(kind), rng)?;
            let query = format!("query_{}", kind.as_str());
            let x = a.emit(&mut p);
            let ux = p.node("unique", &[x], None);
            let qx = p.node(&query, &[ux], None);
            let y = b.emit(&mut p);
            let uy = p.node("unique", &[y], None);
            let qy = p.node(&query, &[uy], None);
            p.node(&format!("equal_{}", kind.as_str()), &[qx, qy], None);
            let mut w = Words::new(rng);
            let (sa, sb) = (a.singular(&mut w), b.singular(&mut w));
            let attr = w.attribute_noun(kind);
            match w.rng().random_range(0..3) {
                0 => format!("does {sa} have the same {attr} as {sb}"),
                1 => format!("is {sa} the same {attr} as {sb}"),
                _ => format!("do {sa} and {sb} have the same {attr}"),
            }
        }
        "count_same" | "exist_same" | "query_same" => {
            let kind = random_kind(rng);
            let target = random_object(scene, rng);
            let u = describe_unique(scene, target, hops(rng).min(2), Some(kind), rng)?;
            let node = u.emit(&mut p);
            let one = p.node("unique", &[node], None);
            let same = p.node(&format!("same_{}", kind.as_str()), &[one], None);
            let mut w = Words::new(rng);
            let it = u.singular(&mut w);
            let attr = w.attribute_noun(kind);
            match FAMILIES[family] {
                "count_same" => {
                    p.node("count", &[same], None);
                    let opening = w.pick(&["how many other", "what number of other"]);
                    let noun = w.pick(&["things", "objects"]);
                    let verb = w.pick(&["have", "are of"]);
                    format!("{opening} {noun} {verb} the same {attr} as {it}")
                }
                "exist_same" => {
                    p.node("exist", &[same], None);
                    if w.coin(0.5) {
                        format!("are there any other things that have the same {attr} as {it}")
                    } else {
                        format!("is there anything else that is the same {attr} as {it}")
                    }
                }
                _ => {
                    let asked = AttributeKind::ALL
                        .into_iter()
                        .filter(|k| *k != kind)
                        .collect::<Vec<_>>()
                        .choose(w.rng())
                        .copied()?;
                    let other = p.node("unique", &[same], None);
                    p.node(&format!("query_{}", asked.as_str()), &[other], None);
                    let asked_noun = w.attribute_noun(asked);
                    let noun = w.pick(&["thing", "object"]);
                    format!("what {asked_noun} is the other {noun} that has the same {attr} as {it}")
                }
            }
        }
        "exist_and" => {
            let first = random_object(scene, rng);
            let second = random_object(scene, rng);
            if first == second {
                return None;
            }
            let a = describe_unique(scene, first, hops(rng).min(1), None, rng)?;
            let b = describe_unique(scene, second, hops(rng).min(1), None, rng)?;
            let ra = *Relation::ALL.choose(rng)?;
            let rb = *Relation::ALL.choose(rng)?;
            let x = a.emit(&mut p);
            let ux = p.node("unique", &[x], None);
            let rx = p.node("relate", &[ux], Some(ra.as_str()));
            let y = b.emit(&mut p);
            let uy = p.node("unique", &[y], None);
            let ry = p.node("relate", &[uy], Some(rb.as_str()));
            let mut node = p.node("intersect", &[rx, ry], None);
            let filter = describe_set(scene, 0, rng)?.filters;
            for v in filter.values() {
                node = p.node(
                    &format!("filter_{}", v.kind().as_str()),
                    &[node],
                    Some(v.as_str()),
                );
            }
            p.node("exist", &[node], None);
            let mut w = Words::new(rng);
            let noun = w.noun_phrase(&filter, false);
            let (sa, sb) = (a.singular(&mut w), b.singular(&mut w));
            let (pa, pb) = (relation_phrase(ra, w.rng()), relation_phrase(rb, w.rng()));
            format!(
                "is there {} {noun} that is {pa} {sa} and {pb} {sb}",
                article(&noun)
            )
        }
        other => unreachable!("family {other} has no template"),
    };
    Some(Candidate {
        family,
        text: sentence(&text),
        program: p.finish(),
    })
}

fn query_text(kind: AttributeKind, it: &str, w: &mut Words<'_, impl Rng>) -> String {
    let attr = w.attribute_noun(kind);
    match (kind, w.rng().random_range(0..3)) {
        (_, 0) => format!("what {attr} is {it}"),
        (AttributeKind::Material, 1) => format!("what is {it} made of"),
        (AttributeKind::Size, 1) => format!("how big is {it}"),
        (_, 1) => format!("what is the {attr} of {it}"),
        _ => {
            let mut capital = it.to_string();
            capital.replace_range(0..1, "T");
            format!("{capital} has what {attr}")
        }
    }
}

/// "a red cube that is left of the …" / "an object …".
fn indefinite(phrase: &Phrase, w: &mut Words<'_, impl Rng>) -> String {
    let the = phrase.singular(w);
    let rest = the.strip_prefix("the ").unwrap_or(&the);
    format!("{} {rest}", article(rest))
}

fn article(noun: &str) -> &'static str {
    if noun.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// Two set phrases with different filters (a comparison of a set with
/// itself is degenerate), at most `hops` relate steps each.
fn two_distinct_sets(scene: &Scene, hops: usize, rng: &mut impl Rng) -> Option<(Phrase, Phrase)> {
    let a = describe_set(scene, hops, rng)?;
    let b = describe_set(scene, 0, rng)?;
    let informative = |p: &Phrase| p.filters != Filters::default() || p.base != Base::Scene;
    (a != b && informative(&a) && informative(&b)).then_some((a, b))
}
