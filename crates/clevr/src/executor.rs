//! Runs CLEVR functional programs on scene graphs.
//!
//! Semantics follow the CLEVR generator's question engine: object sets are
//! sorted index lists, `relate` reads the scene's precomputed `relationships`,
//! `same_*` excludes the object itself, and `unique` on anything but exactly one
//! object makes the question ill-posed (an [`ExecError::NotUnique`], which the
//! question generator uses to reject candidate questions).

use crate::attributes::{AttributeKind, AttributeValue, Relation, UnknownValue};
use crate::question::ProgramNode;
use crate::scene::Scene;
use std::fmt;

/// The answer of a program: what the last node evaluates to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Answer {
    Bool(bool),
    Count(usize),
    Attribute(AttributeValue),
}

impl fmt::Display for Answer {
    /// The spelling used in the `answer` field of the released questions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Bool(true) => f.write_str("yes"),
            Answer::Bool(false) => f.write_str("no"),
            Answer::Count(n) => write!(f, "{n}"),
            Answer::Attribute(v) => f.write_str(v.as_str()),
        }
    }
}

/// A CLEVR program function with its literal argument already parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    Scene,
    Filter(AttributeValue),
    Unique,
    Relate(Relation),
    Union,
    Intersect,
    Count,
    Exist,
    Query(AttributeKind),
    Same(AttributeKind),
    EqualInteger,
    LessThan,
    GreaterThan,
    Equal(AttributeKind),
}

impl Function {
    /// Parses a node's `function` name and `value_inputs`.
    pub fn parse(node: &ProgramNode) -> Result<Function, FunctionError> {
        let name = node.function.as_str();
        let value = || {
            node.value_inputs
                .first()
                .map(String::as_str)
                .ok_or_else(|| FunctionError::MissingValue(name.to_string()))
        };
        let simple = match name {
            "scene" => Some(Function::Scene),
            "unique" => Some(Function::Unique),
            "union" => Some(Function::Union),
            "intersect" => Some(Function::Intersect),
            "count" => Some(Function::Count),
            "exist" => Some(Function::Exist),
            "equal_integer" => Some(Function::EqualInteger),
            "less_than" => Some(Function::LessThan),
            "greater_than" => Some(Function::GreaterThan),
            "relate" => Some(Function::Relate(value()?.parse()?)),
            _ => None,
        };
        if let Some(f) = simple {
            return Ok(f);
        }
        let (prefix, attribute) = name
            .split_once('_')
            .ok_or_else(|| FunctionError::Unknown(name.to_string()))?;
        let kind: AttributeKind = attribute
            .parse()
            .map_err(|_| FunctionError::Unknown(name.to_string()))?;
        match prefix {
            "filter" => Ok(Function::Filter(kind.parse_value(value()?)?)),
            "query" => Ok(Function::Query(kind)),
            "same" => Ok(Function::Same(kind)),
            "equal" => Ok(Function::Equal(kind)),
            _ => Err(FunctionError::Unknown(name.to_string())),
        }
    }

    /// How many program inputs the function takes.
    pub fn arity(self) -> usize {
        match self {
            Function::Scene => 0,
            Function::Union
            | Function::Intersect
            | Function::EqualInteger
            | Function::LessThan
            | Function::GreaterThan
            | Function::Equal(_) => 2,
            _ => 1,
        }
    }
}

/// A node whose function name or literal argument is not CLEVR's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("unknown function {0:?}")]
    Unknown(String),
    #[error("function {0:?} needs a value input and has none")]
    MissingValue(String),
    #[error(transparent)]
    BadValue(#[from] UnknownValue),
}

/// Why a program could not be run on a scene. `node` is the index in the program.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("empty program")]
    Empty,
    #[error("node {node}: {source}")]
    Function { node: usize, source: FunctionError },
    #[error("node {node} ({function}): takes {expected} inputs, got {found}")]
    Arity {
        node: usize,
        function: String,
        expected: usize,
        found: usize,
    },
    #[error("node {node} ({function}): input {input} does not refer to an earlier node")]
    ForwardInput {
        node: usize,
        function: String,
        input: usize,
    },
    #[error("node {node} ({function}): expected {expected} as input, got {found}")]
    Type {
        node: usize,
        function: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("node {node} (unique): expected exactly one object, found {found}")]
    NotUnique { node: usize, found: usize },
    #[error("node {node} ({function}): object {object} is not in the scene ({objects} objects)")]
    BadObject {
        node: usize,
        function: String,
        object: usize,
        objects: usize,
    },
    #[error("program ends in a node of type {found}, which is not an answer")]
    NotAnAnswer { found: &'static str },
}

