//! Compiling a kernel source for the CPU and launching its kernels.

use std::ffi::c_void;
use std::fmt::Write as _;
use std::marker::PhantomData;
use std::path::Path;
use std::process::Command;

use crate::signature::{self, Kernel, ParamType};
use crate::{DeviceBuffer, EmulatorError};

const PRELUDE: &str = include_str!("prelude.hpp");
/// The generated launcher of kernel `k` is `LAUNCHER_PREFIX` + `k`.
const LAUNCHER_PREFIX: &str = "cuda_emulator_launch_";
/// CUDA's limit on threads per block.
const MAX_BLOCK: u32 = 1024;

type Launcher = unsafe extern "C" fn(u32, u32, *mut *mut c_void);

/// A kernel source compiled for the CPU.
pub struct Module {
    source_name: String,
    kernels: Vec<Kernel>,
    library: libloading::Library,
    // The compiled library's folder, removed with the module.
    _dir: tempfile::TempDir,
}

/// One kernel argument. As with a CUDA launch, a buffer is passed as an address, and the
/// kernel's parameter type (`const float*` or `float*`) says whether it may write there.
#[derive(Clone, Copy)]
pub struct Arg<'a> {
    value: Value,
    _buffers: PhantomData<&'a DeviceBuffer>,
}

#[derive(Clone, Copy, Debug)]
enum Value {
    Address(*mut f32),
    U32(u32),
    U64(u64),
    I32(i32),
    F32(f32),
}

