//! The uploads on disk: one file per accepted job under `audio/`, written
//! durably (temporary file, fsync, rename, fsync of the directory) before
//! the job is recorded. Plain blocking I/O; callers use a blocking thread.

use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use super::AUDIO_DIR;
use crate::audio::Upload;
use crate::jobs::types::JobId;

/// Path of a job's audio file.
pub fn audio_path(data_dir: &Path, id: JobId) -> PathBuf {
    data_dir.join(AUDIO_DIR).join(id.to_string())
}

/// Writes an upload durably (see the module doc). Blocking.
pub fn write_audio(data_dir: &Path, id: JobId, bytes: &[u8]) -> std::io::Result<()> {
    write_audio_with(data_dir, id, |f| f.write_all(bytes))
}

/// [`write_audio`] of an upload (in memory or spooled), copied without
/// loading a spooled one into memory. Blocking.
pub fn write_upload(data_dir: &Path, id: JobId, upload: &Upload) -> std::io::Result<()> {
    write_audio_with(data_dir, id, |f| upload.copy_to(f).map(|_| ()))
}

/// A job's stored upload, opened for decoding. Blocking.
pub fn open_audio(data_dir: &Path, id: JobId) -> std::io::Result<Upload> {
    let file = File::open(audio_path(data_dir, id))?;
    let len = file.metadata()?.len();
    Ok(Upload::File { file, len })
}

fn write_audio_with(
    data_dir: &Path,
    id: JobId,
    fill: impl FnOnce(&mut File) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = data_dir.join(AUDIO_DIR);
    let tmp = dir.join(format!("{id}.tmp"));
    let result = (|| {
        let mut f = File::create(&tmp)?;
        fill(&mut f)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(id.to_string()))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a job's upload back. Blocking.
pub fn read_audio(data_dir: &Path, id: JobId) -> std::io::Result<Vec<u8>> {
    fs::read(audio_path(data_dir, id))
}

pub(super) fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}
