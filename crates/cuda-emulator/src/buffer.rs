//! Emulated device memory: buffers aligned as `cudaMalloc` aligns them, with guard zones
//! on both sides, so that a kernel writing past either end is reported and a kernel
//! reading past it reads NaN.
//!
//! As on a GPU, a kernel gets an address and may write through it whatever its parameter
//! type says; the host only ever sees copies ([`DeviceBuffer::values`]), never a reference
//! a kernel could write under.

use std::alloc::{self, Layout};

/// Elements on each side of a buffer that no kernel may write: a multiple of the
/// alignment in bytes for every element size.
const GUARD: usize = 256;
/// `cudaMalloc`'s alignment, which the kernels' 16-byte packed accesses rely on.
const ALIGN: usize = 256;

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
    impl Sealed for u16 {}
}

/// A value type of emulated device memory: f32, f64, or the raw bits of f16 and bf16
/// (u16, as the kernels' `F16` and `BF16` structs hold them). Sealed: the argument checks
/// rely on exactly these.
pub trait Element: sealed::Sealed + Copy + PartialEq + std::fmt::Debug + 'static {
    /// The guard zones' value: a NaN (in both half formats, for u16) that arithmetic does
    /// not produce, so that a kernel copying a NaN it read there still shows.
    const GUARD: Self;
    /// What an uninitialised buffer holds: NaN.
    const UNWRITTEN: Self;
    /// Whether the kernels' parameter of this element is a floating-point type (u16 are
    /// half-precision structs).
    const IS_FLOAT: bool;
    fn same_bits(self, other: Self) -> bool;
}

impl Element for f32 {
    const GUARD: f32 = f32::from_bits(0x7fa5_a5a5);
    const UNWRITTEN: f32 = f32::NAN;
    const IS_FLOAT: bool = true;
    fn same_bits(self, other: f32) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl Element for f64 {
    const GUARD: f64 = f64::from_bits(0x7ff5_a5a5_a5a5_a5a5);
    const UNWRITTEN: f64 = f64::NAN;
    const IS_FLOAT: bool = true;
    fn same_bits(self, other: f64) -> bool {
        self.to_bits() == other.to_bits()
    }
}

impl Element for u16 {
    /// A NaN as f16 (exponent 0x1f) and as bf16 (exponent 0xff).
    const GUARD: u16 = 0x7fa5;
    const UNWRITTEN: u16 = 0x7fc1;
    const IS_FLOAT: bool = false;
    fn same_bits(self, other: u16) -> bool {
        self == other
    }
}

/// One buffer in emulated device memory. Not `Sync`: a kernel may write it through the
/// addresses handed out, so no other thread may read it meanwhile.
pub struct DeviceBuffer<T: Element = f32> {
    name: String,
    /// GUARD values, the buffer's `len`, GUARD values, aligned to ALIGN.
    storage: *mut T,
    len: usize,
}

impl<T: Element> DeviceBuffer<T> {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align((len + 2 * GUARD) * std::mem::size_of::<T>(), ALIGN)
            .expect("a buffer that fits in memory")
    }

    /// A buffer holding `values`; `name` identifies it in guard reports.
    pub fn from_slice(name: &str, values: &[T]) -> DeviceBuffer<T> {
        let layout = Self::layout(values.len());
        // SAFETY: the layout has a non-zero size (two guard zones).
        let storage = unsafe { alloc::alloc(layout) }.cast::<T>();
        if storage.is_null() {
            alloc::handle_alloc_error(layout);
        }
        let total = values.len() + 2 * GUARD;
        // SAFETY: `storage` holds `total` values of T, all written here before any read.
        let all = unsafe { std::slice::from_raw_parts_mut(storage, total) };
        all.fill(T::GUARD);
        all[GUARD..GUARD + values.len()].copy_from_slice(values);
        DeviceBuffer {
            name: name.to_string(),
            storage,
            len: values.len(),
        }
    }

