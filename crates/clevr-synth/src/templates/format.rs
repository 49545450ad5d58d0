//! The official CLEVR question generator's template format, read and checked.
//!
//! A template folder holds JSON files, each a list of templates. A template is a program
//! with typed slots (`nodes`, `params`), sentence frames with the same slots (`text`), and
//! `constraints` on how the slots may be filled. Two more files describe the dataset:
//! `metadata.json` (the values of each slot type and every function's signature) and
//! `synonyms.json` (the spellings a value may take in a sentence). The layout of the
//! official generator is `question_generation/{metadata.json, synonyms.json,
//! CLEVR_1.0_templates/*.json}`, so both files are looked for in the template folder and
//! then in its parent.
//!
//! Everything a template refers to is checked when it is read (functions, slot names and
//! types, input wiring, constraints), so a mistake in a hand-written file is reported with
//! its file, template and node rather than showing up as questions that never come.

use clevr::executor::Function;
use clevr::json::{read_json, JsonError};
use clevr::{AttributeKind, AttributeValue, ProgramNode, Relation};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// The composite nodes that only templates use: each expands into filters (and a leading
/// `relate` for the `relate_` ones) followed by the named terminal.
const COMPOSITES: [&str; 8] = [
    "filter",
    "filter_unique",
    "filter_count",
    "filter_exist",
    "relate_filter",
    "relate_filter_unique",
    "relate_filter_count",
    "relate_filter_exist",
];

/// One program node of a template, in the generator's spelling.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct TemplateNode {
    #[serde(rename = "type")]
    pub function: String,
    #[serde(default)]
    pub inputs: Vec<usize>,
    /// Slot names (`<Z>`, `<R2>`, …) filled in during instantiation.
    #[serde(default)]
    pub side_inputs: Vec<String>,
}

/// A typed slot: `{"type": "Color", "name": "<C>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Param {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
}

/// A rule on a filled-in template.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", content = "params")]
pub enum Constraint {
    /// The slot stays empty: the attribute a question asks about is not used to describe
    /// its object.
    #[serde(rename = "NULL")]
    Null([String; 1]),
    /// The two slots take different values once both are filled.
    #[serde(rename = "NEQ")]
    NotEqual([String; 2]),
    /// The two template nodes return different objects or sets (no comparing a thing
    /// with itself).
    #[serde(rename = "OUT_NEQ")]
    OutputsDiffer([usize; 2]),
}

/// One question family as written in a template file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Template {
    pub text: Vec<String>,
    pub nodes: Vec<TemplateNode>,
    #[serde(default)]
    pub params: Vec<Param>,
    #[serde(default)]
    pub constraints: Vec<Constraint>,
}

/// A function's signature from `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub inputs: Vec<String>,
    #[serde(default)]
    pub side_inputs: Vec<String>,
    pub output: String,
}

/// `metadata.json`: slot types with their values, and function signatures.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Metadata {
    pub dataset: String,
    pub types: BTreeMap<String, Option<Vec<String>>>,
    pub functions: Vec<FunctionSpec>,
}

/// `synonyms.json`: a value's spellings in a sentence (`"cube": ["cube", "block"]`).
pub type Synonyms = BTreeMap<String, Vec<String>>;

/// The kind of value a slot takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotKind {
    Attribute(AttributeKind),
    Relation,
}

/// The metadata's names of the slot types.
const SLOT_TYPES: [(&str, SlotKind); 5] = [
    ("Size", SlotKind::Attribute(AttributeKind::Size)),
    ("Color", SlotKind::Attribute(AttributeKind::Color)),
    ("Material", SlotKind::Attribute(AttributeKind::Material)),
    ("Shape", SlotKind::Attribute(AttributeKind::Shape)),
    ("Relation", SlotKind::Relation),
];

impl SlotKind {
    fn parse(type_name: &str) -> Option<SlotKind> {
        SLOT_TYPES
            .iter()
            .find(|(name, _)| *name == type_name)
            .map(|&(_, kind)| kind)
    }

    fn type_name(self) -> &'static str {
        SLOT_TYPES
            .iter()
            .find(|(_, kind)| *kind == self)
            .map_or("", |&(name, _)| name)
    }
}

/// A constraint with its slots and nodes as indices (into the template's `params` and
/// `nodes`), resolved when the template is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Null(usize),
    NotEqual(usize, usize),
    OutputsDiffer(usize, usize),
}

