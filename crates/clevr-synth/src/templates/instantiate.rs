//! Filling in one template on one scene: a depth-first search over slot values, by the
//! official generator's rules.
//!
//! The program is built node by node and every new node runs on the scene at once, so a
//! `unique` over zero or several objects or a broken constraint cuts the branch there.
//! Composite nodes (`filter_unique`, `relate_filter_count`, …) branch over the attribute
//! combinations that make sense in this scene, so the search rarely meets a dead end. A
//! finished program is kept if its answer passes the answer balance and, when the template
//! has a bare `relate`, if every relation matters to the answer; the clevr crate's
//! executor then answers it again, and only its answer is written.
//!
//! The search visits thousands of partial programs per scene, so it keeps them small:
//! object sets are bit masks and a partial program is a list of parsed functions. Scenes
//! of more than 64 objects (CLEVR has at most 10) get no questions.

use super::format::{LoadedTemplate, Rule, SlotKind, TemplateSet};
use clevr::executor::Function;
use clevr::{AttributeKind, AttributeValue, ProgramNode, Relation, Scene};
use rand::seq::SliceRandom;
use rand::Rng;
use std::collections::BTreeMap;

/// The attributes of a filter combination, in the order of the composite nodes' slots.
const FILTER_ORDER: [AttributeKind; 4] = [
    AttributeKind::Size,
    AttributeKind::Color,
    AttributeKind::Material,
    AttributeKind::Shape,
];

/// Among the relate options whose relation changes nothing (every object of the filter is
/// related anyway), the share the official generator keeps.
const TRIVIAL_RELATE_SHARE: f64 = 0.1;

/// A filter combination: an optional value for each of size, colour, material, shape.
type FilterKey = [Option<AttributeValue>; 4];

/// A question found by the search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub program: Vec<ProgramNode>,
    /// Slot name and value, in the order the search filled them (`""` or `"thing"` for an
    /// empty attribute slot).
    pub filled: Vec<(String, String)>,
    pub answer: String,
}

/// Answer counts of one template, for the answer balance.
#[derive(Debug, Clone, Default)]
pub struct AnswerCounts(BTreeMap<String, usize>);

impl AnswerCounts {
    pub fn new(answers: &[String]) -> Self {
        AnswerCounts(answers.iter().map(|a| (a.clone(), 0)).collect())
    }

    /// The official generator's rejection rule: an answer already more than 10% ahead of
    /// the second most frequent, or more than five times the median (at least 5), waits.
    fn accepts(&self, answer: &str) -> bool {
        let current = self.0.get(answer).copied().unwrap_or(0) as f64;
        let mut sorted: Vec<usize> = self.0.values().copied().collect();
        sorted.sort_unstable();
        let second = sorted.len().checked_sub(2).map_or(0, |i| sorted[i]) as f64;
        let median = sorted.get(sorted.len() / 2).copied().unwrap_or(0).max(5) as f64;
        !(current > 1.1 * second || current > 5.0 * median)
    }

    fn record(&mut self, answer: &str) {
        *self.0.entry(answer.to_string()).or_insert(0) += 1;
    }
}

/// What one scene offers the search, computed once per scene.
pub struct SceneIndex<'a> {
    scene: &'a Scene,
    /// Every filter combination that some object of the scene matches, with the objects it
    /// selects, in a fixed order.
    filters: Vec<(FilterKey, u64)>,
    /// `related[relation as index][object]`: the objects in that relation to the object.
    related: Vec<Vec<u64>>,
}

impl<'a> SceneIndex<'a> {
    /// `None` for a scene too large for the search's object masks.
    pub fn new(scene: &'a Scene) -> Option<Self> {
        if scene.objects.len() > 64 {
            return None;
        }
        let mut filters: BTreeMap<FilterKey, u64> = BTreeMap::new();
        for (index, object) in scene.objects.iter().enumerate() {
            let values = FILTER_ORDER.map(|kind| object.attribute(kind));
            for mask in 0..16u8 {
                let key: FilterKey = std::array::from_fn(|k| (mask >> k & 1 == 1).then_some(values[k]));
                *filters.entry(key).or_default() |= 1 << index;
            }
        }
        let related = Relation::ALL
            .iter()
            .map(|&relation| {
                let lists = scene.relationships.get(relation);
                (0..scene.objects.len())
                    .map(|o| lists.get(o).map_or(0, |list| mask_of(list)))
                    .collect()
            })
            .collect();
        Some(SceneIndex {
            scene,
            filters: filters.into_iter().collect(),
            related,
        })
    }

