//! Compiling a kernel source for the CPU and launching its kernels.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::path::Path;
use std::process::Command;

use crate::buffer::Element;
use crate::signature::{self, Kernel};
use crate::{DeviceBuffer, EmulatorError};

const PRELUDE: &str = include_str!("prelude.hpp");
/// The generated launcher of kernel `k` is `LAUNCHER` + `k`, its parameter table `PARAMS` + `k`.
const LAUNCHER: &str = "cuda_emulator_launch_";
const PARAMS: &str = "cuda_emulator_params_";
/// CUDA's limits on threads per block, on a grid's y and z extents, and on shared memory
/// per block (Hopper's, with the opt-in attribute).
const MAX_BLOCK: u32 = 1024;
const MAX_GRID_YZ: u32 = 65_535;
const MAX_SHARED_BYTES: u32 = 227 * 1024;

/// (grid and block extents, dynamic shared bytes, argument slots, message buffer and its
/// capacity) → 0, or 1 with the message written.
type Launcher = unsafe extern "C" fn(*const u32, u32, *mut *mut c_void, *mut u8, u32) -> i32;
/// Room for a deadlock report.
const MESSAGE_BYTES: usize = 1024;

/// The compiler's view of one parameter type: `ParamInfo` in prelude.hpp.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
struct ParamInfo {
    size: u32,
    is_pointer: i32,
    pointee_size: u32,
    is_float: i32,
    is_signed: i32,
}

/// A kernel source compiled for the CPU.
pub struct Module {
    source_name: String,
    kernels: Vec<(Kernel, Vec<ParamInfo>)>,
    library: libloading::Library,
    // The compiled library's folder, removed with the module.
    _dir: tempfile::TempDir,
}

/// A grid's or block's extent in x, y and z.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dim3(pub u32, pub u32, pub u32);

impl From<u32> for Dim3 {
    fn from(x: u32) -> Dim3 {
        Dim3(x, 1, 1)
    }
}

impl From<(u32, u32, u32)> for Dim3 {
    fn from((x, y, z): (u32, u32, u32)) -> Dim3 {
        Dim3(x, y, z)
    }
}

/// One kernel argument. As with a CUDA launch, a buffer is passed as an address, and the
/// kernel's parameter type (`const float*` or `float*`) says whether it may write there.
#[derive(Clone, Copy)]
pub struct Arg<'a> {
    value: Value,
    _buffers: PhantomData<&'a ()>,
}

#[derive(Clone, Copy, Debug)]
enum Value {
    Address {
        address: *mut c_void,
        element_size: usize,
        is_float: bool,
    },
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
}

impl Value {
    fn describe(self) -> String {
        match self {
            Value::Address {
                element_size,
                is_float,
                ..
            } => format!(
                "the address of {}-byte {} values",
                element_size,
                if is_float {
                    "floating-point"
                } else {
                    "half-precision (raw)"
                }
            ),
            Value::U32(_) => "u32".into(),
            Value::U64(_) => "u64".into(),
            Value::I32(_) => "i32".into(),
            Value::F32(_) => "f32".into(),
        }
    }

    fn fits(self, p: ParamInfo) -> bool {
        let scalar = |size: u32, float: bool, signed: bool| {
            p.is_pointer == 0 && p.size == size && (p.is_float != 0) == float && (p.is_signed != 0) == signed
        };
        match self {
            Value::Address {
                element_size,
                is_float,
                ..
            } => {
                p.is_pointer != 0 && p.pointee_size as usize == element_size && (p.is_float != 0) == is_float
            }
            Value::U32(_) => scalar(4, false, false),
            Value::U64(_) => scalar(8, false, false),
            Value::I32(_) => scalar(4, false, true),
            Value::F32(_) => scalar(4, true, true),
        }
    }
}

impl<'a> Arg<'a> {
    fn new(value: Value) -> Arg<'a> {
        Arg {
            value,
            _buffers: PhantomData,
        }
    }

    /// The address of `buffer`'s first value.
    pub fn buffer<T: Element>(buffer: &'a DeviceBuffer<T>) -> Arg<'a> {
        Arg::at(buffer, 0)
    }

    /// The address of `buffer`'s value `offset`.
    pub fn at<T: Element>(buffer: &'a DeviceBuffer<T>, offset: usize) -> Arg<'a> {
        Arg::new(Value::Address {
            address: buffer.address(offset).cast(),
            element_size: std::mem::size_of::<T>(),
            is_float: T::IS_FLOAT,
        })
    }
}

impl From<u32> for Arg<'_> {
    fn from(v: u32) -> Self {
        Arg::new(Value::U32(v))
    }
}

impl From<u64> for Arg<'_> {
    fn from(v: u64) -> Self {
        Arg::new(Value::U64(v))
    }
}

