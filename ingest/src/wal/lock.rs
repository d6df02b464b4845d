//! One process per WAL directory: an exclusive lock on `wal.lock`.
//!
//! Two processes appending to one directory interleave their records in the
//! same segment, and the next recovery cuts everything after the first LSN
//! out of sequence: acknowledged data is lost. So [`acquire`] takes an
//! exclusive `flock(2)` on the lock file (`File::try_lock`) and writes the
//! holder's PID into it, for the error the next process reports. The kernel
//! drops the lock when the file is closed, also when the process is killed:
//! a stale file never blocks a restart.
//!
//! The directory itself is locked too: an operator who takes `wal.lock`
//! for a stale pidfile and removes it let a second process lock a new file
//! of that name and share the segments (both acknowledged every message;
//! the next recovery cut 13 MB of them). A directory cannot be removed
//! while it holds the segments, and its lock goes with its inode.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use super::error::WalError;

/// Name of the lock file in the WAL directory.
pub const LOCK_FILE: &str = "wal.lock";

/// Tries 10 ms apart before the lock counts as held.
const LOCK_ATTEMPTS: u32 = 50;

/// The held lock; released when dropped.
#[derive(Debug)]
pub(crate) struct DirLock {
    /// Kept open: closing them releases the locks.
    _file: File,
    _dir: File,
}

/// Locks `dir` for this process, or fails with [`WalError::Locked`] naming
/// the holder's PID.
pub(crate) fn acquire(dir: &Path) -> Result<DirLock, WalError> {
    acquire_with(dir, LOCK_FILE)
}

/// Locks `dir` with the lock file `name` in it (another directory than a
/// WAL's, e.g. the demo's), as [`acquire`].
pub(crate) fn acquire_with(dir: &Path, name: &str) -> Result<DirLock, WalError> {
    let path = dir.join(name);
    let lock_err = |source| WalError::Lock {
        file: path.clone(),
        source,
    };
    let directory = File::open(dir).map_err(|source| WalError::Lock {
        file: dir.to_owned(),
        source,
    })?;
    hold(&directory, &path).map_err(|e| match e {
        Held::By(pid) => WalError::Locked {
            dir: dir.to_owned(),
            holder_pid: pid,
        },
        Held::Failed(source) => WalError::Lock {
            file: dir.to_owned(),
            source,
        },
    })?;
    // Not truncated on open: the holder's PID must survive our attempt.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(lock_err)?;
    hold(&file, &path).map_err(|e| match e {
        Held::By(pid) => WalError::Locked {
            dir: dir.to_owned(),
            holder_pid: pid,
        },
        Held::Failed(source) => lock_err(source),
    })?;
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .map_err(lock_err)?;
    Ok(DirLock {
        _file: file,
        _dir: directory,
    })
}

/// Why [`hold`] did not lock.
enum Held {
    /// Another process holds it (its PID, from the lock file `path`).
    By(Option<u32>),
    Failed(std::io::Error),
}

/// Takes the exclusive lock on `file` (the directory, or the lock file in
/// it). A child forked by the holder (or by a process that held the lock a
/// moment ago) shares the locked file until it calls exec: tried for a
/// moment before naming the holder.
fn hold(file: &File, path: &Path) -> Result<(), Held> {
    let mut attempts = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) if attempts < LOCK_ATTEMPTS => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(TryLockError::WouldBlock) => return Err(Held::By(holder_pid(path))),
            Err(TryLockError::Error(source)) => return Err(Held::Failed(source)),
        }
    }
}

/// The PID in the lock file. The holder writes it just after locking, so an
/// empty file is read again for a moment before giving up.
fn holder_pid(path: &Path) -> Option<u32> {
    for _ in 0..20 {
        let mut text = String::new();
        if let Ok(mut file) = File::open(path)
            && file.read_to_string(&mut text).is_ok()
            && let Ok(pid) = text.trim().parse()
        {
            return Some(pid);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
