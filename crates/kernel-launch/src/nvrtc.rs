//! CUDA C sources compiled with NVRTC at run time and loaded, once per compute capability
//! and device (feature `cuda`).
//!
//! film-layer's own kernels are loaded this way, and so are the other workspace crates'
//! (the question encoder's GRU, BatchNorm, the trainer's Adam): a CUDA build then needs no
//! CUDA compiler beyond candle's, and the kernels are built for the GPU they run on. Beside
//! the loader are the two things every launcher of such kernels needs: an operand's values
//! as a contiguous view ([`contiguous`], [`contiguous_mut`]), and the launch of a
//! [`KernelCall`] with each of its buffers at a device address ([`Kernels::launch`]).
//!
//! A source is compiled to a cubin for the device's exact architecture rather than to
//! PTX: a cubin from any CUDA 13.x NVRTC loads on every CUDA 13 driver, whereas PTX
//! carries an ISA version that a driver older than the NVRTC rejects. Sources must include
//! no CUDA header (NVRTC on the GPU machine may come without them).

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
use candle_core::cuda_backend::cudarc::driver::{
    CudaFunction, CudaModule, CudaStream, CudaView, CudaViewMut, DeviceRepr, LaunchConfig, PushKernelArg,
};
use candle_core::cuda_backend::cudarc::nvrtc::{result, sys, Ptx};
use candle_core::cuda_backend::{CudaDType, CudaDevice, CudaStorage, DeviceId, WrapErr};
use candle_core::Layout;

use crate::kernel_call::{KernelArg, KernelCall};

/// One CUDA C source file, embedded in the binary (`include_str!`). Its `name` identifies
/// it in the caches and in error messages, so it must be unique in the process.
#[derive(Debug)]
pub struct CudaSource {
    pub name: &'static str,
    pub code: &'static str,
}

/// NVRTC could not compile a source; `detail` carries NVRTC's log.
#[derive(Debug, thiserror::Error)]
#[error("NVRTC failed to {step} {source_name} for {arch}: {detail}")]
pub struct NvrtcError {
    pub source_name: &'static str,
    pub arch: String,
    pub step: &'static str,
    pub detail: String,
}

/// A source's kernels loaded on one device, with what launchers need to size grids.
pub struct Kernels {
    module: Arc<CudaModule>,
    /// Functions already looked up, by name: a GRU pass or an Adam step launches the same
    /// few kernels hundreds of times.
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// Streaming multiprocessors on the device.
    pub sm_count: u32,
}

impl Kernels {
    /// The kernel called `name` (an `extern "C"` function of the source).
    pub fn function(&self, name: &str) -> candle_core::Result<CudaFunction> {
        let mut functions = self.functions.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(function) = functions.get(name) {
            return Ok(function.clone());
        }
        let function = self.module.load_function(name).w()?;
        functions.insert(name.to_owned(), function.clone());
        Ok(function)
    }