    fn related(&self, relation: Relation, object: usize) -> u64 {
        let r = Relation::ALL.iter().position(|&x| x == relation).unwrap_or(0);
        self.related[r].get(object).copied().unwrap_or(0)
    }

    /// What `function` returns on `inputs`; `None` where it cannot run (a `unique` over
    /// zero or several objects, or inputs of the wrong kind).
    fn run(&self, function: Function, inputs: [Output; 2]) -> Option<Output> {
        let objects = &self.scene.objects;
        let attribute = |o: u8, kind: AttributeKind| objects[usize::from(o)].attribute(kind);
        let all = if objects.len() == 64 {
            u64::MAX
        } else {
            (1u64 << objects.len()) - 1
        };
        Some(match (function, inputs[0], inputs[1]) {
            (Function::Scene, ..) => Output::Set(all),
            (Function::Filter(value), Output::Set(set), _) => {
                let matching = (0..objects.len())
                    .filter(|&o| objects[o].attribute(value.kind()) == value)
                    .fold(0u64, |m, o| m | 1 << o);
                Output::Set(set & matching)
            }
            (Function::Unique, Output::Set(set), _) if set.count_ones() == 1 => {
                Output::Object(set.trailing_zeros() as u8)
            }
            (Function::Relate(relation), Output::Object(o), _) => {
                Output::Set(self.related(relation, usize::from(o)))
            }
            (Function::Union, Output::Set(a), Output::Set(b)) => Output::Set(a | b),
            (Function::Intersect, Output::Set(a), Output::Set(b)) => Output::Set(a & b),
            (Function::Count, Output::Set(set), _) => Output::Count(set.count_ones()),
            (Function::Exist, Output::Set(set), _) => Output::Bool(set != 0),
            (Function::Query(kind), Output::Object(o), _) => Output::Attribute(attribute(o, kind)),
            (Function::Same(kind), Output::Object(o), _) => {
                let target = attribute(o, kind);
                let same = (0..objects.len())
                    .filter(|&j| j != usize::from(o) && objects[j].attribute(kind) == target)
                    .fold(0u64, |m, j| m | 1 << j);
                Output::Set(same)
            }
            (Function::EqualInteger, Output::Count(a), Output::Count(b)) => Output::Bool(a == b),
            (Function::LessThan, Output::Count(a), Output::Count(b)) => Output::Bool(a < b),
            (Function::GreaterThan, Output::Count(a), Output::Count(b)) => Output::Bool(a > b),
            (Function::Equal(_), Output::Attribute(a), Output::Attribute(b)) => Output::Bool(a == b),
            _ => return None,
        })
    }
}

fn mask_of(objects: &[usize]) -> u64 {
    objects.iter().filter(|&&o| o < 64).fold(0, |m, &o| m | 1 << o)
}

/// What a node returns, small enough to copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Set(u64),
    Object(u8),
    Count(u32),
    Bool(bool),
    Attribute(AttributeValue),
    /// No input (the second input of a one-input function).
    None,
}

/// One node of a partial program.
#[derive(Debug, Clone, Copy)]
struct Step {
    function: Function,
    inputs: [usize; 2],
    arity: usize,
}

/// A slot's value as the search fills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotValue {
    /// `None`: left empty.
    Attribute(AttributeKind, Option<AttributeValue>),
    Relation(Relation),
}

impl SlotValue {
    /// As the sentence spells it before synonyms: an empty shape is a "thing".
    fn text(self) -> &'static str {
        match self {
            SlotValue::Attribute(_, Some(value)) => value.as_str(),
            SlotValue::Attribute(AttributeKind::Shape, None) => "thing",
            SlotValue::Attribute(_, None) => "",
            SlotValue::Relation(relation) => relation.as_str(),
        }
    }
}

/// One point of the search: a partial program, what its nodes return, and the slots
/// filled so far (by index into the template's params).
#[derive(Clone)]
struct State {
    steps: Vec<Step>,
    outputs: Vec<Output>,
    filled: Vec<(usize, SlotValue)>,
    /// Template node index -> program node index.
    input_map: Vec<usize>,
}