impl Value {
    fn describe(self) -> &'static str {
        match self {
            Value::Address(_) => "a buffer address",
            Value::U32(_) => "u32",
            Value::U64(_) => "u64",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
        }
    }

    fn fits(self, ty: ParamType) -> bool {
        matches!(
            (self, ty),
            (Value::Address(_), ParamType::ConstF32Ptr | ParamType::F32Ptr)
                | (Value::U32(_), ParamType::U32)
                | (Value::U64(_), ParamType::U64)
                | (Value::I32(_), ParamType::I32)
                | (Value::F32(_), ParamType::F32)
        )
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
    pub fn buffer(buffer: &'a DeviceBuffer) -> Arg<'a> {
        Arg::at(buffer, 0)
    }

    /// The address of `buffer`'s value `offset`.
    pub fn at(buffer: &'a DeviceBuffer, offset: usize) -> Arg<'a> {
        Arg::new(Value::Address(buffer.address(offset)))
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
    address: *mut f32,
    u32_: u32,
    u64_: u64,
    i32_: i32,
    f32_: f32,
}

impl Module {
    /// Compiles `code` (the CUDA C source called `source_name`) for the CPU with `$CXX`, else
    /// `c++`, and loads it.
    pub fn compile(source_name: &str, code: &str) -> Result<Module, EmulatorError> {
        let kernels = signature::kernels(source_name, code)?;
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
        // its line numbers.
        write("prelude.hpp", PRELUDE)?;
        write("kernels.cu.inc", code)?;
        write("emulated.cpp", &launchers(source_name, &kernels))?;
        let library = dir.path().join("emulated.so");
        compile(&compiler, source_name, dir.path(), &library)?;
        // SAFETY: a library just built from the project's kernel source and the generated
        // launchers; loading it runs no initialisers beyond C++'s for the prelude's globals.
        let library = unsafe { libloading::Library::new(&library) }
            .map_err(|e| load_error(format!("{}: {e}", library.display())))?;
        Ok(Module {
            source_name: source_name.to_string(),
            kernels,
            library,
            _dir: dir,
        })
    }

    /// The kernels found in the source.
    pub fn kernels(&self) -> &[Kernel] {
        &self.kernels
    }

    /// Runs `kernel` on `grid` blocks of `block` threads and returns when it has finished.
    /// The arguments must match its parameters in number and type.
    pub fn launch(&self, kernel: &str, grid: u32, block: u32, args: &[Arg<'_>]) -> Result<(), EmulatorError> {
        let Some(signature) = self.kernels.iter().find(|k| k.name == kernel) else {
            return Err(EmulatorError::UnknownKernel {
                source_name: self.source_name.clone(),
                kernel: kernel.to_string(),
                known: self
                    .kernels
                    .iter()
                    .map(|k| k.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        let refuse = |detail: String| EmulatorError::Arguments {
            kernel: kernel.to_string(),
            detail,
        };
        if grid == 0 || block == 0 || block > MAX_BLOCK {
            return Err(refuse(format!(
                "a launch of {grid} blocks of {block} threads (CUDA takes at least one block of 1 to {MAX_BLOCK} threads)"
            )));
        }
        if args.len() != signature.params.len() {
            return Err(refuse(format!(
                "{} arguments for {} parameters",
                args.len(),
                signature.params.len()
            )));
        }
        for (i, (arg, param)) in args.iter().zip(&signature.params).enumerate() {
            if !arg.value.fits(param.ty) {
                return Err(refuse(format!(
                    "argument {i} is {}, but parameter `{}` is `{}`",
                    arg.value.describe(),
                    param.name,
                    param.ty.c_type()
                )));
            }
        }
        let mut slots: Vec<Slot> = args
            .iter()
            .map(|arg| match arg.value {
                Value::Address(address) => Slot { address },
                Value::U32(u32_) => Slot { u32_ },
                Value::U64(u64_) => Slot { u64_ },
                Value::I32(i32_) => Slot { i32_ },
                Value::F32(f32_) => Slot { f32_ },
            })
            .collect();
        let mut pointers: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut Slot).cast()).collect();
        let symbol = format!("{LAUNCHER_PREFIX}{kernel}");
        // SAFETY: the launcher was generated with this signature for this kernel.
        let launcher =
            unsafe { self.library.get::<Launcher>(symbol.as_bytes()) }.map_err(|e| EmulatorError::Load {
                source_name: self.source_name.clone(),
                detail: format!("{symbol}: {e}"),
            })?;
        // SAFETY: one slot per parameter, each holding a value of the parameter's type (checked
        // above); addresses point into live buffers borrowed by `args` for the call.
        unsafe { launcher(grid, block, pointers.as_mut_ptr()) };
        Ok(())
    }
}

/// The C++ translation unit: the prelude, the source, and one launcher per kernel that
/// unpacks `args` into the kernel's parameters.
fn launchers(source_name: &str, kernels: &[Kernel]) -> String {
    let mut cpp = format!(
        "// Generated by cuda-emulator for {source_name}.\n#include \"prelude.hpp\"\n#include \"kernels.cu.inc\"\n"
    );
    for kernel in kernels {
        let args = (0..kernel.params.len())
            .map(|i| format!("*reinterpret_cast<{}*>(args[{i}])", kernel.params[i].ty.c_type()))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            cpp,
            "\nextern \"C\" void {LAUNCHER_PREFIX}{name}(unsigned int grid, unsigned int block, void** args)\n\
             {{\n    ::cuda_emulator::launch(grid, block, [args] {{ {name}({args}); }});\n}}\n",
            name = kernel.name
        );
    }
    cpp
}

fn compile(compiler: &str, source_name: &str, dir: &Path, library: &Path) -> Result<(), EmulatorError> {
    let output = Command::new(compiler)
        .current_dir(dir)
        .args(["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread", "-o"])
        .arg(library)
        .arg("emulated.cpp")
        .output()
        .map_err(|e| EmulatorError::NoCompiler {
            compiler: compiler.to_string(),
            source_name: source_name.to_string(),
            detail: e.to_string(),
        })?;
    if !output.status.success() {
        let log = String::from_utf8_lossy(&output.stderr).replace("kernels.cu.inc", source_name);
        return Err(EmulatorError::Compile {
            compiler: compiler.to_string(),
            source_name: source_name.to_string(),
            log,
        });
    }
    Ok(())
}
