//! The `extern "C" __global__` kernels of a preprocessed CUDA C source and their
//! parameters, read from the text: the names the generated launchers call and the types
//! they cast each argument to. The C++ compiler, not this parser, then says what each
//! type is (`ParamInfo` in prelude.hpp), so macro-generated kernels and typedefs work.

use crate::EmulatorError;

/// One parameter: its name in the source and its C type as written (without
/// `__restrict__`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub c_type: String,
}

/// One `extern "C" __global__` function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
}

const MARKER: &str = "__global__";

/// Every `extern "C" __global__ void name(...)` of `code`, preprocessed (no comments, macros
/// expanded); `source` names the file in errors.
pub fn kernels(source: &str, code: &str) -> Result<Vec<Kernel>, EmulatorError> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARKER) {
        let start = code.len() - rest.len() + at;
        let before = code[..start].trim_end();
        let after = &code[start + MARKER.len()..];
        let context: String = after.chars().take(60).collect();
        let error = |detail: String| EmulatorError::Signature {
            source_name: source.to_string(),
            detail: format!(
                "{detail}, at `__global__{}`",
                context.split_whitespace().collect::<Vec<_>>().join(" ")
            ),
        };
        if !before.ends_with("extern \"C\"") {
            return Err(error(
                "a __global__ function without extern \"C\" (its name would be mangled)".into(),
            ));
        }
        let after = after
            .trim_start()
            .strip_prefix("void")
            .ok_or_else(|| error("a kernel must return void".into()))?;
        let open = after
            .find('(')
            .ok_or_else(|| error("no parameter list after the kernel's name".into()))?;
        let name = after[..open].trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(error(format!("`{name}` is not a plain kernel name")));
        }
        let close = after[open..]
            .find(')')
            .ok_or_else(|| error(format!("{name}: the parameter list does not end")))?;
        let list = after[open + 1..open + close].trim();
        rest = &after[open + close..];
        // A prototype and its definition name the same kernel: one launcher.
        if found.iter().any(|k: &Kernel| k.name == name) {
            continue;
        }
        let params = match list {
            "" | "void" => Vec::new(),
            _ => list
                .split(',')
                .map(|p| param(p).map_err(|detail| error(format!("{name}: {detail}"))))
                .collect::<Result<Vec<_>, _>>()?,
        };
        found.push(Kernel {
            name: name.to_string(),
            params,
        });
    }
    Ok(found)
}

/// `const float* __restrict__ x` → `x` of type `const float*`.
fn param(text: &str) -> Result<Param, String> {
    let spaced = text.replace('*', " * ");
    let mut tokens: Vec<&str> = spaced
        .split_whitespace()
        .filter(|t| *t != "__restrict__")
        .collect();
    let name = tokens
        .pop()
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .ok_or_else(|| format!("cannot read the parameter `{}`", text.trim()))?;
    if tokens.is_empty() {
        return Err(format!("the parameter `{name}` has no type"));
    }
    Ok(Param {
        name: name.to_string(),
        c_type: tokens.join(" ").replace(" *", "*"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_types_across_lines() {
        let code = "__device__ float f(float x) { return x; }\n\
                    extern \"C\" __global__ void scale(\n    const float* __restrict__ x,\n    \
                    float *y,\n    unsigned long long len,\n    Num<float>::Acc* partial, int flag)\n{\n}\n\
                    extern \"C\" __global__ void fill() {}\n";
        let found = kernels("t.cu", code).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "scale");
        let types: Vec<&str> = found[0].params.iter().map(|p| p.c_type.as_str()).collect();
        assert_eq!(
            types,
            [
                "const float*",
                "float*",
                "unsigned long long",
                "Num<float>::Acc*",
                "int"
            ]
        );
        assert_eq!(found[0].params[1].name, "y");
        assert_eq!(found[1].name, "fill");
        assert!(found[1].params.is_empty());
    }

    #[test]
    fn a_prototype_and_its_definition_are_one_kernel() {
        let code = "extern \"C\" __global__ void k(float* x);\nextern \"C\" __global__ void k(float* x) {}";
        assert_eq!(kernels("p.cu", code).unwrap().len(), 1);
    }

    #[test]
    fn refuses_kernels_it_cannot_call() {
        let mangled = kernels("m.cu", "__global__ void k(float* x) {}").unwrap_err();
        assert!(
            mangled.to_string().contains("m.cu") && mangled.to_string().contains("extern \"C\""),
            "{mangled}"
        );
        let returns = kernels("r.cu", "extern \"C\" __global__ int k(float* x) {}").unwrap_err();
        assert!(returns.to_string().contains("return void"), "{returns}");
    }
}
