//! Damage to a valid file for the fuzz tests of every reader: byte flips, truncations,
//! insertions and deletions, fields inserted into JSON objects and numbers replaced by
//! huge ones. Shared by clevr's and film-train's fuzz tests (`#[path]` includes it), so
//! each reader meets the same kinds of damage.

/// Fragments a hostile or broken writer might leave: out-of-range and overflowing numbers,
/// stray structure, invalid escapes and UTF-8, a field nobody asked for.
pub const TOKENS: &[&[u8]] = &[
    b"1e999999",
    b"-1",
    b"18446744073709551616",
    b"99999999999999999999999999999999",
    b"-9223372036854775809",
    b"4294967296",
    b"1e-999",
    b"NaN",
    b"null",
    b"true",
    b"[",
    b"]",
    b"{",
    b"}",
    b"\"",
    b",",
    b":",
    b"\"\\ud800\"",
    b"\"\\u0000\"",
    b"\xff\xfe\xfd",
    b"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    b"\"extra\": {\"a\": [1, 2, {\"b\": null}]}, ",
];

/// The huge numbers that replace a run of digits.
const HUGE: &[&[u8]] = &[
    b"18446744073709551616",
    b"4294967296",
    b"9999999999999",
    b"1e300",
    b"-1",
    b"0",
];

/// A folder for the files the cases write, in memory where Linux offers one: tens of
/// thousands of rewrites of a file on a disk (ext4 flushes a file truncated and rewritten
/// when it is closed) wait on the disk, not on the reader under test.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    match shm.is_dir() {
        true => tempfile::tempdir_in(shm).unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// One edit, drawn by the tests as plain numbers: `kind` picks the edit, `at` (0..1) the
/// position as a fraction of the length, `pick` a byte, token or length.
pub type Edit = (u8, f64, u8);

/// `valid` with `edits` applied in order.
pub fn mutate(valid: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut bytes = valid.to_vec();
    for &(kind, at, pick) in edits {
        let at = ((bytes.len() as f64) * at) as usize;
        let at = at.min(bytes.len());
        match kind % 6 {
            0 if at < bytes.len() => bytes[at] = pick,
            0 => bytes.push(pick),
            1 => bytes.truncate(at),
            2 => {
                let token = TOKENS[pick as usize % TOKENS.len()];
                bytes.splice(at..at, token.iter().copied());
            }
            3 => {
                let end = (at + 1 + pick as usize % 16).min(bytes.len());
                bytes.drain(at..end);
            }
            4 => {
                // The run of digits at or after `at`, replaced by a huge number.
                if let Some(start) = bytes[at..].iter().position(u8::is_ascii_digit).map(|i| at + i) {
                    let end = bytes[start..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(bytes.len(), |i| start + i);
                    let huge = HUGE[pick as usize % HUGE.len()];
                    bytes.splice(start..end, huge.iter().copied());
                }
            }
            _ => {
                // A field inserted into the object that opens at or after `at`.
                if let Some(open) = bytes[at..].iter().position(|&b| b == b'{').map(|i| at + i) {
                    let value = TOKENS[pick as usize % TOKENS.len()];
                    let field: Vec<u8> = [&b"\"unexpected_field\": "[..], value, b", "].concat();
                    bytes.splice(open + 1..open + 1, field);
                }
            }
        }
    }
    bytes
}

/// One to five edits of a valid file.
pub fn edits() -> impl proptest::strategy::Strategy<Value = Vec<Edit>> {
    use proptest::prelude::any;
    proptest::collection::vec((any::<u8>(), 0.0f64..1.0, any::<u8>()), 1..6)
}

/// Up to 512 arbitrary bytes.
pub fn arbitrary_bytes() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)
}
