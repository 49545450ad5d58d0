//! Helpers shared by the unit tests.

use std::path::PathBuf;

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real CLEVR reference data: `$CLEVR_REFERENCE_DIR` when set (for checkouts
/// that do not sit next to `shared/`, such as git worktrees), otherwise
/// `<workspace root>/../shared/clevr-reference`. `None`, with a note on stderr,
/// when it is not on this machine.
pub fn reference_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("CLEVR_REFERENCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/clevr-reference"));
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "skipped: real CLEVR reference data not found at {}",
            dir.display()
        );
        None
    }
}