/// What is wrong with a template folder; each names the file, and where it applies the
/// template (counted from 0 within its file) and node.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error(transparent)]
    Json(#[from] JsonError),
    #[error("{}: cannot list the template folder: {source}", path.display())]
    List { path: PathBuf, source: std::io::Error },
    #[error("no {file} in {} or its parent folder (the official generator keeps it next to its template folder)", folder.display())]
    Missing { folder: PathBuf, file: &'static str },
    #[error("{}: holds no template files (*.json)", path.display())]
    Empty { path: PathBuf },
    #[error("{}: dataset {found:?}, but only \"CLEVR-v1.0\" is supported", path.display())]
    Dataset { path: PathBuf, found: String },
    #[error("{}: type {kind}: {message}", path.display())]
    Type {
        path: PathBuf,
        kind: String,
        message: String,
    },
    #[error("{file}: template {template}: {message}")]
    Template {
        file: String,
        template: usize,
        message: String,
    },
    #[error("{file}: template {template}, node {node} ({function}): {message}")]
    Node {
        file: String,
        template: usize,
        node: usize,
        function: String,
        message: String,
    },
}

/// A template checked against the metadata, with what the generator needs to know
/// about it.
#[derive(Debug, Clone)]
pub struct LoadedTemplate {
    /// The file it came from (its name only) and its index there.
    pub file: String,
    pub index_in_file: usize,
    pub template: Template,
    /// Each slot's kind, in the order of `template.params`.
    pub slot_kinds: Vec<SlotKind>,
    /// Each node's slots, as indices into `template.params`.
    pub node_slots: Vec<Vec<usize>>,
    pub rules: Vec<Rule>,
    /// Every answer the template can give, for the answer balance.
    pub answers: Vec<String>,
}

/// A whole template folder: the templates in file-name order (their position is the
/// `question_family_index` written), the slot values and the synonyms.
#[derive(Debug, Clone)]
pub struct TemplateSet {
    pub templates: Vec<LoadedTemplate>,
    /// The attribute values by kind (in `AttributeKind::ALL` order) and the relations,
    /// parsed.
    attribute_values: [Vec<AttributeValue>; 4],
    pub relations: Vec<Relation>,
    pub synonyms: Synonyms,
}

impl TemplateSet {
    /// Reads every `*.json` in `folder` as a template file (`metadata.json` and
    /// `synonyms.json` excepted), with the metadata and synonyms found in `folder` or its
    /// parent.
    pub fn read_dir(folder: &Path) -> Result<TemplateSet, TemplateError> {
        let find = |file: &'static str| {
            [folder.join(file), folder.join("..").join(file)]
                .into_iter()
                .find(|p| p.is_file())
                .ok_or_else(|| TemplateError::Missing {
                    folder: folder.to_path_buf(),
                    file,
                })
        };
        let metadata_path = find("metadata.json")?;
        let metadata: Metadata = read_json(&metadata_path, "question generator metadata JSON")?;
        let synonyms: Synonyms = read_json(&find("synonyms.json")?, "question generator synonyms JSON")?;
        let list_error = |source| TemplateError::List {
            path: folder.to_path_buf(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(folder).map_err(list_error)? {
            let path = entry.map_err(list_error)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            if name.ends_with(".json") && name != "metadata.json" && name != "synonyms.json" {
                paths.push(path);
            }
        }
        if paths.is_empty() {
            return Err(TemplateError::Empty {
                path: folder.to_path_buf(),
            });
        }
        // The official generator takes the files in directory order, which is arbitrary;
        // file-name order makes the family indices reproducible.
        paths.sort();
        let mut files = Vec::with_capacity(paths.len());
        for path in paths {
            let templates: Vec<Template> = read_json(&path, "question template JSON")?;
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            files.push((name.to_string(), templates));
        }
        TemplateSet::new(&metadata_path, metadata, synonyms, files)
    }

    /// Checks `files` (file name, its templates) against `metadata`; `metadata_path` names
    /// the metadata in errors.
    pub fn new(
        metadata_path: &Path,
        metadata: Metadata,
        synonyms: Synonyms,
        files: Vec<(String, Vec<Template>)>,
    ) -> Result<TemplateSet, TemplateError> {
        if metadata.dataset != "CLEVR-v1.0" {
            return Err(TemplateError::Dataset {
                path: metadata_path.to_path_buf(),
                found: metadata.dataset,
            });
        }
        let values = slot_values(metadata_path, &metadata)?;
        let functions: HashMap<&str, &FunctionSpec> =
            metadata.functions.iter().map(|f| (f.name.as_str(), f)).collect();
        let mut templates = Vec::new();
        for (file, list) in files {
            for (index, template) in list.into_iter().enumerate() {
                let checked = check_template(&file, index, &template, &functions, &values)?;
                templates.push(LoadedTemplate {
                    file: file.clone(),
                    index_in_file: index,
                    template,
                    slot_kinds: checked.slot_kinds,
                    node_slots: checked.node_slots,
                    rules: checked.rules,
                    answers: checked.answers,
                });
            }
        }
        let attribute_values = AttributeKind::ALL.map(|kind| {
            let list = values
                .get(SlotKind::Attribute(kind).type_name())
                .map_or(&[][..], Vec::as_slice);
            list.iter().filter_map(|v| kind.parse_value(v).ok()).collect()
        });
        let relations = values
            .get("Relation")
            .map_or(&[][..], Vec::as_slice)
            .iter()
            .filter_map(|r| r.parse().ok())
            .collect();
        Ok(TemplateSet {
            templates,
            attribute_values,
            relations,
            synonyms,
        })
    }

    /// The values an attribute slot of `kind` takes, in the metadata's order.
    pub fn attribute_values(&self, kind: AttributeKind) -> &[AttributeValue] {
        let at = AttributeKind::ALL.iter().position(|&k| k == kind).unwrap_or(0);
        &self.attribute_values[at]
    }
}

/// The values of every slot kind, each checked to be one the executor knows.
fn slot_values(path: &Path, metadata: &Metadata) -> Result<HashMap<String, Vec<String>>, TemplateError> {
    let mut values = HashMap::new();
    for (kind, list) in &metadata.types {
        let Some(list) = list else { continue };
        let type_error = |message: String| TemplateError::Type {
            path: path.to_path_buf(),
            kind: kind.clone(),
            message,
        };
        let Some(slot) = SlotKind::parse(kind) else {
            return Err(type_error(
                "not a slot type this generator knows (Size, Color, Material, Shape, Relation)".into(),
            ));
        };
        if list.is_empty() {
            return Err(type_error("no values".into()));
        }
        for value in list {
            let known = match slot {
                SlotKind::Relation => value.parse::<Relation>().map(drop),
                SlotKind::Attribute(attribute) => attribute.parse_value(value).map(drop),
            };
            known.map_err(|e| type_error(e.to_string()))?;
        }
        values.insert(kind.clone(), list.clone());
    }
    Ok(values)
}

struct Checked {
    slot_kinds: Vec<SlotKind>,
    node_slots: Vec<Vec<usize>>,
    rules: Vec<Rule>,
    answers: Vec<String>,
}

fn check_template(
    file: &str,
    index: usize,
    template: &Template,
    functions: &HashMap<&str, &FunctionSpec>,
    values: &HashMap<String, Vec<String>>,
) -> Result<Checked, TemplateError> {
    let template_error = |message: String| TemplateError::Template {
        file: file.to_string(),
        template: index,
        message,
    };
    if template.text.is_empty() {
        return Err(template_error("no text".into()));
    }
    let mut param_types: HashMap<&str, &str> = HashMap::new();
    let mut slot_kinds = Vec::with_capacity(template.params.len());
    for param in &template.params {
        let slot = SlotKind::parse(&param.kind)
            .filter(|_| values.contains_key(&param.kind))
            .ok_or_else(|| {
                template_error(format!(
                    "slot {} has type {:?}, which the metadata gives no values",
                    param.name, param.kind
                ))
            })?;
        if param_types.insert(&param.name, &param.kind).is_some() {
            return Err(template_error(format!("slot {} is declared twice", param.name)));
        }
        slot_kinds.push(slot);
    }
    let mut output_types: Vec<&str> = Vec::with_capacity(template.nodes.len());
    for (n, node) in template.nodes.iter().enumerate() {
        let node_error = |message: String| TemplateError::Node {
            file: file.to_string(),
            template: index,
            node: n,
            function: node.function.clone(),
            message,
        };
        let spec = functions
            .get(node.function.as_str())
            .ok_or_else(|| node_error("not a function of the metadata".into()))?;
        if node.inputs.len() != spec.inputs.len() {
            return Err(node_error(format!(
                "takes {} inputs, has {}",
                spec.inputs.len(),
                node.inputs.len()
            )));
        }
        for (&input, wanted) in node.inputs.iter().zip(&spec.inputs) {
            let found = output_types
                .get(input)
                .ok_or_else(|| node_error(format!("input {input} is not an earlier node")))?;
            if found != wanted {
                return Err(node_error(format!(
                    "input {input} returns {found}, {wanted} wanted"
                )));
            }
        }
        if node.side_inputs.len() != spec.side_inputs.len() {
            return Err(node_error(format!(
                "takes {} slots, has {}",
                spec.side_inputs.len(),
                node.side_inputs.len()
            )));
        }
        for (name, wanted) in node.side_inputs.iter().zip(&spec.side_inputs) {
            match param_types.get(name.as_str()) {
                None => {
                    return Err(node_error(format!(
                        "slot {name} is not among the template's params"
                    )))
                }
                Some(found) if found != wanted => {
                    return Err(node_error(format!(
                        "slot {name} has type {found}, {wanted} wanted"
                    )))
                }
                Some(_) => {}
            }
        }
        if !COMPOSITES.contains(&node.function.as_str()) {
            // The executor must run it: try it with the first value of each slot.
            let sample: Vec<String> = spec
                .side_inputs
                .iter()
                .filter_map(|kind| values.get(kind).and_then(|v| v.first()).cloned())
                .collect();
            let program_node = ProgramNode {
                function: node.function.clone(),
                inputs: node.inputs.clone(),
                value_inputs: sample,
            };
            Function::parse(&program_node)
                .map_err(|e| node_error(format!("the executor cannot run it: {e}")))?;
        }
        output_types.push(&spec.output);
    }
    if template.nodes.first().is_none_or(|node| !node.inputs.is_empty()) {
        return Err(template_error(
            "the first node must take no inputs (a `scene`)".into(),
        ));
    }
    let slot = |name: &str| template.params.iter().position(|p| p.name == name);
    let node_slots = template
        .nodes
        .iter()
        .map(|node| node.side_inputs.iter().filter_map(|name| slot(name)).collect())
        .collect();
    let slot_of = |name: &str| {
        slot(name).ok_or_else(|| {
            template_error(format!(
                "constraint on slot {name}, which is not among the params"
            ))
        })
    };
    let mut rules = Vec::with_capacity(template.constraints.len());
    for constraint in &template.constraints {
        rules.push(match constraint {
            Constraint::Null([name]) => Rule::Null(slot_of(name)?),
            Constraint::NotEqual([a, b]) => Rule::NotEqual(slot_of(a)?, slot_of(b)?),
            &Constraint::OutputsDiffer([i, j]) if i.max(j) < template.nodes.len() => {
                Rule::OutputsDiffer(i, j)
            }
            Constraint::OutputsDiffer(pair) => {
                return Err(template_error(format!(
                    "OUT_NEQ on nodes {pair:?}; the template has {} nodes",
                    template.nodes.len()
                )));
            }
        });
    }
    let answer_type = *output_types.last().unwrap_or(&"");
    let answers = match answer_type {
        "Bool" => vec!["yes".to_string(), "no".to_string()],
        // CLEVR scenes hold at most ten objects.
        "Integer" => (0..=10).map(|n| n.to_string()).collect(),
        kind => match values.get(kind) {
            Some(list) if kind != "Relation" => list.clone(),
            _ => {
                return Err(template_error(format!(
                    "the last node returns {kind}, which is not an answer"
                )))
            }
        },
    };
    Ok(Checked {
        slot_kinds,
        node_slots,
        rules,
        answers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn builtin_folder() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates")
            .join("families")
    }

    /// A copy of the built-in metadata and synonyms next to `files` (name, JSON text).
    fn folder_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        for name in ["metadata.json", "synonyms.json"] {
            fs::copy(templates.join(name), dir.path().join(name)).unwrap();
        }
        for (name, text) in files {
            fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const SCENE_AND_QUERY: &str = r#"[{"text": ["What color is the <Z> <M> <S>?"],
        "nodes": [{"type": "scene", "inputs": []},
                  {"type": "filter_unique", "inputs": [0], "side_inputs": ["<Z>", "<C>", "<M>", "<S>"]},
                  {"type": "query_color", "inputs": [1]}],
        "params": [{"type": "Size", "name": "<Z>"}, {"type": "Color", "name": "<C>"},
                   {"type": "Material", "name": "<M>"}, {"type": "Shape", "name": "<S>"}],
        "constraints": [{"type": "NULL", "params": ["<C>"]}]}]"#;

    fn error_of(files: &[(&str, &str)]) -> String {
        let dir = folder_with(files);
        TemplateSet::read_dir(dir.path()).unwrap_err().to_string()
    }

    #[test]
    fn the_builtin_folder_reads_as_the_compiled_in_set() {
        let read = TemplateSet::read_dir(&builtin_folder()).unwrap();
        let builtin = crate::templates::TemplateSet::builtin();
        assert_eq!(read.templates.len(), 90);
        assert_eq!(builtin.templates.len(), 90);
        for (a, b) in read.templates.iter().zip(&builtin.templates) {
            assert_eq!(
                (&a.file, a.index_in_file, &a.template),
                (&b.file, b.index_in_file, &b.template)
            );
        }
        let files: std::collections::BTreeSet<&str> =
            read.templates.iter().map(|t| t.file.as_str()).collect();
        assert_eq!(files.len(), 9, "{files:?}");
        assert_eq!(read.synonyms, builtin.synonyms);
    }

    #[test]
    fn a_valid_template_reads_with_its_answers() {
        let dir = folder_with(&[("mine.json", SCENE_AND_QUERY)]);
        let set = TemplateSet::read_dir(dir.path()).unwrap();
        assert_eq!(set.templates.len(), 1);
        assert_eq!(set.templates[0].answers.len(), 8, "the eight colours");
        assert_eq!(set.relations.len(), 4);
    }

    #[test]
    fn mistakes_name_file_template_and_node() {
        let unknown = SCENE_AND_QUERY.replace("query_color", "query_weight");
        let shown = error_of(&[("a.json", SCENE_AND_QUERY), ("b.json", &unknown)]);
        assert!(
            shown.starts_with("b.json: template 0, node 2 (query_weight)"),
            "{shown}"
        );
        assert!(shown.contains("not a function of the metadata"), "{shown}");

        let wrong_slot = SCENE_AND_QUERY.replace(
            r#"{"type": "Color", "name": "<C>"}"#,
            r#"{"type": "Shape", "name": "<C>"}"#,
        );
        let shown = error_of(&[("c.json", &wrong_slot)]);
        assert!(
            shown.contains(
                "c.json: template 0, node 1 (filter_unique): slot <C> has type Shape, Color wanted"
            ),
            "{shown}"
        );

        let forward = SCENE_AND_QUERY.replace(r#""inputs": [1]}"#, r#""inputs": [5]}"#);
        let shown = error_of(&[("d.json", &forward)]);
        assert!(
            shown.contains("node 2 (query_color): input 5 is not an earlier node"),
            "{shown}"
        );

        let wrong_type = SCENE_AND_QUERY.replace(
            r#""query_color", "inputs": [1]"#,
            r#""query_color", "inputs": [0]"#,
        );
        let shown = error_of(&[("e.json", &wrong_type)]);
        assert!(
            shown.contains("input 0 returns ObjectSet, Object wanted"),
            "{shown}"
        );

        let bad_constraint = SCENE_AND_QUERY.replace(r#""params": ["<C>"]"#, r#""params": ["<X>"]"#);
        let shown = error_of(&[("f.json", &bad_constraint)]);
        assert!(
            shown.contains("f.json: template 0: constraint on slot <X>"),
            "{shown}"
        );

        let shown = error_of(&[("g.json", "[{\"text\": [\"x\"],\n \"nodes\": 7}]")]);
        assert!(
            shown.contains("g.json:2:") && shown.contains("[0].nodes"),
            "{shown}"
        );
    }

    #[test]
    fn metadata_is_found_next_to_the_folder_or_reported_missing() {
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("templates");
        fs::create_dir(&inner).unwrap();
        fs::write(inner.join("a.json"), SCENE_AND_QUERY).unwrap();
        let shown = TemplateSet::read_dir(&inner).unwrap_err().to_string();
        assert!(
            shown.contains("no metadata.json in") && shown.contains("templates"),
            "{shown}"
        );

        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        fs::copy(templates.join("metadata.json"), dir.path().join("metadata.json")).unwrap();
        fs::copy(templates.join("synonyms.json"), dir.path().join("synonyms.json")).unwrap();
        assert_eq!(TemplateSet::read_dir(&inner).unwrap().templates.len(), 1);

        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        let shown = TemplateSet::read_dir(&empty).unwrap_err().to_string();
        assert!(shown.contains("holds no template files"), "{shown}");
    }

    #[test]
    fn metadata_for_another_dataset_or_unknown_values_is_refused() {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
        let metadata = fs::read_to_string(templates.join("metadata.json")).unwrap();
        let dir = folder_with(&[("a.json", SCENE_AND_QUERY)]);
        fs::write(
            dir.path().join("metadata.json"),
            metadata.replace("CLEVR-v1.0", "CLEVR-v2"),
        )
        .unwrap();
        let shown = TemplateSet::read_dir(dir.path()).unwrap_err().to_string();
        assert!(shown.contains("dataset \"CLEVR-v2\""), "{shown}");

        fs::write(
            dir.path().join("metadata.json"),
            metadata.replace("\"gray\"", "\"orange\""),
        )
        .unwrap();
        let shown = TemplateSet::read_dir(dir.path()).unwrap_err().to_string();
        assert!(
            shown.contains("type Color") && shown.contains("\"orange\""),
            "{shown}"
        );
    }
}
