//! Files replaced whole: written to a temporary name in the same folder, synced, renamed
//! over the target, and the folder synced, so that a reader or a crash sees the old file
//! or the complete new one, never a partial one.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The temporary name `path` is written under before the rename.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` with `bytes` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    replace(&tmp, path)
}

/// Renames the complete file `from` over `to`, then syncs the folder so that the rename
/// itself survives a power loss.
pub fn replace(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(
        to.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )
}

/// Makes the folder's entries (new names, renames) durable. Unix syncs a folder through a
/// handle to it; Windows cannot open one, and its renames need no separate sync.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn a_reader_of_the_old_file_never_sees_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_atomic(&path, b"old contents").unwrap();
        let mut old = fs::File::open(&path).unwrap();
        write_atomic(&path, b"new").unwrap();
        let mut seen = String::new();
        old.read_to_string(&mut seen).unwrap();
        assert_eq!(seen, "old contents");
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(!temp_path(&path).exists());
    }
}
