//! Reading and setting one `/proc/sys` value.
//!
//! In a Kubernetes pod `/proc/sys` is read-only unless the container is
//! privileged. The DaemonSet's (privileged) init container sets what the node
//! needs; the unprivileged daemon then finds it set and writes nothing. So
//! every setter here reads first and writes only on a difference.

use std::io;
use std::path::Path;

/// The root of the kernel's sysctl tree.
pub const PROC_SYS: &str = "/proc/sys";

/// Makes `key` (a path below `root`, e.g. `net/ipv4/ip_forward`) read
/// `value`. Returns whether it had to be written.
pub fn ensure(root: &Path, key: &str, value: &str) -> io::Result<bool> {
    let path = root.join(key);
    let current = std::fs::read_to_string(&path).map_err(|e| with_path(e, &path))?;
    if current.trim() == value {
        return Ok(false);
    }
    std::fs::write(&path, value.as_bytes()).map_err(|e| with_path(e, &path))?;
    Ok(true)
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("vpc-cni-sysctl-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("net/ipv4")).unwrap();
        dir
    }

    #[test]
    fn writes_only_when_different() {
        let root = scratch("diff");
        let file = root.join("net/ipv4/ip_forward");
        std::fs::write(&file, "0\n").unwrap();
        assert!(ensure(&root, "net/ipv4/ip_forward", "1").unwrap());
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
        assert!(!ensure(&root, "net/ipv4/ip_forward", "1").unwrap());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn already_set_is_left_alone() {
        let root = scratch("ro");
        let file = root.join("net/ipv4/ip_forward");
        std::fs::write(&file, "1\n").unwrap();
        assert!(!ensure(&root, "net/ipv4/ip_forward", "1").unwrap());
        // Untouched: a write would have dropped the newline.
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1\n");
        let missing = ensure(&root, "net/ipv4/nope", "1").unwrap_err();
        assert!(missing.to_string().contains("net/ipv4/nope"), "{missing}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