impl State {
    /// Appends a node and runs it; `false` when it cannot run, which ends this branch.
    fn push(&mut self, index: &SceneIndex, function: Function, inputs: &[usize]) -> bool {
        let mut step = Step {
            function,
            inputs: [0; 2],
            arity: inputs.len().min(2),
        };
        step.inputs[..step.arity].copy_from_slice(&inputs[..step.arity]);
        let mut values = [Output::None; 2];
        for (value, &input) in values.iter_mut().zip(&step.inputs[..step.arity]) {
            *value = self.outputs[input];
        }
        match index.run(function, values) {
            Some(output) => {
                self.steps.push(step);
                self.outputs.push(output);
                true
            }
            None => false,
        }
    }

    fn value(&self, slot: usize) -> Option<SlotValue> {
        self.filled
            .iter()
            .rev()
            .find(|(s, _)| *s == slot)
            .map(|&(_, v)| v)
    }
}

/// Fills in `loaded` on the scene, or `None` when no filling passes the rules.
/// `max_states` bounds the search on scenes where a template cannot fit.
pub fn instantiate(
    set: &TemplateSet,
    loaded: &LoadedTemplate,
    index: &SceneIndex,
    counts: &mut AnswerCounts,
    max_states: usize,
    rng: &mut impl Rng,
) -> Option<Instance> {
    let template = &loaded.template;
    let mut first = State {
        steps: Vec::new(),
        outputs: Vec::new(),
        filled: Vec::new(),
        input_map: vec![0],
    };
    let scene_function = plain_function(&template.nodes[0].function, &[])?;
    if !first.push(index, scene_function, &[]) {
        return None;
    }
    let has_relate = template.nodes.iter().any(|n| n.function == "relate");
    let mut stack = vec![first];
    let mut visited = 0;
    while let Some(state) = stack.pop() {
        visited += 1;
        if visited > max_states {
            return None;
        }
        if !satisfies_rules(loaded, &state) {
            continue;
        }
        let next = state.input_map.len();
        if next == template.nodes.len() {
            let Some(answer) = answer_text(*state.outputs.last()?) else {
                continue;
            };
            if !counts.accepts(&answer) {
                continue;
            }
            if has_relate && is_degenerate(&state, index) {
                continue;
            }
            let program = program_nodes(&state.steps);
            // The executor is the judge of every answer written.
            match clevr::execute(&program, index.scene) {
                Ok(checked) if checked.to_string() == answer => {}
                _ => continue,
            }
            counts.record(&answer);
            let filled = state
                .filled
                .iter()
                .map(|&(slot, value)| (template.params[slot].name.clone(), value.text().to_string()))
                .collect();
            return Some(Instance {
                program,
                filled,
                answer,
            });
        }
        let node = &template.nodes[next];
        // Checked against the metadata when read: CLEVR's functions take one or two inputs.
        let mut input_array = [0usize; 2];
        for (to, &from) in input_array.iter_mut().zip(&node.inputs) {
            *to = state.input_map[from];
        }
        let inputs = &input_array[..node.inputs.len().min(2)];
        let function = node.function.as_str();
        let slots = &loaded.node_slots[next];
        if let Some(terminal) = composite_terminal(function) {
            let mut options = match (function.starts_with("relate_"), state.outputs[inputs[0]]) {
                (true, Output::Object(object)) => {
                    relate_options(set, index, usize::from(object), terminal, rng)
                }
                (false, Output::Set(objects)) => {
                    filter_options(set, index, objects, terminal, function == "filter", rng)
                }
                _ => continue,
            };
            options.shuffle(rng);
            'option: for (relation, key) in options {
                let mut child = state.clone();
                let mut at = inputs[0];
                let mut slot_iter = slots.iter();
                if let Some(relation) = relation {
                    let Some(&slot) = slot_iter.next() else { continue };
                    if !child.push(index, Function::Relate(relation), &[at]) {
                        continue 'option;
                    }
                    at = child.steps.len() - 1;
                    child.filled.push((slot, SlotValue::Relation(relation)));
                }
                for ((&slot, value), kind) in slot_iter.zip(key).zip(FILTER_ORDER) {
                    if let Some(value) = value {
                        if !child.push(index, Function::Filter(value), &[at]) {
                            continue 'option;
                        }
                        at = child.steps.len() - 1;
                    }
                    child.filled.push((slot, SlotValue::Attribute(kind, value)));
                }
                if let Some(terminal) = terminal {
                    if !child.push(index, terminal, &[at]) {
                        continue 'option;
                    }
                }
                child.input_map.push(child.steps.len() - 1);
                stack.push(child);
            }
        } else if let Some(&slot) = slots.first() {
            let mut values: Vec<SlotValue> = match loaded.slot_kinds[slot] {
                SlotKind::Relation => set.relations.iter().map(|&r| SlotValue::Relation(r)).collect(),
                SlotKind::Attribute(kind) => set
                    .attribute_values(kind)
                    .iter()
                    .map(|&v| SlotValue::Attribute(kind, Some(v)))
                    .collect(),
            };
            values.shuffle(rng);
            for value in values {
                let node = ProgramNode::with_value(function, inputs, value.text());
                let Ok(parsed) = Function::parse(&node) else {
                    continue;
                };
                let mut child = state.clone();
                if child.push(index, parsed, inputs) {
                    child.filled.push((slot, value));
                    child.input_map.push(child.steps.len() - 1);
                    stack.push(child);
                }
            }
        } else {
            let Some(parsed) = plain_function(function, inputs) else {
                continue;
            };
            let mut child = state;
            if child.push(index, parsed, inputs) {
                child.input_map.push(child.steps.len() - 1);
                stack.push(child);
            }
        }
    }
    None
}

