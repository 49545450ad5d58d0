//! Compiles `film.cu` with NVRTC and loads it, once per compute capability and device.
//!
//! The source is compiled to a cubin for the device's exact architecture rather than to
//! PTX: a cubin from any CUDA 13.x NVRTC loads on every CUDA 13 driver, whereas PTX
//! carries an ISA version that a driver older than the NVRTC rejects.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule};
use candle_core::cuda_backend::cudarc::nvrtc::{result, sys, Ptx};
use candle_core::cuda_backend::{CudaDevice, DeviceId, WrapErr};

use super::KernelError;

const SOURCE: &str = include_str!("film.cu");
const SOURCE_NAME: &str = "film.cu";

/// The FiLM kernels loaded on one device, with what the launcher needs to size grids.
pub(crate) struct Kernels {
    module: Arc<CudaModule>,
    /// Streaming multiprocessors on the device.
    pub sm_count: u32,
}

impl Kernels {
    pub fn function(&self, name: &str) -> candle_core::Result<CudaFunction> {
        self.module.load_function(name).w()
    }
}

type Cubin = Arc<Vec<u8>>;

fn compiled() -> &'static Mutex<HashMap<(i32, i32), Cubin>> {
    static COMPILED: OnceLock<Mutex<HashMap<(i32, i32), Cubin>>> = OnceLock::new();
    COMPILED.get_or_init(Default::default)
}

fn loaded() -> &'static Mutex<HashMap<DeviceId, Arc<Kernels>>> {
    static LOADED: OnceLock<Mutex<HashMap<DeviceId, Arc<Kernels>>>> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The kernels on `device`, compiled and loaded on first use.
pub(crate) fn kernels(device: &CudaDevice) -> candle_core::Result<Arc<Kernels>> {
    // Holding the lock while compiling makes concurrent first calls wait for one compile
    // instead of racing several.
    let mut loaded = loaded().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kernels) = loaded.get(&device.id()) {
        return Ok(kernels.clone());
    }
    let stream = device.cuda_stream();
    let context = stream.context();
    let capability = context.compute_capability().w()?;
    let cubin = cubin_for(capability)?;
    let module = context.load_module(Ptx::from_binary(cubin.to_vec())).w()?;
    let sm_count = context
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    let kernels = Arc::new(Kernels {
        module,
        sm_count: sm_count.max(1) as u32,
    });
    loaded.insert(device.id(), kernels.clone());
    Ok(kernels)
}

fn cubin_for(capability: (i32, i32)) -> candle_core::Result<Cubin> {
    let mut compiled = compiled().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cubin) = compiled.get(&capability) {
        return Ok(cubin.clone());
    }
    let cubin = Arc::new(compile(capability).map_err(candle_core::Error::wrap)?);
    compiled.insert(capability, cubin.clone());
    Ok(cubin)
}

/// Owns an NVRTC program so that every exit path destroys it.
struct Program(sys::nvrtcProgram);

impl Drop for Program {
    fn drop(&mut self) {
        // SAFETY: the program was created by `create_program` and is destroyed once.
        let _ = unsafe { result::destroy_program(self.0) };
    }
}

fn compile((major, minor): (i32, i32)) -> Result<Vec<u8>, KernelError> {
    let arch = format!("sm_{major}{minor}");
    let source = CString::new(SOURCE).expect("film.cu contains no NUL byte");
    let name = CString::new(SOURCE_NAME).expect("constant name");
    let program = Program(
        result::create_program(&source, Some(name.as_c_str())).map_err(|e| KernelError::Nvrtc {
            arch: arch.clone(),
            step: "create program",
            detail: format!("{e:?}"),
        })?,
    );
    let options = [format!("--gpu-architecture={arch}"), "--std=c++17".to_string()];
    // SAFETY: `program` is a live NVRTC program; the options are valid strings.
    if let Err(e) = unsafe { result::compile_program(program.0, &options) } {
        // SAFETY: the log of a program whose compilation ran is readable.
        let log = unsafe { result::get_program_log(program.0) }
            .map(|raw| {
                // SAFETY: NVRTC NUL-terminates the log.
                unsafe { CStr::from_ptr(raw.as_ptr()) }
                    .to_string_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(KernelError::Nvrtc {
            arch,
            step: "compile",
            detail: format!("{e:?}; options {options:?}; log:\n{log}"),
        });
    }
    let mut size = 0usize;
    // SAFETY: a compiled program; `size` is a valid out pointer.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| KernelError::Nvrtc {
            arch: arch.clone(),
            step: "cubin size",
            detail: format!("{e:?}"),
        })?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the size NVRTC asked for.
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| KernelError::Nvrtc {
            arch,
            step: "get cubin",
            detail: format!("{e:?}"),
        })?;
    Ok(cubin)
}