    /// Launches `call` on `stream`, each of its buffers at the device address `address`
    /// gives for it ([`address_in`] looks it up in a list). Take the addresses with
    /// [`DevicePtr::device_ptr`] and [`DevicePtrMut::device_ptr_mut`] and keep their guards
    /// until this returns: they order the launch after earlier work on those buffers.
    ///
    /// # Safety
    /// `call` must match its kernel's parameters (a pointer for each buffer, each scalar of
    /// the parameter's type; the CPU tests of each launcher check this with cuda-emulator),
    /// and every address must stay valid, and hold what the kernel reads and has room for
    /// what it writes, until the stream has run the kernel.
    ///
    /// [`DevicePtr::device_ptr`]: candle_core::cuda_backend::cudarc::driver::DevicePtr::device_ptr
    /// [`DevicePtrMut::device_ptr_mut`]: candle_core::cuda_backend::cudarc::driver::DevicePtrMut::device_ptr_mut
    pub unsafe fn launch<B>(
        &self,
        stream: &CudaStream,
        call: &KernelCall<B>,
        mut address: impl FnMut(&B) -> candle_core::Result<u64>,
    ) -> candle_core::Result<()> {
        let func = self.function(&call.kernel)?;
        // Resolved first, so that the builder can hold a reference to each value.
        let args = call
            .args
            .iter()
            .map(|arg| match *arg {
                KernelArg::Buffer(ref b) => address(b).map(KernelArg::Buffer),
                KernelArg::U32(v) => Ok(KernelArg::U32(v)),
                KernelArg::U64(v) => Ok(KernelArg::U64(v)),
                KernelArg::I32(v) => Ok(KernelArg::I32(v)),
                KernelArg::F32(v) => Ok(KernelArg::F32(v)),
            })
            .collect::<candle_core::Result<Vec<KernelArg<u64>>>>()?;
        let mut launch = stream.launch_builder(&func);
        for arg in &args {
            match arg {
                // A pointer parameter takes the address as its 8 bytes.
                KernelArg::Buffer(address) => launch.arg(address),
                KernelArg::U32(v) => launch.arg(v),
                KernelArg::U64(v) => launch.arg(v),
                KernelArg::I32(v) => launch.arg(v),
                KernelArg::F32(v) => launch.arg(v),
            };
        }
        let config = LaunchConfig {
            grid_dim: call.grid,
            block_dim: call.block,
            shared_mem_bytes: call.shared_bytes,
        };
        // SAFETY: as the caller guarantees.
        unsafe { launch.launch(config) }.w()?;
        Ok(())
    }
}

/// The device address of `buffer` in `given` (the buffers a launcher has, by the name its
/// [`KernelCall`]s use): for [`Kernels::launch`].
pub fn address_in<B: PartialEq + std::fmt::Debug>(
    given: &[(B, u64)],
    buffer: &B,
) -> candle_core::Result<u64> {
    match given.iter().find(|(b, _)| b == buffer) {
        Some(&(_, address)) => Ok(address),
        None => candle_core::bail!("a kernel launch names {buffer:?}, which its launcher does not have"),
    }
}

/// The values of a contiguous operand, from its layout's start offset; `op` names the
/// operation in the error for a strided one. A dtype other than `T` is candle's error.
pub fn contiguous<'a, T: CudaDType + DeviceRepr>(
    storage: &'a CudaStorage,
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<CudaView<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice::<T>()?.slice(start..end)),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

/// [`contiguous`] for an operand written in place.
pub fn contiguous_mut<'a, T: CudaDType + DeviceRepr>(
    storage: &'a mut CudaStorage,
    layout: &Layout,
    op: &'static str,
) -> candle_core::Result<CudaViewMut<'a, T>> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(storage.as_cuda_slice_mut::<T>()?.slice_mut(start..end)),
        None => Err(candle_core::Error::RequiresContiguous { op }),
    }
}

type Cubin = Arc<Vec<u8>>;
/// Compiled sources by (source name, compute capability).
type CubinCache = Mutex<HashMap<(&'static str, (i32, i32)), Cubin>>;
/// Loaded modules by (source name, device).
type ModuleCache = Mutex<HashMap<(&'static str, DeviceId), Arc<Kernels>>>;

fn compiled() -> &'static CubinCache {
    static COMPILED: OnceLock<CubinCache> = OnceLock::new();
    COMPILED.get_or_init(Default::default)
}

fn loaded() -> &'static ModuleCache {
    static LOADED: OnceLock<ModuleCache> = OnceLock::new();
    LOADED.get_or_init(Default::default)
}

/// The kernels of `source` on `device`, compiled and loaded on first use.
pub fn kernels(device: &CudaDevice, source: &'static CudaSource) -> candle_core::Result<Arc<Kernels>> {
    // Holding the lock while compiling makes concurrent first calls wait for one compile
    // instead of racing several.
    let mut loaded = loaded().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(kernels) = loaded.get(&(source.name, device.id())) {
        return Ok(kernels.clone());
    }
    let stream = device.cuda_stream();
    let context = stream.context();
    let capability = context.compute_capability().w()?;
    let cubin = cubin_for(source, capability)?;
    let module = context.load_module(Ptx::from_binary(cubin.to_vec())).w()?;
    let sm_count = context
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .w()?;
    let kernels = Arc::new(Kernels {
        module,
        functions: Mutex::default(),
        sm_count: sm_count.max(1) as u32,
    });
    loaded.insert((source.name, device.id()), kernels.clone());
    Ok(kernels)
}

