//! One launch of a CUDA kernel as plain data: the kernel's name, its grid, and its
//! arguments in the order of the kernel's parameters, each buffer named by the caller's
//! own type `B` rather than by a device address.
//!
//! The workspace's CUDA launchers describe every launch this way and hand the description
//! to `nvrtc::Kernels::launch` (feature `cuda`), which puts each buffer's device address in
//! its place. Their tests hand the very same descriptions to the `cuda-emulator` crate,
//! which runs the kernels on the CPU and refuses an argument whose type differs from the
//! kernel's parameter. So the argument lists a GPU receives are checked in every build, not
//! only where a GPU is at hand: a `u64` pushed where a kernel takes `unsigned int` would
//! shift every argument after it, and two swapped buffers would be read and written as
//! each other, without any error from the driver.

/// One argument of a launch: a buffer, or a scalar of the kernel parameter's exact type.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KernelArg<B> {
    /// A pointer parameter: the device address of the buffer `B` names.
    Buffer(B),
    /// `unsigned int`.
    U32(u32),
    /// `unsigned long long`.
    U64(u64),
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
}

/// One kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelCall<B> {
    /// The kernel's name, an `extern "C"` function of its source.
    pub kernel: String,
    pub grid: (u32, u32, u32),
    pub block: (u32, u32, u32),
    /// Bytes of dynamic (`extern __shared__`) shared memory per block.
    pub shared_bytes: u32,
    pub args: Vec<KernelArg<B>>,
}

impl<B> KernelCall<B> {
    /// A launch of `kernel` for a grid-stride loop over `len` items on a device with
    /// `sm_count` multiprocessors: blocks of `threads`, as many as the items need up to
    /// `blocks_per_sm` per multiprocessor (more would only loop less), and at least one.
    pub fn grid_stride(
        kernel: impl Into<String>,
        len: usize,
        (threads, blocks_per_sm): (u32, u32),
        sm_count: u32,
        args: Vec<KernelArg<B>>,
    ) -> KernelCall<B> {
        let most = (sm_count.max(1) * blocks_per_sm).max(1) as usize;
        let blocks = len.div_ceil(threads.max(1) as usize).clamp(1, most);
        KernelCall {
            kernel: kernel.into(),
            grid: (blocks as u32, 1, 1),
            block: (threads, 1, 1),
            shared_bytes: 0,
            args,
        }
    }

    /// The arguments in order as values of `T`, each buffer as `buffer` makes it and each
    /// scalar converted by `T`'s `From` (for a launcher that takes its own argument type,
    /// such as cuda-emulator's `Arg`).
    pub fn args_as<T>(&self, mut buffer: impl FnMut(&B) -> T) -> Vec<T>
    where
        T: From<u32> + From<u64> + From<i32> + From<f32>,
    {
        self.args
            .iter()
            .map(|arg| match arg {
                KernelArg::Buffer(b) => buffer(b),
                KernelArg::U32(v) => T::from(*v),
                KernelArg::U64(v) => T::from(*v),
                KernelArg::I32(v) => T::from(*v),
                KernelArg::F32(v) => T::from(*v),
            })
            .collect()
    }

    /// The buffers the launch passes, in order.
    pub fn buffers(&self) -> impl Iterator<Item = &B> {
        self.args.iter().filter_map(|arg| match arg {
            KernelArg::Buffer(b) => Some(b),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(len: usize, sm_count: u32) -> KernelCall<()> {
        KernelCall::grid_stride("k", len, (256, 8), sm_count, vec![KernelArg::Buffer(())])
    }

    #[test]
    fn grid_stride_launches_cover_the_items_up_to_a_cap_per_multiprocessor() {
        assert_eq!(call(0, 132).grid, (1, 1, 1), "at least one block");
        assert_eq!(call(256, 132).grid, (1, 1, 1));
        assert_eq!(call(257, 132).grid, (2, 1, 1));
        assert_eq!(call(1 << 30, 132).grid, (132 * 8, 1, 1));
        assert_eq!(
            call(1 << 30, 0).grid,
            (8, 1, 1),
            "a device reports at least one SM"
        );
        assert_eq!(call(5, 1).block, (256, 1, 1));
    }
}
