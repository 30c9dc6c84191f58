//! The RocksDB backend's own working directory, locked while the backend lives, and removing the directories
//! of dead instances and local directories.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keyed::identity::SubtaskIdentity;
use crate::rocksdb::config::RocksDbConfig;

/// Lock file in every instance directory, locked (`flock`, exclusive) for as long as its backend lives. The
/// operating system releases the lock when the process dies, however it dies (SIGKILL included): an
/// instance directory whose lock can be taken belongs to nobody.
pub(crate) const INSTANCE_LOCK: &str = "statebackend-instance.lock";

/// The backend's own working directory inside `RocksDbConfig::local_dir`, created new and removed when
/// the backend is dropped (as Flink disposes a RocksDB instance directory): local state is disposable,
/// checkpoints are what lasts. Nothing in `local_dir` is ever touched but instance directories: this
/// one, and dead ones (see [`InstanceDir::create`]).
pub(crate) struct InstanceDir {
    path: PathBuf,
    /// Holds the lock of [`INSTANCE_LOCK`]; released when dropped (after the directory is removed).
    _lock: File,
}

impl InstanceDir {
    /// Creates `<local_dir>/<operator>-<subtask>-<random>` (a name that exists already is never reused) and
    /// locks it. First removes the instance directories in `local_dir` whose lock nobody holds: those of
    /// backends in processes that died (a killed job's), whatever job, operator or subtask they served.
    /// Directories without the lock file are not instance directories and stay.
    ///
    /// # Errors
    /// [`Error::Local`] if `local_dir` or the new directory cannot be created or locked. Failing to remove
    /// a dead instance's directory is logged, not an error.
    pub(crate) fn create(identity: &SubtaskIdentity, config: &RocksDbConfig) -> Result<Self> {
        let local = &config.local_dir;
        std::fs::create_dir_all(local).map_err(|e| Error::local(local.display(), e))?;
        let removed = remove_dead_instances(local);
        if removed > 0 {
            tracing::info!(local_dir = %local.display(), removed, "removed directories of dead LSM backend instances");
        }
        let path = tempfile::Builder::new()
            .prefix(&format!(
                "{}-{}-",
                identity.operator_id(),
                identity.subtask_index()
            ))
            .rand_bytes(12)
            .tempdir_in(local)
            .map_err(|e| Error::local(local.display(), e))?
            .keep();
        let lock_path = path.join(INSTANCE_LOCK);
        // Empty until locked: a remover that takes the lock of an empty lock file leaves the directory
        // alone (it is being created), so creating and locking need not be one step.
        let mut lock =
            File::create(&lock_path).map_err(|e| Error::local(lock_path.display(), e))?;
        #[cfg(test)]
        tests::BEFORE_LOCK.with(|hook| {
            if let Some(hook) = hook.borrow().as_ref() {
                hook(local)
            }
        });
        // Blocking: a remover holds it only while it looks at the empty file.
        lock.lock()
            .map_err(|e| Error::local(lock_path.display(), e))?;
        use std::io::Write;
        writeln!(lock, "pid {}", std::process::id())
            .map_err(|e| Error::local(lock_path.display(), e))?;
        if !path.is_dir() {
            return Err(Error::local(
                path.display(),
                "the new instance directory was removed while it was created",
            ));
        }
        Ok(InstanceDir { path, _lock: lock })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The DB's directory.
    pub(crate) fn db(&self) -> PathBuf {
        self.path.join("db")
    }

    /// Where the native checkpoint of `checkpoint_id` is taken.
    pub(crate) fn checkpoint(&self, checkpoint_id: u64) -> PathBuf {
        self.path
            .join("checkpoints")
            .join(format!("chk-{checkpoint_id}"))
    }
}

impl Drop for InstanceDir {
    fn drop(&mut self) {
        if let Err(e) = remove_dir_if_exists(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the local state directory");
        }
    }
}

/// Age after which an instance directory whose lock file is still empty counts as dead (its creator died
/// between creating the lock file and locking it).
const EMPTY_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes every directory in `local_dir` that holds [`INSTANCE_LOCK`] and whose lock can be taken (its
/// backend's process is gone); returns how many. The lock is held while the directory is removed, so two
/// processes never remove one directory twice, and a live backend's directory (locked) is never touched.
/// A lock file that is still empty belongs to a directory being created (its creator writes its pid once
/// it holds the lock): left alone unless older than [`EMPTY_LOCK_GRACE`].
fn remove_dead_instances(local_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(local_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let Ok(lock) = File::options()
            .read(true)
            .write(true)
            .open(dir.join(INSTANCE_LOCK))
        else {
            continue;
        };
        match lock.try_lock() {
            Ok(()) if being_created(&lock) => {}
            Ok(()) => match remove_dir_if_exists(&dir) {
                Ok(()) => removed += 1,
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "could not remove a dead instance's directory")
                }
            },
            Err(std::fs::TryLockError::WouldBlock) => {}
            Err(std::fs::TryLockError::Error(e)) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot tell whether an instance directory is in use; kept")
            }
        }
    }
    removed
}

pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::local(dir.display().to_string(), e)),
    }
}

/// Whether a lock file (locked by the caller) is empty and young: its directory is being created.
fn being_created(lock: &File) -> bool {
    lock.metadata().is_ok_and(|m| {
        m.len() == 0
            && m.modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_none_or(|age| age < EMPTY_LOCK_GRACE)
    })
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// A hook given the new instance directory.
    type DirHook = Box<dyn Fn(&Path)>;

    thread_local! {
        /// Runs between creating a new instance's lock file and locking it.
        pub(super) static BEFORE_LOCK: RefCell<Option<DirHook>> = const { RefCell::new(None) };
    }

    /// Subtasks starting at once removed each other's new directories: another process's clean-up ran
    /// between a directory's creation and its lock, found the lock free, and removed it.
    #[test]
    fn a_clean_up_between_creation_and_lock_keeps_the_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let config = RocksDbConfig {
            local_dir: dir.path().into(),
            ..RocksDbConfig::default()
        };
        BEFORE_LOCK.with(|h| {
            *h.borrow_mut() = Some(Box::new(|local: &Path| {
                remove_dead_instances(local);
            }))
        });
        let created = InstanceDir::create(&identity, &config);
        BEFORE_LOCK.with(|h| *h.borrow_mut() = None);
        let created = created.unwrap();
        assert!(created.path().join(INSTANCE_LOCK).is_file());
        // Locked and not empty: a later clean-up leaves it; once dropped, it is gone.
        assert_eq!(remove_dead_instances(dir.path()), 0);
        assert!(created.path().is_dir());
        let path = created.path().to_path_buf();
        drop(created);
        assert!(!path.exists());
    }
}