/// The value flowing along a program edge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Objects(Vec<usize>),
    Object(usize),
    Integer(usize),
    Bool(bool),
    Attribute(AttributeValue),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Objects(_) => "an object set",
            Value::Object(_) => "an object",
            Value::Integer(_) => "an integer",
            Value::Bool(_) => "a boolean",
            Value::Attribute(_) => "an attribute value",
        }
    }
}

/// Runs `program` on `scene` and returns the value of its last node.
pub fn execute(program: &[ProgramNode], scene: &Scene) -> Result<Answer, ExecError> {
    let mut values = execute_nodes(program, scene)?;
    match values.pop() {
        None => Err(ExecError::Empty),
        Some(Value::Bool(b)) => Ok(Answer::Bool(b)),
        Some(Value::Integer(n)) => Ok(Answer::Count(n)),
        Some(Value::Attribute(v)) => Ok(Answer::Attribute(v)),
        Some(other) => Err(ExecError::NotAnAnswer {
            found: other.type_name(),
        }),
    }
}

/// The objects the answer of `program` on `scene` is about, sorted: the object sets and
/// objects nearest the last node, found by following the inputs of every node that returns
/// a number, a truth value or an attribute. For a count, the counted set; for a query, the
/// queried object; for a comparison, the objects or sets on both sides.
pub fn answer_objects(program: &[ProgramNode], scene: &Scene) -> Result<Vec<usize>, ExecError> {
    let values = execute_nodes(program, scene)?;
    if values.is_empty() {
        return Err(ExecError::Empty);
    }
    let mut objects = std::collections::BTreeSet::new();
    let mut pending = vec![values.len() - 1];
    while let Some(node) = pending.pop() {
        match &values[node] {
            Value::Objects(set) => objects.extend(set),
            Value::Object(object) => {
                objects.insert(*object);
            }
            _ => pending.extend(&program[node].inputs),
        }
    }
    Ok(objects.into_iter().collect())
}

/// The answers a program computes on the way to its own, at most two: the two attributes
/// an attribute comparison compares, the two counts a number comparison compares or a count
/// of a union or intersection adds up, the count an `exist` tests for zero, and the
/// attribute each `same_*` step copies from its reference object, in program order, while
/// fewer than two are found. Unused slots are `None`; a plain lookup or count has none.
pub fn intermediate_answers(
    program: &[ProgramNode],
    scene: &Scene,
) -> Result<[Option<Answer>; 2], ExecError> {
    let values = execute_nodes(program, scene)?;
    let last = program.len().checked_sub(1).ok_or(ExecError::Empty)?;
    let as_answer = |node: usize| match &values[node] {
        Value::Integer(n) => Some(Answer::Count(*n)),
        Value::Attribute(v) => Some(Answer::Attribute(*v)),
        Value::Objects(set) => Some(Answer::Count(set.len())),
        Value::Object(_) | Value::Bool(_) => None,
    };
    let function =
        |node: usize| Function::parse(&program[node]).map_err(|source| ExecError::Function { node, source });
    let inputs = &program[last].inputs;
    let mut found: Vec<Answer> = match function(last)? {
        Function::Equal(_)
        | Function::EqualInteger
        | Function::LessThan
        | Function::GreaterThan
        | Function::Exist => inputs.iter().filter_map(|&i| as_answer(i)).collect(),
        Function::Count => match function(inputs[0])? {
            Function::Union | Function::Intersect => program[inputs[0]]
                .inputs
                .iter()
                .filter_map(|&i| as_answer(i))
                .collect(),
            _ => Vec::new(),
        },
        _ => Vec::new(),
    };
    for (index, node) in program.iter().enumerate() {
        if let Function::Same(kind) = function(index)? {
            if found.len() < 2 {
                if let Value::Object(reference) = values[node.inputs[0]] {
                    found.push(Answer::Attribute(scene.objects[reference].attribute(kind)));
                }
            }
        }
    }
    let mut slots = found.into_iter();
    Ok([slots.next(), slots.next()])
}

