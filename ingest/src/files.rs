//! Files the service keeps beside its data: replaced whole and atomically,
//! and told apart from another file at the same path (one an operator
//! removed or replaced while the service held it open).

use std::io::Write as _;
use std::path::Path;

/// Writes `bytes` to `path` atomically: a temporary file beside it, fsync,
/// rename, the directory synced.
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace_with(path, |w| w.write_all(bytes))
}

/// [`replace`] with the contents streamed by `write` (a buffered writer):
/// a large file is not held whole in memory first. The temporary file is
/// `path` with `.tmp` appended.
pub fn replace_with(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp)?;
    let written = (|| {
        let mut writer = std::io::BufWriter::new(&file);
        write(&mut writer)?;
        writer.flush()?;
        drop(writer);
        file.sync_all()
    })();
    drop(file);
    if let Err(e) = written {
        // A full disk: the half-written copy goes, not left to be taken
        // for something.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)?;
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// A file's device and inode: the file now at a path has another one (or
/// none) once the one opened there was removed or replaced.
pub type FileId = (u64, u64);

/// The identity of what `metadata` describes.
pub fn id_of(metadata: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (metadata.dev(), metadata.ino())
}

/// The identity of the file at `path`; `None` when there is none.
pub fn id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| id_of(&m))
}