fn plain_function(name: &str, inputs: &[usize]) -> Option<Function> {
    Function::parse(&ProgramNode::new(name, inputs)).ok()
}

/// For a composite node, the function that ends its expansion (`None` for a plain
/// `filter` / `relate_filter`); `None` outside for other functions.
fn composite_terminal(function: &str) -> Option<Option<Function>> {
    match function {
        "filter" | "relate_filter" => Some(None),
        "filter_unique" | "relate_filter_unique" => Some(Some(Function::Unique)),
        "filter_count" | "relate_filter_count" => Some(Some(Function::Count)),
        "filter_exist" | "relate_filter_exist" => Some(Some(Function::Exist)),
        _ => None,
    }
}

fn answer_text(output: Output) -> Option<String> {
    match output {
        Output::Bool(true) => Some("yes".to_string()),
        Output::Bool(false) => Some("no".to_string()),
        Output::Count(n) => Some(n.to_string()),
        Output::Attribute(value) => Some(value.as_str().to_string()),
        _ => None,
    }
}

fn satisfies_rules(loaded: &LoadedTemplate, state: &State) -> bool {
    loaded.rules.iter().all(|&rule| match rule {
        Rule::Null(slot) => !matches!(
            state.value(slot),
            Some(SlotValue::Attribute(_, Some(_))) | Some(SlotValue::Relation(_))
        ),
        // The official generator's check of this (unused by CLEVR v1.0's templates)
        // constraint is inverted; here it means what its name says.
        Rule::NotEqual(a, b) => match (state.value(a), state.value(b)) {
            (Some(x), Some(y)) => x.text() != y.text(),
            _ => true,
        },
        Rule::OutputsDiffer(i, j) => match (state.input_map.get(i), state.input_map.get(j)) {
            (Some(&x), Some(&y)) => state.outputs[x] != state.outputs[y],
            _ => true,
        },
    })
}

/// Filter combinations to try on `objects`: those this scene has, narrowed to single
/// objects for a `unique`, plus as many random combinations as there are options (for
/// `exist`, so that "no" answers come as often as "yes") or as single-object options (for
/// `count` and plain filters).
fn filter_options(
    set: &TemplateSet,
    index: &SceneIndex,
    objects: u64,
    terminal: Option<Function>,
    plain_filter: bool,
    rng: &mut impl Rng,
) -> Vec<(Option<Relation>, FilterKey)> {
    let mut options: Vec<(FilterKey, u32)> = index
        .filters
        .iter()
        .map(|&(key, selected)| (key, (selected & objects).count_ones()))
        .collect();
    if plain_filter {
        options.retain(|(key, _)| key.iter().any(Option::is_some));
    }
    let extra = match terminal {
        Some(Function::Unique) => {
            options.retain(|&(_, kept)| kept == 1);
            0
        }
        Some(Function::Exist) => options.len(),
        _ => options.iter().filter(|&&(_, kept)| kept == 1).count(),
    };
    let mut keys: Vec<(Option<Relation>, FilterKey)> =
        options.into_iter().map(|(key, _)| (None, key)).collect();
    for _ in 0..extra {
        let key: FilterKey = std::array::from_fn(|k| {
            let values = set.attribute_values(FILTER_ORDER[k]);
            // Each attribute is one of its values or left out, uniformly.
            values.get(rng.random_range(0..=values.len())).copied()
        });
        keys.push((None, key));
    }
    keys
}