/// The objects a program picks out on its way to the answer, nearest the last node first,
/// at most two and each once: the object a lookup reads, the two objects an attribute
/// comparison compares, the object a relation or a "same as" step starts from. Found
/// breadth-first from the last node through every node's inputs, so an object one step
/// from the answer comes before one two steps away. Unused slots are `None`; a question
/// with no `unique` step (a plain count or Exist) has none.
pub fn referents(program: &[ProgramNode], scene: &Scene) -> Result<[Option<usize>; 2], ExecError> {
    let values = execute_nodes(program, scene)?;
    let mut found: Vec<usize> = Vec::with_capacity(2);
    for node in nearest_the_answer_first(program)? {
        if let Value::Object(object) = values[node] {
            if !found.contains(&object) {
                found.push(object);
            }
        }
    }
    Ok([found.first().copied(), found.get(1).copied()])
}

/// How many objects each `relate` or `same_*` step of a program finds, nearest the last
/// node first (in the order of [`referents`]), at most two: "What color is the cube left
/// of the sphere?" finds the things left of the sphere, and their number says whether the
/// relation was read right, which the answer alone does not. Unused slots are `None`; a
/// question with neither step has none.
pub fn relation_set_sizes(program: &[ProgramNode], scene: &Scene) -> Result<[Option<usize>; 2], ExecError> {
    let values = execute_nodes(program, scene)?;
    let mut found: Vec<usize> = Vec::with_capacity(2);
    for node in nearest_the_answer_first(program)? {
        let function =
            Function::parse(&program[node]).map_err(|source| ExecError::Function { node, source })?;
        if let (Function::Relate(_) | Function::Same(_), Value::Objects(set)) = (function, &values[node]) {
            found.push(set.len());
        }
    }
    Ok([found.first().copied(), found.get(1).copied()])
}

/// The nodes of `program` breadth-first from the last one through every node's inputs,
/// each once: a node one step from the answer comes before one two steps away.
fn nearest_the_answer_first(program: &[ProgramNode]) -> Result<Vec<usize>, ExecError> {
    let last = program.len().checked_sub(1).ok_or(ExecError::Empty)?;
    let mut order = Vec::with_capacity(program.len());
    let mut visited = vec![false; program.len()];
    let mut queue = std::collections::VecDeque::from([last]);
    while let Some(node) = queue.pop_front() {
        if std::mem::replace(&mut visited[node], true) {
            continue;
        }
        order.push(node);
        queue.extend(&program[node].inputs);
    }
    Ok(order)
}

/// The value of every node of `program` on `scene`, in order.
fn execute_nodes(program: &[ProgramNode], scene: &Scene) -> Result<Vec<Value>, ExecError> {
    let mut values: Vec<Value> = Vec::with_capacity(program.len());
    for (index, node) in program.iter().enumerate() {
        let value = execute_node(index, node, &values, scene)?;
        values.push(value);
    }
    Ok(values)
}