impl From<i32> for Arg<'_> {
    fn from(v: i32) -> Self {
        Arg::new(Value::I32(v))
    }
}

impl From<f32> for Arg<'_> {
    fn from(v: f32) -> Self {
        Arg::new(Value::F32(v))
    }
}

/// One argument's bytes, as the generated launcher reads them: `*(T*)args[i]`.
#[repr(C)]
#[derive(Clone, Copy)]
union Slot {
    address: *mut c_void,
    u32_: u32,
    u64_: u64,
    i32_: i32,
    f32_: f32,
}

impl Module {
    /// Compiles `code` (the CUDA C source called `source_name`) for the CPU with `$CXX`, else
    /// `c++`, and loads it.
    pub fn compile(source_name: &str, code: &str) -> Result<Module, EmulatorError> {
        let compiler = std::env::var("CXX").unwrap_or_else(|_| "c++".to_string());
        let load_error = |detail: String| EmulatorError::Load {
            source_name: source_name.to_string(),
            detail,
        };
        let dir = tempfile::tempdir().map_err(|e| load_error(format!("a temporary folder: {e}")))?;
        let write = |name: &str, text: &str| {
            std::fs::write(dir.path().join(name), text)
                .map_err(|e| load_error(format!("writing {name} into {}: {e}", dir.path().display())))
        };
        // The source under a fixed name, so that the compiler's messages point into it by
        // its line numbers (and are renamed back below).
        write("kernels.cu.inc", &with_shared_memory(code))?;
        let expanded = run(
            &compiler,
            source_name,
            "preprocess",
            dir.path(),
            &["-E", "-P", "-x", "c++", "-DCUDA_EMULATOR=1", "kernels.cu.inc"],
        )?;
        let kernels = signature::kernels(source_name, &expanded)?;
        write("prelude.hpp", PRELUDE)?;
        write("emulated.cpp", &translation_unit(source_name, &kernels))?;
        run(
            &compiler,
            source_name,
            "compile",
            dir.path(),
            &[
                "-std=c++20",
                "-O2",
                "-fPIC",
                "-shared",
                "-pthread",
                "-o",
                "emulated.so",
                "emulated.cpp",
            ],
        )?;
        let path = dir.path().join("emulated.so");
        // SAFETY: a library just built from the project's kernel source and the generated
        // launchers; loading it runs no initialisers beyond C++'s for the prelude's globals.
        let library = unsafe { libloading::Library::new(&path) }
            .map_err(|e| load_error(format!("{}: {e}", path.display())))?;
        let kernels = kernels
            .into_iter()
            .map(|kernel| {
                let symbol = format!("{PARAMS}{}", kernel.name);
                // SAFETY: the generated table has one entry per parameter plus a sentinel.
                let table = unsafe { library.get::<*const ParamInfo>(symbol.as_bytes()) }
                    .map_err(|e| load_error(format!("{symbol}: {e}")))?;
                let infos = (0..kernel.params.len())
                    // SAFETY: as above; the entries are constants of the loaded library.
                    .map(|i| unsafe { *(*table).add(i) })
                    .collect();
                Ok((kernel, infos))
            })
            .collect::<Result<_, EmulatorError>>()?;
        Ok(Module {
            source_name: source_name.to_string(),
            kernels,
            library,
            _dir: dir,
        })
    }

    /// The kernels found in the source.
    pub fn kernels(&self) -> impl Iterator<Item = &Kernel> {
        self.kernels.iter().map(|(k, _)| k)
    }

