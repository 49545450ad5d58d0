//! The `extern "C" __global__` kernels of a CUDA C source and their parameter types, read
//! from the text: what the generated launch wrappers cast each argument to, and what
//! [`crate::Module::launch`] checks the caller's arguments against.

use crate::EmulatorError;

/// A kernel parameter's type, as far as the emulator passes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamType {
    /// `const float*`: a buffer the kernel reads.
    ConstF32Ptr,
    /// `float*`: a buffer the kernel may write.
    F32Ptr,
    /// `unsigned int`
    U32,
    /// `unsigned long long`
    U64,
    /// `int`
    I32,
    /// `float`
    F32,
}

impl ParamType {
    fn parse(c_type: &str) -> Option<ParamType> {
        Some(match c_type {
            "const float*" | "float const*" => ParamType::ConstF32Ptr,
            "float*" => ParamType::F32Ptr,
            "unsigned int" | "unsigned" => ParamType::U32,
            "unsigned long long" | "unsigned long long int" => ParamType::U64,
            "int" => ParamType::I32,
            "float" => ParamType::F32,
            _ => return None,
        })
    }

    /// The C type the wrapper casts the argument's slot to.
    pub(crate) fn c_type(self) -> &'static str {
        match self {
            ParamType::ConstF32Ptr => "const float*",
            ParamType::F32Ptr => "float*",
            ParamType::U32 => "unsigned int",
            ParamType::U64 => "unsigned long long",
            ParamType::I32 => "int",
            ParamType::F32 => "float",
        }
    }
}

/// One parameter: its name in the source and its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub ty: ParamType,
}

/// One `extern "C" __global__` function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
}

const MARKER: &str = "__global__";

/// Every `extern "C" __global__ void name(...)` of `code` (`source` names the file in
/// errors, with the line).
pub fn kernels(source: &str, code: &str) -> Result<Vec<Kernel>, EmulatorError> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(MARKER) {
        let start = code.len() - rest.len() + at;
        let line = code[..start].lines().count().max(1);
        let error = |detail: String| EmulatorError::Signature {
            source_name: source.to_string(),
            line,
            detail,
        };
        let before = code[..start].trim_end();
        if !before.ends_with("extern \"C\"") {
            return Err(error(
                "a __global__ function without extern \"C\" (its name would be mangled)".into(),
            ));
        }
        let after = &code[start + MARKER.len()..];
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
        let params = after[open + 1..open + close]
            .split(',')
            .map(|p| param(p).map_err(|detail| error(format!("{name}: {detail}"))))
            .collect::<Result<Vec<_>, _>>()?;
        found.push(Kernel {
            name: name.to_string(),
            params,
        });
        rest = &after[open + close..];
    }
    Ok(found)
}

/// `const float* __restrict__ x` → (`x`, ConstF32Ptr).
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
    let c_type = tokens.join(" ").replace(" *", "*");
    let ty = ParamType::parse(&c_type).ok_or_else(|| {
        format!(
            "parameter `{}` has type `{c_type}`, which the emulator does not pass \
             (const float*, float*, unsigned int, unsigned long long, int, float)",
            name
        )
    })?;
    Ok(Param {
        name: name.to_string(),
        ty,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_and_types_across_lines() {
        let code = "// a comment\n#define N 4\n__device__ float f(float x) { return x; }\n\
                    extern \"C\" __global__ void scale(\n    const float* __restrict__ x,\n    \
                    float *y,\n    unsigned long long len,\n    float factor, int flag, unsigned int n)\n{\n}\n\
                    extern \"C\" __global__ void fill(float* out) {}\n";
        let found = kernels("t.cu", code).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].name, "scale");
        let types: Vec<ParamType> = found[0].params.iter().map(|p| p.ty).collect();
        use ParamType::*;
        assert_eq!(types, [ConstF32Ptr, F32Ptr, U64, F32, I32, U32]);
        assert_eq!(found[0].params[1].name, "y");
        assert_eq!(found[1].name, "fill");
    }

    #[test]
    fn refuses_what_it_cannot_pass_naming_the_line() {
        let code = "\n\nextern \"C\" __global__ void k(const double* x) {}\n";
        let error = kernels("k.cu", code).unwrap_err().to_string();
        assert!(error.contains("k.cu:3"), "{error}");
        assert!(error.contains("const double*"), "{error}");
        let mangled = kernels("m.cu", "__global__ void k(float* x) {}").unwrap_err();
        assert!(mangled.to_string().contains("extern \"C\""), "{mangled}");
    }
}
