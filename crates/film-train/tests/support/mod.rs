//! Helpers shared by the integration tests; each test file uses some of them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The small CLEVR-format dataset in fixtures/.
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/clevr-mini")
}

/// A copy of the fixture at `dir/data`, for tests that change its files or whose runs
/// write an image cache beside it (which must stay out of the repository).
pub fn fixture_copy(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    copy_dir(&fixture(), &data);
    data
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