    /// Runs `kernel` on `grid` blocks of `block` threads and returns when it has finished.
    /// The arguments must match its parameters in number and type.
    pub fn launch(
        &self,
        kernel: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
        args: &[Arg<'_>],
    ) -> Result<(), EmulatorError> {
        self.launch_with_shared(kernel, grid, block, 0, args)
    }

    /// [`Module::launch`] with `shared_bytes` of dynamic shared memory (`extern __shared__`),
    /// which starts out all-ones bytes (NaN in every float width), as uninitialised.
    pub fn launch_with_shared(
        &self,
        kernel: &str,
        grid: impl Into<Dim3>,
        block: impl Into<Dim3>,
        shared_bytes: u32,
        args: &[Arg<'_>],
    ) -> Result<(), EmulatorError> {
        let (grid, block) = (grid.into(), block.into());
        let Some((signature, infos)) = self.kernels.iter().find(|(k, _)| k.name == kernel) else {
            return Err(EmulatorError::UnknownKernel {
                source_name: self.source_name.clone(),
                kernel: kernel.to_string(),
                known: self
                    .kernels()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let refuse = |detail: String| EmulatorError::Arguments {
            kernel: kernel.to_string(),
            detail,
        };
        let Dim3(bx, by, bz) = block;
        let Dim3(gx, gy, gz) = grid;
        let threads = bx as u64 * by as u64 * bz as u64;
        if [bx, by, bz, gx, gy, gz].contains(&0)
            || threads > MAX_BLOCK as u64
            || gy > MAX_GRID_YZ
            || gz > MAX_GRID_YZ
        {
            return Err(refuse(format!(
                "a launch of {grid:?} blocks of {block:?} threads (CUDA takes 1 to {MAX_BLOCK} threads \
                 per block and 1 to {MAX_GRID_YZ} blocks in y and z)"
            )));
        }
        if shared_bytes > MAX_SHARED_BYTES {
            return Err(refuse(format!(
                "{shared_bytes} bytes of dynamic shared memory (a block has at most {MAX_SHARED_BYTES})"
            )));
        }
        if args.len() != signature.params.len() {
            return Err(refuse(format!(
                "{} arguments for {} parameters",
                args.len(),
                signature.params.len()
            )));
        }
        for (i, ((arg, param), info)) in args.iter().zip(&signature.params).zip(infos).enumerate() {
            if !arg.value.fits(*info) {
                return Err(refuse(format!(
                    "argument {i} is {}, but parameter `{}` is `{}`",
                    arg.value.describe(),
                    param.name,
                    param.c_type
                )));
            }
        }
        let mut slots: Vec<Slot> = args
            .iter()
            .map(|arg| match arg.value {
                Value::Address { address, .. } => Slot { address },
                Value::U32(u32_) => Slot { u32_ },
                Value::U64(u64_) => Slot { u64_ },
                Value::I32(i32_) => Slot { i32_ },
                Value::F32(f32_) => Slot { f32_ },
            })
            .collect();
        let mut pointers: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut Slot).cast()).collect();
        let symbol = format!("{LAUNCHER}{kernel}");
        // SAFETY: the launcher was generated with this signature for this kernel.
        let launcher =
            unsafe { self.library.get::<Launcher>(symbol.as_bytes()) }.map_err(|e| EmulatorError::Load {
                source_name: self.source_name.clone(),
                detail: format!("{symbol}: {e}"),
            })?;
        let dims = [gx, gy, gz, bx, by, bz];
        let mut message = [0u8; MESSAGE_BYTES];
        // SAFETY: one slot per parameter, each holding a value the compiler's view of the
        // parameter type accepts (checked above); addresses point into live buffers borrowed
        // by `args` for the call; the message buffer has the capacity passed.
        let status = unsafe {
            launcher(
                dims.as_ptr(),
                shared_bytes,
                pointers.as_mut_ptr(),
                message.as_mut_ptr(),
                MESSAGE_BYTES as u32,
            )
        };
        if status != 0 {
            let end = message.iter().position(|&b| b == 0).unwrap_or(MESSAGE_BYTES);
            return Err(EmulatorError::Deadlock {
                kernel: kernel.to_string(),
                detail: String::from_utf8_lossy(&message[..end]).into_owned(),
            });
        }
        Ok(())
    }
}

/// Shared-memory declarations rewritten into what the prelude provides, on one line each so
/// that line numbers stay:
/// - `extern __shared__ T name[];` (dynamic shared memory, which C++ cannot declare)
///   becomes a pointer to the launch's buffer (`dynamic_shared`);
/// - `__shared__ T name[N];` becomes a pointer to the block's copy of the array
///   (`shared_array`), which is refilled with NaN bytes at every block start.
///
/// `__align__(n)` in either is dropped (the buffers are 8-byte aligned). Other forms stay
/// function statics (`#define __shared__ static`).
fn with_shared_memory(code: &str) -> String {
    const MARKER: &str = "__shared__";
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    let mut site = 0;
    while let Some(at) = rest.find(MARKER) {
        let before = &rest[..at];
        let tail = &rest[at + MARKER.len()..];
        let dynamic = before.trim_end().ends_with("extern");
        let parsed = tail.find(';').and_then(|end| {
            let declarator = strip_align(tail[..end].trim());
            let (declarator, count) = match dynamic {
                true => (declarator.strip_suffix("[]")?.to_string(), None),
                false => {
                    let open = declarator.rfind('[')?;
                    let count = declarator[open + 1..].strip_suffix(']')?.trim().to_string();
                    (
                        declarator[..open].to_string(),
                        Some(count).filter(|c| !c.is_empty()),
                    )
                }
            };
            let (c_type, name) = declarator.trim_end().rsplit_once(char::is_whitespace)?;
            let name_ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            (name_ok && (dynamic || count.is_some()))
                .then(|| (end, c_type.trim().to_string(), name.to_string(), count))
        });
        match parsed {
            Some((end, c_type, name, count)) => {
                let kept = match dynamic {
                    true => before.trim_end().strip_suffix("extern").unwrap_or(before),
                    false => before,
                };
                out.push_str(kept);
                match count {
                    None => {
                        let _ = write!(
                            out,
                            "{c_type}* {name} = reinterpret_cast<{c_type}*>(::cuda_emulator::dynamic_shared);"
                        );
                    }
                    Some(count) => {
                        let _ = write!(
                            out,
                            "{c_type}* {name} = ::cuda_emulator::shared_array<{c_type}, {site}>({count});"
                        );
                        site += 1;
                    }
                }
                rest = &tail[end + 1..];
            }
            None => {
                out.push_str(before);
                out.push_str(MARKER);
                rest = tail;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `__align__(16) unsigned char` → `unsigned char`.
fn strip_align(declarator: &str) -> String {
    match declarator.find("__align__(") {
        Some(at) => match declarator[at..].find(')') {
            Some(close) => format!("{}{}", &declarator[..at], &declarator[at + close + 1..])
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            None => declarator.to_string(),
        },
        None => declarator.to_string(),
    }
}

/// The C++ translation unit: the prelude, the source, and per kernel a launcher that
/// unpacks `args` into its parameters and a table of the parameters' types.
fn translation_unit(source_name: &str, kernels: &[Kernel]) -> String {
    let mut cpp = format!(
        "// Generated by cuda-emulator for {source_name}.\n#include \"prelude.hpp\"\n#include \"kernels.cu.inc\"\n"
    );
    for kernel in kernels {
        let args = (0..kernel.params.len())
            .map(|i| format!("*reinterpret_cast<{}*>(args[{i}])", kernel.params[i].c_type))
            .collect::<Vec<_>>()
            .join(", ");
        let infos: String = kernel
            .params
            .iter()
            .map(|p| format!("::cuda_emulator::describe<{}>(), ", p.c_type))
            .collect();
        let _ = write!(
            cpp,
            "\nextern \"C\" __attribute__((visibility(\"default\"))) int {LAUNCHER}{name}(const unsigned int* dims, unsigned int shared, void** args,\n    \
             char* message, unsigned int capacity)\n\
             {{\n    const std::string problem = ::cuda_emulator::launch(uint3{{dims[0], dims[1], dims[2]}},\n        \
             uint3{{dims[3], dims[4], dims[5]}}, shared, [args] {{ {name}({args}); }});\n    \
             if (problem.empty()) {{\n        return 0;\n    }}\n    \
             snprintf(message, capacity, \"%s\", problem.c_str());\n    return 1;\n}}\n\
             extern \"C\" __attribute__((visibility(\"default\"))) const ::cuda_emulator::ParamInfo {PARAMS}{name}[] = {{{infos}{{0, 0, 0, 0, 0}}}};\n",
            name = kernel.name
        );
    }
    cpp
}

/// Runs the compiler in `dir`; its standard output, or its messages as an error, with the
/// source's working name replaced by `source_name`.
fn run(
    compiler: &str,
    source_name: &str,
    step: &'static str,
    dir: &Path,
    args: &[&str],
) -> Result<String, EmulatorError> {
    let output = Command::new(compiler)
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| EmulatorError::NoCompiler {
            compiler: compiler.to_string(),
            source_name: source_name.to_string(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        return Err(EmulatorError::Compile {
            compiler: compiler.to_string(),
            step,
            source_name: source_name.to_string(),
            log: String::from_utf8_lossy(&output.stderr).replace("kernels.cu.inc", source_name),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_declarations_become_pointers_on_the_same_lines() {
        let code = "void k() {\n    extern __shared__ __align__(16) unsigned char smem_raw[];\n    \
                    __shared__ double sums[BN_THREADS];\n    __shared__ A scratch[64];\n}";
        let rewritten = with_shared_memory(code);
        assert!(
            rewritten.contains(
                "    unsigned char* smem_raw = reinterpret_cast<unsigned char*>(::cuda_emulator::dynamic_shared);"
            ),
            "{rewritten}"
        );
        assert!(
            rewritten.contains("double* sums = ::cuda_emulator::shared_array<double, 0>(BN_THREADS);"),
            "{rewritten}"
        );
        assert!(
            rewritten.contains("A* scratch = ::cuda_emulator::shared_array<A, 1>(64);"),
            "{rewritten}"
        );
        assert_eq!(
            rewritten.lines().count(),
            code.lines().count(),
            "line numbers kept"
        );
        let scalar = "__shared__ float total;";
        assert_eq!(with_shared_memory(scalar), scalar, "left to the static fallback");
    }
}