fn execute_node(
    index: usize,
    node: &ProgramNode,
    earlier: &[Value],
    scene: &Scene,
) -> Result<Value, ExecError> {
    let function = Function::parse(node).map_err(|source| ExecError::Function { node: index, source })?;
    let name = || node.function.clone();
    if node.inputs.len() != function.arity() {
        return Err(ExecError::Arity {
            node: index,
            function: name(),
            expected: function.arity(),
            found: node.inputs.len(),
        });
    }
    let mut inputs = Vec::with_capacity(node.inputs.len());
    for &input in &node.inputs {
        let value = earlier.get(input).ok_or_else(|| ExecError::ForwardInput {
            node: index,
            function: name(),
            input,
        })?;
        inputs.push(value);
    }
    let type_error = |expected: &'static str, found: &Value| ExecError::Type {
        node: index,
        function: name(),
        expected,
        found: found.type_name(),
    };
    let objects = |v: &Value| match v {
        Value::Objects(set) => Ok(set.clone()),
        other => Err(type_error("an object set", other)),
    };
    let object = |v: &Value| match v {
        Value::Object(i) if *i < scene.objects.len() => Ok(*i),
        Value::Object(i) => Err(ExecError::BadObject {
            node: index,
            function: name(),
            object: *i,
            objects: scene.objects.len(),
        }),
        other => Err(type_error("an object", other)),
    };
    let integer = |v: &Value| match v {
        Value::Integer(n) => Ok(*n),
        other => Err(type_error("an integer", other)),
    };
    let attribute = |v: &Value, kind: AttributeKind| match v {
        Value::Attribute(a) if a.kind() == kind => Ok(*a),
        other => Err(type_error("an attribute value of the compared kind", other)),
    };

    Ok(match function {
        Function::Scene => Value::Objects((0..scene.objects.len()).collect()),
        Function::Filter(wanted) => Value::Objects(
            objects(inputs[0])?
                .into_iter()
                .filter(|&i| {
                    scene
                        .objects
                        .get(i)
                        .is_some_and(|o| o.attribute(wanted.kind()) == wanted)
                })
                .collect(),
        ),
        Function::Unique => match objects(inputs[0])?.as_slice() {
            [single] => Value::Object(*single),
            set => {
                return Err(ExecError::NotUnique {
                    node: index,
                    found: set.len(),
                })
            }
        },
        Function::Relate(relation) => {
            let i = object(inputs[0])?;
            let mut related =
                scene
                    .relationships
                    .get(relation)
                    .get(i)
                    .cloned()
                    .ok_or_else(|| ExecError::BadObject {
                        node: index,
                        function: name(),
                        object: i,
                        objects: scene.relationships.get(relation).len(),
                    })?;
            related.sort_unstable();
            Value::Objects(related)
        }
        Function::Union => {
            let mut set = objects(inputs[0])?;
            set.extend(objects(inputs[1])?);
            set.sort_unstable();
            set.dedup();
            Value::Objects(set)
        }
        Function::Intersect => {
            let right = objects(inputs[1])?;
            Value::Objects(
                objects(inputs[0])?
                    .into_iter()
                    .filter(|i| right.contains(i))
                    .collect(),
            )
        }
        Function::Count => Value::Integer(objects(inputs[0])?.len()),
        Function::Exist => Value::Bool(!objects(inputs[0])?.is_empty()),
        Function::Query(kind) => Value::Attribute(scene.objects[object(inputs[0])?].attribute(kind)),
        Function::Same(kind) => {
            let i = object(inputs[0])?;
            let target = scene.objects[i].attribute(kind);
            Value::Objects(
                (0..scene.objects.len())
                    .filter(|&j| j != i && scene.objects[j].attribute(kind) == target)
                    .collect(),
            )
        }
        Function::EqualInteger => Value::Bool(integer(inputs[0])? == integer(inputs[1])?),
        Function::LessThan => Value::Bool(integer(inputs[0])? < integer(inputs[1])?),
        Function::GreaterThan => Value::Bool(integer(inputs[0])? > integer(inputs[1])?),
        Function::Equal(kind) => Value::Bool(attribute(inputs[0], kind)? == attribute(inputs[1], kind)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attributes::{Color, Shape};
    use crate::scene::ScenesFile;
    use crate::testing::{reference_file, REFERENCE_SCENES};

    fn n(function: &str, inputs: &[usize]) -> ProgramNode {
        ProgramNode::new(function, inputs)
    }
    fn v(function: &str, inputs: &[usize], value: &str) -> ProgramNode {
        ProgramNode::with_value(function, inputs, value)
    }

    /// What color is the sphere right of the green cylinder? (Real val scene 0.)
    fn what_color_is_the_sphere_right_of_the_green_cylinder() -> Vec<ProgramNode> {
        vec![
            n("scene", &[]),
            v("filter_color", &[0], "green"),
            n("unique", &[1]),
            v("relate", &[2], "right"),
            v("filter_shape", &[3], "sphere"),
            n("unique", &[4]),
            n("query_color", &[5]),
        ]
    }

    /// Is there anything else the same color as the small metal cube?
    fn anything_else_the_color_of_the_small_metal_cube() -> Vec<ProgramNode> {
        vec![
            n("scene", &[]),
            v("filter_size", &[0], "small"),
            v("filter_material", &[1], "metal"),
            v("filter_shape", &[2], "cube"),
            n("unique", &[3]),
            n("same_color", &[4]),
            n("exist", &[5]),
        ]
    }

    /// How many cylinders are there?
    fn how_many_cylinders() -> Vec<ProgramNode> {
        vec![
            n("scene", &[]),
            v("filter_shape", &[0], "cylinder"),
            n("count", &[1]),
        ]
    }

    fn real_scenes() -> Vec<Scene> {
        ScenesFile::read(&reference_file(REFERENCE_SCENES))
            .unwrap()
            .scenes
    }

    /// Scene 0 as described below `answers_hand_checked_questions_on_real_scene_0`.
    #[test]
    fn answer_objects_are_the_sets_and_objects_nearest_the_answer() {
        let scenes = real_scenes();
        let scene = &scenes[0];
        let cases: Vec<(Vec<ProgramNode>, Vec<usize>)> = vec![
            // How many cylinders are there? The cylinders.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "cylinder"),
                    n("count", &[1]),
                ],
                vec![0, 2],
            ),
            // What material is the sphere? The sphere, not the filter's input.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_material", &[2]),
                ],
                vec![3],
            ),
            // Are there more things right of the green cylinder than cubes? Both sets.
            (
                vec![
                    n("scene", &[]),
                    v("filter_color", &[0], "green"),
                    n("unique", &[1]),
                    v("relate", &[2], "right"),
                    n("count", &[3]),
                    n("scene", &[]),
                    v("filter_shape", &[5], "cube"),
                    n("count", &[6]),
                    n("greater_than", &[4, 7]),
                ],
                vec![1, 3, 4],
            ),
            // Are there any red things? None: an empty set.
            (
                vec![n("scene", &[]), v("filter_color", &[0], "red"), n("exist", &[1])],
                vec![],
            ),
        ];
        for (program, expected) in cases {
            assert_eq!(answer_objects(&program, scene).unwrap(), expected, "{program:?}");
        }
        assert!(matches!(answer_objects(&[], scene), Err(ExecError::Empty)));
    }

    /// Real val scene 0, as described below `answers_hand_checked_questions_on_real_scene_0`.
    #[test]
    fn intermediate_answers_are_what_the_last_step_reads_then_same_as_references() {
        use crate::attributes::Material;
        let scenes = real_scenes();
        let scene = &scenes[0];
        let attribute = |v: AttributeValue| Some(Answer::Attribute(v));
        let count = |c: usize| Some(Answer::Count(c));
        let cases: Vec<(Vec<ProgramNode>, [Option<Answer>; 2])> = vec![
            // Is the sphere the same material as the large cube? Metal and rubber.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_material", &[2]),
                    n("scene", &[]),
                    v("filter_size", &[4], "large"),
                    v("filter_shape", &[5], "cube"),
                    n("unique", &[6]),
                    n("query_material", &[7]),
                    n("equal_material", &[3, 8]),
                ],
                [
                    attribute(AttributeValue::Material(Material::Metal)),
                    attribute(AttributeValue::Material(Material::Rubber)),
                ],
            ),
            // Are there more cylinders than metal things? Two and two.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "cylinder"),
                    n("count", &[1]),
                    n("scene", &[]),
                    v("filter_material", &[3], "metal"),
                    n("count", &[4]),
                    n("greater_than", &[2, 5]),
                ],
                [count(2), count(2)],
            ),
            // How many things are cylinders or spheres? Two and one.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "cylinder"),
                    n("scene", &[]),
                    v("filter_shape", &[2], "sphere"),
                    n("union", &[1, 3]),
                    n("count", &[4]),
                ],
                [count(2), count(1)],
            ),
            // Is there anything else the same color as the small metal cube? One gray
            // object, and the colour the question asks about: gray.
            (
                anything_else_the_color_of_the_small_metal_cube(),
                [count(1), attribute(AttributeValue::Color(Color::Gray))],
            ),
            // What material is the sphere? A plain lookup has none.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_material", &[2]),
                ],
                [None, None],
            ),
        ];
        for (program, expected) in cases {
            assert_eq!(
                intermediate_answers(&program, scene).unwrap(),
                expected,
                "{program:?}"
            );
        }
        assert_eq!(intermediate_answers(&[], scene), Err(ExecError::Empty));
    }

    /// Real val scene 0, as described below `answers_hand_checked_questions_on_real_scene_0`.
    #[test]
    fn referents_are_the_objects_picked_out_nearest_the_answer_first() {
        let scenes = real_scenes();
        let scene = &scenes[0];
        let what_color = what_color_is_the_sphere_right_of_the_green_cylinder();
        // Same size as the large cube? The two compared objects come before the green
        // cylinder that one of them was found from.
        let mut same_size = what_color[..6].to_vec();
        same_size.extend([
            n("query_size", &[5]),
            n("scene", &[]),
            v("filter_size", &[7], "large"),
            v("filter_shape", &[8], "cube"),
            n("unique", &[9]),
            n("query_size", &[10]),
            n("equal_size", &[6, 11]),
        ]);
        let cases: Vec<(Vec<ProgramNode>, [Option<usize>; 2])> = vec![
            // What material is the sphere? The sphere.
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_material", &[2]),
                ],
                [Some(3), None],
            ),
            // What color is the sphere right of the green cylinder? The sphere, then the
            // cylinder.
            (what_color, [Some(3), Some(2)]),
            (same_size, [Some(3), Some(1)]),
            // Is there anything else the same color as the small metal cube? The cube.
            (anything_else_the_color_of_the_small_metal_cube(), [Some(4), None]),
            // How many cylinders are there? No object is picked out.
            (how_many_cylinders(), [None, None]),
        ];
        for (program, expected) in cases {
            assert_eq!(referents(&program, scene).unwrap(), expected, "{program:?}");
        }
        assert_eq!(referents(&[], scene), Err(ExecError::Empty));
    }

    /// Real val scene 0, as described below `answers_hand_checked_questions_on_real_scene_0`.
    #[test]
    fn relation_set_sizes_count_what_each_relation_finds_nearest_the_answer_first() {
        let scenes = real_scenes();
        let scene = &scenes[0];
        let cases: Vec<(Vec<ProgramNode>, [Option<usize>; 2])> = vec![
            // What color is the sphere right of the green cylinder? Three things are right
            // of it.
            (
                what_color_is_the_sphere_right_of_the_green_cylinder(),
                [Some(3), None],
            ),
            // How many things are behind the brown thing left of the gray metal thing?
            // Two behind the brown cylinder, found among the four left of the cube.
            (
                vec![
                    n("scene", &[]),
                    v("filter_color", &[0], "gray"),
                    v("filter_material", &[1], "metal"),
                    n("unique", &[2]),
                    v("relate", &[3], "left"),
                    v("filter_color", &[4], "brown"),
                    n("unique", &[5]),
                    v("relate", &[6], "behind"),
                    n("count", &[7]),
                ],
                [Some(2), Some(4)],
            ),
            // Is there anything else the same color as the small metal cube? One.
            (anything_else_the_color_of_the_small_metal_cube(), [Some(1), None]),
            // How many cylinders are there? No relation.
            (how_many_cylinders(), [None, None]),
        ];
        for (program, expected) in cases {
            assert_eq!(
                relation_set_sizes(&program, scene).unwrap(),
                expected,
                "{program:?}"
            );
        }
        assert_eq!(relation_set_sizes(&[], scene), Err(ExecError::Empty));
    }

    /// Real val scene 0: 0 large brown rubber cylinder, 1 large gray rubber cube,
    /// 2 small green rubber cylinder, 3 large purple metal sphere, 4 small gray
    /// metal cube; right[2] = [1, 3, 4], left[4] = [0, 1, 2, 3], behind[0] = [2, 3].
    #[test]
    fn answers_hand_checked_questions_on_real_scene_0() {
        let scenes = real_scenes();
        let scene = &scenes[0];
        let cases: Vec<(Vec<ProgramNode>, &str)> = vec![
            // How many cylinders are there?
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "cylinder"),
                    n("count", &[1]),
                ],
                "2",
            ),
            // Are there any red things?
            (
                vec![n("scene", &[]), v("filter_color", &[0], "red"), n("exist", &[1])],
                "no",
            ),
            // What material is the sphere?
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_material", &[2]),
                ],
                "metal",
            ),
            // How many things are right of the green cylinder?
            (
                vec![
                    n("scene", &[]),
                    v("filter_color", &[0], "green"),
                    n("unique", &[1]),
                    v("relate", &[2], "right"),
                    n("count", &[3]),
                ],
                "3",
            ),
            // What colour is the metal cube left of which everything else is? (object 4)
            (
                vec![
                    n("scene", &[]),
                    v("filter_material", &[0], "metal"),
                    v("filter_shape", &[1], "cube"),
                    n("unique", &[2]),
                    n("query_color", &[3]),
                ],
                "gray",
            ),
            // How many other things have the same colour as the small metal cube?
            (
                vec![
                    n("scene", &[]),
                    v("filter_size", &[0], "small"),
                    v("filter_material", &[1], "metal"),
                    n("unique", &[2]),
                    n("same_color", &[3]),
                    n("count", &[4]),
                ],
                "1",
            ),
            // Are there fewer spheres than cubes?
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("count", &[1]),
                    n("scene", &[]),
                    v("filter_shape", &[3], "cube"),
                    n("count", &[4]),
                    n("less_than", &[2, 5]),
                ],
                "yes",
            ),
            // Is the number of large things greater than the number of rubber things? (3 vs 3)
            (
                vec![
                    n("scene", &[]),
                    v("filter_size", &[0], "large"),
                    n("count", &[1]),
                    n("scene", &[]),
                    v("filter_material", &[3], "rubber"),
                    n("count", &[4]),
                    n("greater_than", &[2, 5]),
                ],
                "no",
            ),
            // Same number of large things and rubber things?
            (
                vec![
                    n("scene", &[]),
                    v("filter_size", &[0], "large"),
                    n("count", &[1]),
                    n("scene", &[]),
                    v("filter_material", &[3], "rubber"),
                    n("count", &[4]),
                    n("equal_integer", &[2, 5]),
                ],
                "yes",
            ),
            // Is the sphere the same size as the brown cylinder?
            (
                vec![
                    n("scene", &[]),
                    v("filter_shape", &[0], "sphere"),
                    n("unique", &[1]),
                    n("query_size", &[2]),
                    n("scene", &[]),
                    v("filter_color", &[4], "brown"),
                    n("unique", &[5]),
                    n("query_size", &[6]),
                    n("equal_size", &[3, 7]),
                ],
                "yes",
            ),
            // How many things are behind the brown thing or metal?
            (
                vec![
                    n("scene", &[]),
                    v("filter_color", &[0], "brown"),
                    n("unique", &[1]),
                    v("relate", &[2], "behind"),
                    n("scene", &[]),
                    v("filter_material", &[4], "metal"),
                    n("union", &[3, 5]),
                    n("count", &[6]),
                ],
                "3",
            ),
            // How many things are both left of the gray metal cube and rubber?
            (
                vec![
                    n("scene", &[]),
                    v("filter_color", &[0], "gray"),
                    v("filter_material", &[1], "metal"),
                    n("unique", &[2]),
                    v("relate", &[3], "left"),
                    n("scene", &[]),
                    v("filter_material", &[5], "rubber"),
                    n("intersect", &[4, 6]),
                    n("count", &[7]),
                ],
                "3",
            ),
        ];
        for (program, expected) in cases {
            let answer = execute(&program, scene).unwrap();
            assert_eq!(answer.to_string(), expected, "program {program:?}");
        }
    }

    /// Cross-checks the executor against direct computation from the scene data
    /// on every real scene of the fixture: counts per colour and shape, relation counts.
    #[test]
    fn agrees_with_direct_counts_on_all_real_scenes() {
        let scenes = real_scenes();
        for scene in &scenes {
            for &color in Color::ALL {
                for &shape in Shape::ALL {
                    let program = [
                        n("scene", &[]),
                        v("filter_color", &[0], color.as_str()),
                        v("filter_shape", &[1], shape.as_str()),
                        n("count", &[2]),
                    ];
                    let direct = scene
                        .objects
                        .iter()
                        .filter(|o| o.color == color && o.shape == shape)
                        .count();
                    assert_eq!(execute(&program, scene).unwrap(), Answer::Count(direct));
                }
            }
            for i in 0..scene.objects.len() {
                // Real scenes may hold twins (same four attributes): then `unique`
                // must refuse, reporting how many it found.
                let o = &scene.objects[i];
                let twins = scene.objects.iter().filter(|p| {
                    (p.color, p.shape, p.size, p.material) == (o.color, o.shape, o.size, o.material)
                });
                let twins = twins.count();
                let program = [
                    n("scene", &[]),
                    v("filter_color", &[0], o.color.as_str()),
                    v("filter_shape", &[1], o.shape.as_str()),
                    v("filter_size", &[2], o.size.as_str()),
                    v("filter_material", &[3], o.material.as_str()),
                    n("unique", &[4]),
                    v("relate", &[5], "left"),
                    n("count", &[6]),
                ];
                let expected = if twins == 1 {
                    Ok(Answer::Count(scene.relationships.left[i].len()))
                } else {
                    Err(ExecError::NotUnique {
                        node: 5,
                        found: twins,
                    })
                };
                assert_eq!(execute(&program, scene), expected);
            }
        }
    }

    fn tiny_scene() -> Scene {
        serde_json::from_str(
            r#"{"image_index": 0, "image_filename": "CLEVR_val_000000.png", "split": "val",
            "objects": [
              {"color": "red", "size": "large", "rotation": 0.0, "shape": "cube",
               "3d_coords": [0.0, 0.0, 0.7], "material": "metal", "pixel_coords": [10, 10, 5.0]},
              {"color": "red", "size": "small", "rotation": 0.0, "shape": "sphere",
               "3d_coords": [1.0, 0.0, 0.35], "material": "rubber", "pixel_coords": [20, 10, 5.0]}],
            "relationships": {"right": [[1], []], "left": [[], [0]], "front": [[], []], "behind": [[], []]},
            "directions": {"right": [1, 0, 0], "left": [-1, 0, 0], "front": [0, -1, 0],
              "behind": [0, 1, 0], "above": [0, 0, 1], "below": [0, 0, -1]}}"#,
        )
        .unwrap()
    }

    #[test]
    fn ill_posed_and_malformed_programs_are_errors() {
        let scene = tiny_scene();
        let not_unique = [n("scene", &[]), v("filter_color", &[0], "red"), n("unique", &[1])];
        assert_eq!(
            execute(&not_unique, &scene),
            Err(ExecError::NotUnique { node: 2, found: 2 })
        );
        let forward = [n("scene", &[]), n("count", &[3])];
        assert!(matches!(
            execute(&forward, &scene),
            Err(ExecError::ForwardInput { input: 3, .. })
        ));
        let unknown = [n("scene", &[]), n("teleport", &[0])];
        assert!(matches!(
            execute(&unknown, &scene),
            Err(ExecError::Function { node: 1, .. })
        ));
        let bad_value = [n("scene", &[]), v("filter_color", &[0], "pink")];
        let err = execute(&bad_value, &scene).unwrap_err();
        assert!(err.to_string().contains("pink"), "{err}");
        let wrong_type = [n("scene", &[]), n("query_color", &[0])];
        assert!(matches!(
            execute(&wrong_type, &scene),
            Err(ExecError::Type { node: 1, .. })
        ));
        let mixed_kinds = [
            n("scene", &[]),
            v("filter_size", &[0], "large"),
            n("unique", &[1]),
            n("query_color", &[2]),
            n("query_shape", &[2]),
            n("equal_color", &[3, 4]),
        ];
        assert!(matches!(
            execute(&mixed_kinds, &scene),
            Err(ExecError::Type { node: 5, .. })
        ));
        assert_eq!(
            execute(&[n("scene", &[])], &scene),
            Err(ExecError::NotAnAnswer {
                found: "an object set"
            })
        );
        assert_eq!(execute(&[], &scene), Err(ExecError::Empty));
        let arity = [n("scene", &[]), n("union", &[0])];
        assert!(matches!(execute(&arity, &scene), Err(ExecError::Arity { .. })));
    }

    #[test]
    fn same_excludes_the_object_itself() {
        let scene = tiny_scene();
        let program = [
            n("scene", &[]),
            v("filter_shape", &[0], "cube"),
            n("unique", &[1]),
            n("same_color", &[2]),
            n("query_shape", &[3]),
        ];
        // same_color of the cube is {sphere}; unique is implicit in query, so it must be
        // a type error (set, not object) rather than silently picking one.
        assert!(matches!(execute(&program, &scene), Err(ExecError::Type { .. })));
        let program = [
            n("scene", &[]),
            v("filter_shape", &[0], "cube"),
            n("unique", &[1]),
            n("same_color", &[2]),
            n("unique", &[3]),
            n("query_shape", &[4]),
        ];
        assert_eq!(execute(&program, &scene).unwrap().to_string(), "sphere");
    }
}
