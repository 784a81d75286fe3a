//! A disk that really fills up: a small tmpfs of the test's own.

use std::path::Path;
use std::process::Command;

/// A tmpfs mounted on a fresh temp dir, unmounted when dropped (also when
/// the test panics). Mounting needs root, as the tests run in CI.
///
/// ```no_run
/// let disk = offload_test_fixture::TinyDisk::mount("4m");
/// let url = format!("sqlite://{}/app.db", disk.path().display());
/// # let _ = url;
/// ```
pub struct TinyDisk {
    dir: tempfile::TempDir,
}

impl TinyDisk {
    /// Mounts a tmpfs of `size` (`mount -o size=…`: `4m`, `512k`).
    pub fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "mounting a tmpfs needs root");
        Self { dir }
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        // Lazily: a child process killed a moment ago may still hold files.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
