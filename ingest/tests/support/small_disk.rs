//! A disk that really fills up (`ENOSPC`): a small tmpfs on a temporary
//! directory. Shared by the integration tests and, through `#[path]`, the
//! WAL's unit tests, which need the same full disk.
//!
//! As root (CI, the dev container) the tmpfs is mounted directly; otherwise
//! the test runs itself again as root of a user and mount namespace of its
//! own (`unshare -rm`), see [`rerun_in_namespace`].

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

/// Set in the copy of a test that runs under `unshare -rm` when the tests
/// are not root.
const IN_NAMESPACE_VAR: &str = "FLEETPULSE_TEST_IN_NAMESPACE";

/// A tmpfs of `size` mounted on a temporary directory; unmounted (lazily: a
/// test that failed may still hold files) on drop.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount: then the caller runs itself
    /// again with [`rerun_in_namespace`].
    pub fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            .then_some(Self { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Mounts the disk again read-only (a backup, a snapshot) or writable.
    pub fn remount(&self, read_only: bool) {
        let mode = if read_only {
            "remount,ro"
        } else {
            "remount,rw"
        };
        let status = Command::new("mount")
            .args(["-o", mode])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount -o {mode}: {status}");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Runs test `test` (its full name in this binary) again as root of a user
/// and mount namespace of its own, where it may mount a tmpfs.
pub fn rerun_in_namespace(test: &str) {
    assert!(
        std::env::var_os(IN_NAMESPACE_VAR).is_none(),
        "cannot mount a tmpfs, even in a user namespace"
    );
    let status = Command::new("unshare")
        .args(["-rm", "--"])
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env(IN_NAMESPACE_VAR, "1")
        .status()
        .expect("not root, and `unshare` (util-linux) is not installed");
    assert!(status.success(), "{test} under unshare -rm: {status}");
}

/// Writes zeros to `path` until the disk is full; returns its length.
pub fn fill_disk(path: &Path) -> u64 {
    let mut file = std::fs::File::create(path).unwrap();
    for block in [64 * 1024, 4096, 512, 1] {
        let zeros = vec![0u8; block];
        loop {
            match file.write_all(&zeros) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    file.metadata().unwrap().len()
}

/// Gives `room` bytes of the file `path` back to the disk.
pub fn shrink_by(path: &Path, room: u64) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len.saturating_sub(room)).unwrap();
}