/// Relation and filter combinations to try from `object`: those whose related objects
/// include something (exactly one object for a `unique`; possibly nothing for `count` and
/// `exist`), keeping only a tenth as many options where the relation narrows nothing.
fn relate_options(
    set: &TemplateSet,
    index: &SceneIndex,
    object: usize,
    terminal: Option<Function>,
    rng: &mut impl Rng,
) -> Vec<(Option<Relation>, FilterKey)> {
    let unique = terminal == Some(Function::Unique);
    let include_empty = matches!(terminal, Some(Function::Count) | Some(Function::Exist));
    let mut useful = Vec::new();
    let mut trivial = Vec::new();
    for &relation in &set.relations {
        let related = index.related(relation, object);
        for &(key, selected) in &index.filters {
            let both = (selected & related).count_ones();
            if (unique && both != 1) || (!include_empty && both == 0) {
                continue;
            }
            if both == selected.count_ones() {
                trivial.push((Some(relation), key));
            } else {
                useful.push((Some(relation), key));
            }
        }
    }
    let share = TRIVIAL_RELATE_SHARE;
    let keep = (useful.len() as f64 * share / (1.0 - share)).round_ties_even() as usize;
    trivial.shuffle(rng);
    trivial.truncate(keep);
    useful.extend(trivial);
    useful
}

/// Whether some `relate` of the program can be replaced by the whole scene without changing
/// the answer: then the relation says nothing and the question is degenerate.
fn is_degenerate(state: &State, index: &SceneIndex) -> bool {
    let answer = state.outputs.last().copied();
    state.steps.iter().enumerate().any(|(at, step)| {
        if !matches!(step.function, Function::Relate(_)) {
            return false;
        }
        // Run the program again with the whole scene in place of this relate; nodes that
        // fail no longer matter unless the answer needs them, which `None` then says.
        let mut outputs: Vec<Option<Output>> = Vec::with_capacity(state.steps.len());
        for (i, step) in state.steps.iter().enumerate() {
            let output = if i == at {
                index.run(Function::Scene, [Output::None; 2])
            } else {
                let mut values = [Output::None; 2];
                let mut ready = true;
                for (value, &input) in values.iter_mut().zip(&step.inputs[..step.arity]) {
                    match outputs[input] {
                        Some(v) => *value = v,
                        None => ready = false,
                    }
                }
                if ready {
                    index.run(step.function, values)
                } else {
                    None
                }
            };
            outputs.push(output);
        }
        outputs.last().copied().flatten() == answer
    })
}

/// The release-format program of `steps`.
fn program_nodes(steps: &[Step]) -> Vec<ProgramNode> {
    steps
        .iter()
        .map(|step| {
            let inputs = &step.inputs[..step.arity];
            let kinded = |prefix: &str, kind: AttributeKind| format!("{prefix}_{}", kind.as_str());
            match step.function {
                Function::Scene => ProgramNode::new("scene", inputs),
                Function::Filter(value) => {
                    ProgramNode::with_value(&kinded("filter", value.kind()), inputs, value.as_str())
                }
                Function::Unique => ProgramNode::new("unique", inputs),
                Function::Relate(relation) => ProgramNode::with_value("relate", inputs, relation.as_str()),
                Function::Union => ProgramNode::new("union", inputs),
                Function::Intersect => ProgramNode::new("intersect", inputs),
                Function::Count => ProgramNode::new("count", inputs),
                Function::Exist => ProgramNode::new("exist", inputs),
                Function::Query(kind) => ProgramNode::new(&kinded("query", kind), inputs),
                Function::Same(kind) => ProgramNode::new(&kinded("same", kind), inputs),
                Function::EqualInteger => ProgramNode::new("equal_integer", inputs),
                Function::LessThan => ProgramNode::new("less_than", inputs),
                Function::GreaterThan => ProgramNode::new("greater_than", inputs),
                Function::Equal(kind) => ProgramNode::new(&kinded("equal", kind), inputs),
            }
        })
        .collect()
}
