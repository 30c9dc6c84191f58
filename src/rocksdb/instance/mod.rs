//! The RocksDB backend's own working directory, locked while the backend lives, and removing the directories
//! of dead instances and local directories.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::keyed::identity::SubtaskIdentity;
use crate::rocksdb::config::RocksDbConfig;

mod removal;

pub(crate) use removal::remove_dir_if_exists;
use removal::{remove_dead_instances, remove_instance};

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
    /// backends in processes that died (a killed job's), whatever job, operator or subtask they served,
    /// and empty directories named as instance directories (a creator or a removal cut off next to the
    /// lock file). Other directories without the lock file are not instance directories and stay. When
    /// another process's clean-up removes the new directory before its lock file exists, another name
    /// is tried (up to [`CREATE_ATTEMPTS`] names).
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
        // A clean-up in another process may remove the new directory while it is still empty (it looks
        // like one whose creator died before creating its lock file): then creating the lock file finds
        // no directory, and a new name is tried.
        let mut attempt = 1;
        loop {
            match Self::try_create(identity, local) {
                Err(CreateError::Removed(e)) if attempt < CREATE_ATTEMPTS => {
                    tracing::debug!(error = %e, attempt, "a new instance directory was removed while created; trying another name");
                    attempt += 1;
                }
                Err(CreateError::Removed(e)) | Err(CreateError::Other(e)) => return Err(e),
                Ok(created) => return Ok(created),
            }
        }
    }

    /// One attempt of [`InstanceDir::create`] after the clean-up.
    fn try_create(
        identity: &SubtaskIdentity,
        local: &Path,
    ) -> std::result::Result<Self, CreateError> {
        let other = CreateError::Other;
        let path = tempfile::Builder::new()
            .prefix(&format!(
                "{}-{}-",
                identity.operator_id(),
                identity.subtask_index()
            ))
            .rand_bytes(INSTANCE_SUFFIX_LEN)
            .tempdir_in(local)
            .map_err(|e| other(Error::local(local.display(), e)))?
            .keep();
        #[cfg(test)]
        test_hooks::run(&test_hooks::BEFORE_LOCK_FILE, &path);
        let lock_path = path.join(INSTANCE_LOCK);
        // Empty until locked: a remover that takes the lock of an empty lock file leaves the directory
        // alone (it is being created), so creating and locking need not be one step.
        let mut lock = File::create(&lock_path).map_err(|e| {
            let removed = e.kind() == std::io::ErrorKind::NotFound;
            let e = Error::local(lock_path.display(), e);
            if removed {
                CreateError::Removed(e)
            } else {
                other(e)
            }
        })?;
        #[cfg(test)]
        test_hooks::run(&test_hooks::BEFORE_LOCK, local);
        // Blocking: a remover holds it only while it looks at the empty file.
        lock.lock()
            .map_err(|e| other(Error::local(lock_path.display(), e)))?;
        use std::io::Write;
        writeln!(lock, "pid {}", std::process::id())
            .map_err(|e| other(Error::local(lock_path.display(), e)))?;
        if !path.is_dir() {
            return Err(other(Error::local(
                path.display(),
                "the new instance directory was removed while it was created",
            )));
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
        if let Err(e) = remove_instance(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove the local state directory");
        }
    }
}

/// How many names [`InstanceDir::create`] tries when a clean-up elsewhere removes its new directory.
const CREATE_ATTEMPTS: u32 = 8;

/// Length of the random end of an instance directory's name (ASCII letters and digits, as `tempfile`
/// draws them).
const INSTANCE_SUFFIX_LEN: usize = 12;

/// Why one attempt to create an instance directory failed.
enum CreateError {
    /// The directory was gone when its lock file was created (another process's clean-up removed it).
    Removed(Error),
    Other(Error),
}

#[cfg(test)]
mod test_hooks {
    //! Points where tests cut in: another process's clean-up, or a kill.
    use std::cell::RefCell;
    use std::path::Path;

    /// A hook given a directory.
    pub(super) type DirHook = Box<dyn Fn(&Path)>;

    thread_local! {
        /// Runs between creating a new instance directory and creating its lock file.
        pub(super) static BEFORE_LOCK_FILE: RefCell<Option<DirHook>> = const { RefCell::new(None) };
        /// Runs between creating a new instance's lock file and locking it (given `local_dir`).
        pub(super) static BEFORE_LOCK: RefCell<Option<DirHook>> = const { RefCell::new(None) };
        /// Runs after each entry but the lock file of an instance directory is removed.
        pub(super) static AFTER_ENTRY_REMOVED: RefCell<Option<DirHook>> = const { RefCell::new(None) };
    }

    pub(super) fn run(hook: &'static std::thread::LocalKey<RefCell<Option<DirHook>>>, dir: &Path) {
        hook.with(|hook| {
            if let Some(hook) = hook.borrow().as_ref() {
                hook(dir)
            }
        })
    }

    /// Sets `hook` for the current thread; `None` clears it.
    pub(super) fn set(
        hook: &'static std::thread::LocalKey<RefCell<Option<DirHook>>>,
        f: Option<DirHook>,
    ) {
        hook.with(|h| *h.borrow_mut() = f);
    }
}

#[cfg(test)]
mod tests {
    use super::test_hooks::{BEFORE_LOCK, BEFORE_LOCK_FILE, set};
    use super::*;

    fn config(local: &Path) -> RocksDbConfig {
        RocksDbConfig {
            local_dir: local.into(),
            ..RocksDbConfig::default()
        }
    }

    /// A clean-up in another process may remove a new directory before its lock file exists (empty, it
    /// looks like a dead creator's): the creator tries another name.
    #[test]
    fn a_clean_up_between_the_directory_and_its_lock_file_makes_the_creator_try_another_name() {
        let local = tempfile::tempdir().unwrap();
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let removed = std::rc::Rc::new(std::cell::Cell::new(0));
        let seen = removed.clone();
        set(
            &BEFORE_LOCK_FILE,
            Some(Box::new(move |dir: &Path| {
                if seen.get() == 0 {
                    seen.set(remove_dead_instances(dir.parent().unwrap()));
                }
            })),
        );
        let created = InstanceDir::create(&identity, &config(local.path()));
        set(&BEFORE_LOCK_FILE, None);
        let created = created.unwrap();
        assert_eq!(removed.get(), 1, "the first new directory was removed");
        assert!(created.path().join(INSTANCE_LOCK).is_file());
        assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 1);
    }

    /// The backend's own directory goes whole when it is dropped, lock file included.
    #[test]
    fn a_dropped_instance_leaves_nothing() {
        let local = tempfile::tempdir().unwrap();
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let created = InstanceDir::create(&identity, &config(local.path())).unwrap();
        std::fs::create_dir_all(created.db().join("sub")).unwrap();
        std::fs::write(created.db().join("sub").join("f"), b"x").unwrap();
        drop(created);
        assert_eq!(std::fs::read_dir(local.path()).unwrap().count(), 0);
    }

    /// Subtasks starting at once removed each other's new directories: another process's clean-up ran
    /// between a directory's creation and its lock, found the lock free, and removed it.
    #[test]
    fn a_clean_up_between_creation_and_lock_keeps_the_new_directory() {
        let dir = tempfile::tempdir().unwrap();
        let identity = SubtaskIdentity::new("op", 128, 1, 0).unwrap();
        let config = config(dir.path());
        set(
            &BEFORE_LOCK,
            Some(Box::new(|local: &Path| {
                remove_dead_instances(local);
            })),
        );
        let created = InstanceDir::create(&identity, &config);
        set(&BEFORE_LOCK, None);
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
