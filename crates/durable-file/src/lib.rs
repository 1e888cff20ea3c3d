//! Replacing a small file durably: the checkpoint's compaction and the
//! simulated cloud's saved state both need "the old file or the new one
//! after any crash, never a torn one", and nothing else of each other.
#![warn(missing_docs)]

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `dir/name` through a temporary file in `dir`: written,
/// fsynced, renamed over the old file, then the directory fsynced so the
/// rename itself survives a power loss.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("durable-file-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        write_atomically(&dir, "f", b"one").unwrap();
        write_atomically(&dir, "f", b"two").unwrap();
        assert_eq!(fs::read(dir.join("f")).unwrap(), b"two");
        assert!(!dir.join(".f.tmp").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_directory_is_an_error_and_creates_nothing() {
        let dir = std::env::temp_dir().join(format!("durable-file-missing-{}", std::process::id()));
        assert!(write_atomically(&dir, "f", b"x").is_err());
        assert!(!dir.exists());
    }
}
