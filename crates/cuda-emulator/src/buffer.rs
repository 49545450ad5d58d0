//! Emulated device memory: f32 buffers with guard zones on both sides, so that a kernel
//! writing past either end is reported, and a kernel reading past it reads NaN.
//!
//! As on a GPU, a kernel gets an address and may write through it whatever its parameter
//! type says; the host only ever sees copies ([`DeviceBuffer::values`]), never a reference
//! a kernel could write under.

/// Values on each side of a buffer that no kernel may write.
const GUARD: usize = 256;
/// The guard zones' bit pattern: a NaN that arithmetic does not produce (it produces the
/// canonical 0x7fc00000), so that a kernel copying a NaN it read there still shows.
const GUARD_BITS: u32 = 0x7fa5_a5a5;
/// What an uninitialised buffer holds: NaN, so that reading a value no kernel wrote shows
/// in the results.
pub const UNWRITTEN: f32 = f32::NAN;

/// One buffer of f32 values in emulated device memory. Not `Sync`: a kernel may write it
/// through the addresses handed out, so no other thread may read it meanwhile.
pub struct DeviceBuffer {
    name: String,
    /// GUARD values, the buffer's `len`, GUARD values; owned (from `Box::into_raw`).
    storage: *mut [f32],
    len: usize,
}

impl DeviceBuffer {
    /// A buffer holding `values`; `name` identifies it in guard reports.
    pub fn from_slice(name: &str, values: &[f32]) -> DeviceBuffer {
        let guard = f32::from_bits(GUARD_BITS);
        let mut storage = Vec::with_capacity(values.len() + 2 * GUARD);
        storage.resize(GUARD, guard);
        storage.extend_from_slice(values);
        storage.resize(values.len() + 2 * GUARD, guard);
        DeviceBuffer {
            name: name.to_string(),
            storage: Box::into_raw(storage.into_boxed_slice()),
            len: values.len(),
        }
    }

    /// A buffer of `len` values as `cudaMalloc` leaves it: here, NaN.
    pub fn uninit(name: &str, len: usize) -> DeviceBuffer {
        DeviceBuffer::from_slice(name, &vec![UNWRITTEN; len])
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn all(&self) -> &[f32] {
        // SAFETY: `storage` is a live allocation owned by self; no kernel runs while the
        // host holds `&self` outside `Module::launch`, and this borrow ends with the caller.
        unsafe { &*self.storage }
    }

    /// A copy of the values, after checking that no kernel wrote into the guard zones.
    ///
    /// # Panics
    /// If one did, naming the buffer and how far past which end.
    pub fn values(&self) -> Vec<f32> {
        if let Some(report) = self.guard_report() {
            panic!("{report}");
        }
        self.all()[GUARD..GUARD + self.len].to_vec()
    }

    /// Overwrites the values (as `cudaMemcpy` from the host would).
    pub fn write(&mut self, values: &[f32]) {
        assert_eq!(values.len(), self.len, "writing buffer `{}`", self.name);
        // SAFETY: exclusive access to the live allocation.
        unsafe { (&mut *self.storage)[GUARD..GUARD + self.len].copy_from_slice(values) };
    }

    /// What a kernel wrote outside the buffer, if anything.
    pub fn guard_report(&self) -> Option<String> {
        let all = self.all();
        let written = |v: &f32| v.to_bits() != GUARD_BITS;
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
    pub(crate) fn address(&self, offset: usize) -> *mut f32 {
        assert!(
            offset <= self.len,
            "offset {offset} past the end of buffer `{}` ({} values)",
            self.name,
            self.len
        );
        // In bounds of the allocation: GUARD + offset ≤ GUARD + len.
        self.storage.cast::<f32>().wrapping_add(GUARD + offset)
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: `storage` came from `Box::into_raw` and is dropped once.
        drop(unsafe { Box::from_raw(self.storage) });
    }
}

impl std::fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DeviceBuffer({}, {} values)", self.name, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn poke(buffer: &mut DeviceBuffer, index: usize, value: f32) {
        // SAFETY: within the allocation (guards included), exclusive access.
        unsafe { (&mut *buffer.storage)[index] = value };
    }

    #[test]
    fn reports_writes_on_either_side() {
        let mut buffer = DeviceBuffer::from_slice("x", &[1.0, 2.0]);
        assert_eq!(buffer.values(), [1.0, 2.0]);
        assert!(buffer.guard_report().is_none());
        poke(&mut buffer, GUARD + 2, 0.0);
        let report = buffer.guard_report().unwrap();
        assert!(
            report.contains("`x`") && report.contains("1 values past its end"),
            "{report}"
        );
        poke(&mut buffer, GUARD + 2, f32::from_bits(GUARD_BITS));
        poke(&mut buffer, GUARD - 3, 0.0);
        let report = buffer.guard_report().unwrap();
        assert!(report.contains("3 values before its start"), "{report}");
    }

    #[test]
    fn uninitialised_means_nan() {
        let buffer = DeviceBuffer::uninit("y", 3);
        assert!(buffer.values().iter().all(|v| v.is_nan()));
    }
}
