//! Helpers shared by the unit tests.

use std::path::PathBuf;

/// The workspace root (two levels above this crate's manifest).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The real CLEVR v1.0 scene graphs in the fixture: validation scenes 0 to 39.
pub const REFERENCE_SCENES: &str = "CLEVR_val_scenes_40.json";

/// A file of the real CLEVR sample in `fixtures/clevr-reference` (see its README). The
/// files are part of the repository, so a missing one fails the test instead of skipping
/// it: a test that silently checks nothing is worse than none.
pub fn reference_file(name: &str) -> PathBuf {
    let path = workspace_root().join("fixtures/clevr-reference").join(name);
    assert!(
        path.is_file(),
        "{} is missing: the real CLEVR fixture is part of the repository (fixtures/README.md)",
        path.display()
    );
    path
}
