//! The LSM backend's own working directory, and removing local directories.

use crate::error::{Error, Result};
use crate::lsm::options::LsmBackendConfig;

/// The backend's own working directory inside `LsmBackendConfig::local_dir`, created new and removed when
/// the backend is dropped (as Flink disposes a RocksDB instance directory): local state is disposable,
/// checkpoints are what lasts. Nothing else in `local_dir` is ever touched.
pub(crate) struct InstanceDir(std::path::PathBuf);

impl InstanceDir {
    /// Creates `<local_dir>/<operator>-<subtask>-<random>`; a name that exists already is never reused.
    pub(crate) fn create(config: &LsmBackendConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.local_dir)
            .map_err(|e| Error::local(config.local_dir.display(), e))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{}-{}-", config.operator_id, config.subtask_index))
            .rand_bytes(12)
            .tempdir_in(&config.local_dir)
            .map_err(|e| Error::local(config.local_dir.display(), e))?
            .keep();
        Ok(InstanceDir(dir))
    }

    pub(crate) fn path(&self) -> &std::path::Path {
        &self.0
    }

    /// The DB's directory.
    pub(crate) fn db(&self) -> std::path::PathBuf {
        self.0.join("db")
    }

    /// Where the native checkpoint of `checkpoint_id` is taken.
    pub(crate) fn checkpoint(&self, checkpoint_id: u64) -> std::path::PathBuf {
        self.0
            .join("checkpoints")
            .join(format!("chk-{checkpoint_id}"))
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if let Err(e) = remove_dir_if_exists(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove the local state directory");
        }
    }
}

pub(crate) fn remove_dir_if_exists(dir: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::local(dir.display().to_string(), e)),
    }
}