    /// A buffer of `len` values as `cudaMalloc` leaves it: here, NaN.
    pub fn uninit(name: &str, len: usize) -> DeviceBuffer<T> {
        DeviceBuffer::from_slice(name, &vec![T::UNWRITTEN; len])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn all(&self) -> &[T] {
        // SAFETY: `storage` is a live allocation of len + 2·GUARD values owned by self; no
        // kernel runs while the host holds `&self` outside `Module::launch`, and this borrow
        // ends with the caller.
        unsafe { std::slice::from_raw_parts(self.storage, self.len + 2 * GUARD) }
    }

    /// A copy of the values, after checking that no kernel wrote into the guard zones.
    ///
    /// # Panics
    /// If one did, naming the buffer and how far past which end.
    pub fn values(&self) -> Vec<T> {
        if let Some(report) = self.guard_report() {
            panic!("{report}");
        }
        self.all()[GUARD..GUARD + self.len].to_vec()
    }

    /// Overwrites the values (as `cudaMemcpy` from the host would).
    pub fn write(&mut self, values: &[T]) {
        assert_eq!(values.len(), self.len, "writing buffer `{}`", self.name);
        // SAFETY: exclusive access to the live allocation; the range is in bounds.
        unsafe { std::slice::from_raw_parts_mut(self.storage.add(GUARD), self.len) }.copy_from_slice(values);
    }

    /// What a kernel wrote outside the buffer, if anything.
    pub fn guard_report(&self) -> Option<String> {
        let all = self.all();
        let written = |v: &T| !v.same_bits(T::GUARD);
        let before = all[..GUARD].iter().position(written);
        let after = all[GUARD + self.len..].iter().rposition(written);
        match (before, after) {
            (None, None) => None,
            (before, after) => Some(format!(
                "a kernel wrote outside buffer `{}` ({} values):{}{}",
                self.name,
                self.len,
                before.map_or(String::new(), |i| format!(
                    " {} values before its start",
                    GUARD - i
                )),
                after.map_or(String::new(), |i| format!(" {} values past its end", i + 1)),
            )),
        }
    }

    /// The device address of value `offset`, as a kernel parameter takes it.
    pub(crate) fn address(&self, offset: usize) -> *mut T {
        assert!(
            offset <= self.len,
            "offset {offset} past the end of buffer `{}` ({} values)",
            self.name,
            self.len
        );
        // In bounds of the allocation: GUARD + offset ≤ GUARD + len.
        self.storage.wrapping_add(GUARD + offset)
    }
}

impl<T: Element> Drop for DeviceBuffer<T> {
    fn drop(&mut self) {
        // SAFETY: allocated in `from_slice` with this layout, freed once.
        unsafe { alloc::dealloc(self.storage.cast(), Self::layout(self.len)) };
    }
}

impl<T: Element> std::fmt::Debug for DeviceBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({}, {} values)", self.name, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poke(buffer: &mut DeviceBuffer, index: usize, value: f32) {
        // SAFETY: within the allocation (guards included), exclusive access.
        unsafe { *buffer.storage.add(index) = value };
    }

    #[test]
    fn reports_writes_on_either_side() {
        let mut buffer = DeviceBuffer::from_slice("x", &[1.0f32, 2.0]);
        assert_eq!(buffer.values(), [1.0, 2.0]);
        assert!(buffer.guard_report().is_none());
        poke(&mut buffer, GUARD + 2, 0.0);
        let report = buffer.guard_report().unwrap();
        assert!(
            report.contains("`x`") && report.contains("1 values past its end"),
            "{report}"
        );
        poke(&mut buffer, GUARD + 2, f32::GUARD);
        poke(&mut buffer, GUARD - 3, 0.0);
        let report = buffer.guard_report().unwrap();
        assert!(report.contains("3 values before its start"), "{report}");
    }

    #[test]
    fn uninitialised_means_nan_and_addresses_are_aligned() {
        let buffer = DeviceBuffer::<f32>::uninit("y", 3);
        assert!(buffer.values().iter().all(|v| v.is_nan()));
        assert_eq!(buffer.address(0) as usize % ALIGN, 0);
        let halves = DeviceBuffer::<u16>::uninit("h", 5);
        assert_eq!(halves.address(0) as usize % ALIGN, 0);
        let unwritten = half::f16::from_bits(u16::UNWRITTEN);
        assert!(unwritten.is_nan() && half::bf16::from_bits(u16::UNWRITTEN).is_nan());
        assert!(half::f16::from_bits(u16::GUARD).is_nan() && half::bf16::from_bits(u16::GUARD).is_nan());
    }
}