fn cubin_for(source: &'static CudaSource, capability: (i32, i32)) -> candle_core::Result<Cubin> {
    let mut compiled = compiled().lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cubin) = compiled.get(&(source.name, capability)) {
        return Ok(cubin.clone());
    }
    let cubin = Arc::new(compile(source, capability).map_err(candle_core::Error::wrap)?);
    compiled.insert((source.name, capability), cubin.clone());
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

/// Sets the release threshold of `device`'s default memory pool, from which candle allocates
/// every tensor (`cuMemAllocAsync`). 0, the driver's default, hands all free memory back to
/// the driver at each synchronisation, so the next step maps it again; `u64::MAX` keeps it
/// for reuse, as PyTorch's caching allocator does in effect. Does nothing on a device
/// without asynchronous allocation.
pub fn set_pool_release_threshold(device: &CudaDevice, bytes: u64) -> candle_core::Result<()> {
    use candle_core::cuda_backend::cudarc::driver::sys as driver;
    let context = device.cuda_stream().context().clone();
    if !context.has_async_alloc() {
        return Ok(());
    }
    let mut pool: driver::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = bytes;
    // SAFETY: an out-pointer query of the device's default pool, then a write of the
    // release threshold, an attribute the driver reads as a u64.
    unsafe {
        driver::cuDeviceGetDefaultMemPool(&mut pool, context.cu_device())
            .result()
            .w()?;
        driver::cuMemPoolSetAttribute(
            pool,
            driver::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .w()
    }
}

/// Panics unless `source` compiles to a cubin for Hopper (sm_90), the GPUs the workspace
/// targets: each kernel crate's test of its source. Needs libnvrtc, not a GPU, so a CUDA
/// build checks it on any machine (`cargo test --features cuda` with the CUDA libraries on
/// the path).
pub fn assert_compiles_for_hopper(source: &'static CudaSource) {
    let cubin = compile(source, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        cubin.starts_with(b"\x7fELF"),
        "{}: a cubin is an ELF file",
        source.name
    );
}

/// `source` compiled to a cubin for compute capability `major.minor`. Needs libnvrtc, not
/// a GPU.
pub fn compile(source: &'static CudaSource, (major, minor): (i32, i32)) -> Result<Vec<u8>, NvrtcError> {
    let arch = format!("sm_{major}{minor}");
    let error = |step: &'static str, detail: String| NvrtcError {
        source_name: source.name,
        arch: arch.clone(),
        step,
        detail,
    };
    let code =
        CString::new(source.code).map_err(|_| error("read", "the source contains a NUL byte".into()))?;
    let name = CString::new(source.name).map_err(|_| error("read", "the name contains a NUL byte".into()))?;
    let program = Program(
        result::create_program(&code, Some(name.as_c_str()))
            .map_err(|e| error("create a program for", format!("{e:?}")))?,
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
        return Err(error(
            "compile",
            format!("{e:?}; options {options:?}; log:\n{log}"),
        ));
    }
    let mut size = 0usize;
    // SAFETY: a compiled program; `size` is a valid out pointer.
    unsafe { sys::nvrtcGetCUBINSize(program.0, &mut size) }
        .result()
        .map_err(|e| error("size the cubin of", format!("{e:?}")))?;
    let mut cubin = vec![0u8; size];
    // SAFETY: `cubin` has the size NVRTC asked for.
    unsafe { sys::nvrtcGetCUBIN(program.0, cubin.as_mut_ptr().cast()) }
        .result()
        .map_err(|e| error("copy the cubin of", format!("{e:?}")))?;
    Ok(cubin)
}
