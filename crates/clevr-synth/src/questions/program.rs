//! Builds CLEVR functional programs node by node, in the release format.

use clevr::ProgramNode;

#[derive(Debug, Default)]
pub struct ProgramBuilder {
    nodes: Vec<ProgramNode>,
}

impl ProgramBuilder {
    /// Appends a node and returns its index.
    pub fn node(&mut self, function: &str, inputs: &[usize], value: Option<&str>) -> usize {
        self.nodes.push(match value {
            Some(v) => ProgramNode::with_value(function, inputs, v),
            None => ProgramNode::new(function, inputs),
        });
        self.nodes.len() - 1
    }

    /// A fresh `scene` node (every object), as CLEVR writes one per branch.
    pub fn scene(&mut self) -> usize {
        self.node("scene", &[], None)
    }

    pub fn finish(self) -> Vec<ProgramNode> {
        self.nodes
    }
}
