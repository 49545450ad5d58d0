//! The paper's five question-type columns, read off a program's last function.

use crate::question::ProgramNode;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Question type as reported in the FiLM paper's results table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum QuestionType {
    Exist,
    Count,
    /// `equal_integer`, `less_than`, `greater_than`.
    CompareNumbers,
    /// `query_*`.
    QueryAttribute,
    /// `equal_color`, `equal_shape`, `equal_size`, `equal_material`.
    CompareAttribute,
}

impl QuestionType {
    /// In the order of the paper's table columns.
    pub const ALL: [QuestionType; 5] = [
        QuestionType::Exist,
        QuestionType::Count,
        QuestionType::CompareNumbers,
        QuestionType::QueryAttribute,
        QuestionType::CompareAttribute,
    ];

    /// The type of a program, from its last function; `None` for an empty program
    /// or a last function that is not one of CLEVR's answer functions.
    pub fn of_program(program: &[ProgramNode]) -> Option<QuestionType> {
        QuestionType::of_function(&program.last()?.function)
    }

    /// The type of a question whose program ends in `function`.
    pub fn of_function(function: &str) -> Option<QuestionType> {
        match function {
            "exist" => Some(QuestionType::Exist),
            "count" => Some(QuestionType::Count),
            "equal_integer" | "less_than" | "greater_than" => Some(QuestionType::CompareNumbers),
            "query_color" | "query_shape" | "query_size" | "query_material" => {
                Some(QuestionType::QueryAttribute)
            }
            "equal_color" | "equal_shape" | "equal_size" | "equal_material" => {
                Some(QuestionType::CompareAttribute)
            }
            _ => None,
        }
    }

    /// Index of the column (0..5), used as the batch's question-type id.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            QuestionType::Exist => "Exist",
            QuestionType::Count => "Count",
            QuestionType::CompareNumbers => "Compare Numbers",
            QuestionType::QueryAttribute => "Query Attribute",
            QuestionType::CompareAttribute => "Compare Attribute",
        }
    }
}

impl fmt::Display for QuestionType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_function_decides_the_column() {
        let program = |last: &str| vec![ProgramNode::new("scene", &[]), ProgramNode::new(last, &[0])];
        assert_eq!(
            QuestionType::of_program(&program("exist")),
            Some(QuestionType::Exist)
        );
        assert_eq!(
            QuestionType::of_program(&program("count")),
            Some(QuestionType::Count)
        );
        assert_eq!(
            QuestionType::of_program(&program("less_than")),
            Some(QuestionType::CompareNumbers)
        );
        assert_eq!(
            QuestionType::of_program(&program("query_size")),
            Some(QuestionType::QueryAttribute)
        );
        assert_eq!(
            QuestionType::of_program(&program("equal_material")),
            Some(QuestionType::CompareAttribute)
        );
        assert_eq!(QuestionType::of_program(&program("unique")), None);
        assert_eq!(QuestionType::of_program(&[]), None);
        for (i, t) in QuestionType::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
        }
    }
}
