//! Removing instance directories: the backend's own when it is dropped, and those of dead instances (see
//! [`InstanceDir::create`](super::InstanceDir::create)).

use std::fs::File;
use std::path::Path;

use super::{INSTANCE_LOCK, INSTANCE_SUFFIX_LEN};
use crate::error::{Error, Result};

/// Age after which an instance directory whose lock file is still empty counts as dead (its creator died
/// between creating the lock file and locking it).
const EMPTY_LOCK_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Removes every directory in `local_dir` that holds [`INSTANCE_LOCK`] and whose lock can be taken (its
/// backend's process is gone), and every empty directory named as an instance directory without the lock
/// file (its creator, or a removal, was cut off between the directory and its lock file); returns how
/// many. The lock is held while the directory is removed, so two processes never remove one directory
/// twice, and a live backend's directory (locked) is never touched. A lock file that is still empty
/// belongs to a directory being created (its creator writes its pid once it holds the lock): left alone
/// unless older than [`EMPTY_LOCK_GRACE`].
pub(super) fn remove_dead_instances(local_dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(local_dir) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let dir = entry.path();
        let lock = match File::options()
            .read(true)
            .write(true)
            .open(dir.join(INSTANCE_LOCK))
        {
            Ok(lock) => lock,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Removing an empty directory is one step that fails once anything is in it: a creator
                // that made its lock file first keeps its directory; one that did not tries a new name.
                if has_instance_name(&entry.file_name()) && std::fs::remove_dir(&dir).is_ok() {
                    removed += 1;
                }
                continue;
            }
            Err(_) => continue,
        };
        match lock.try_lock() {
            Ok(()) if being_created(&lock) => {}
            Ok(()) => match remove_instance(&dir) {
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

/// Removes an instance directory, its lock file last: a removal cut off midway (the process killed)
/// leaves the lock file, unlocked, and the next clean-up finishes the removal; cut off between the lock
/// file and the directory, it leaves an empty directory, which the next clean-up also removes. Removing
/// the directory whole would take its entries in the file system's order, the lock file perhaps first,
/// and a removal cut off after it left a directory that no clean-up recognised as an instance's.
pub(super) fn remove_instance(dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::local(dir.display(), e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::local(dir.display(), e))?;
        if entry.file_name() == INSTANCE_LOCK {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        already_gone_is_fine(&path, removed)?;
        #[cfg(test)]
        super::test_hooks::run(&super::test_hooks::AFTER_ENTRY_REMOVED, &path);
    }
    let lock = dir.join(INSTANCE_LOCK);
    already_gone_is_fine(&lock, std::fs::remove_file(&lock))?;
    already_gone_is_fine(dir, std::fs::remove_dir(dir))
}

/// The outcome of removing `path`: done, or already gone (a removal is idempotent); any other failure is
/// an [`Error::Local`] naming `path`.
fn already_gone_is_fine(path: &Path, removed: std::io::Result<()>) -> Result<()> {
    match removed {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::local(path.display(), e)),
        _ => Ok(()),
    }
}

/// Whether a directory's name has the shape [`InstanceDir::create`] gives: `<operator>-<subtask>-` and
/// [`INSTANCE_SUFFIX_LEN`] ASCII letters or digits.
fn has_instance_name(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let Some((rest, suffix)) = name.rsplit_once('-') else {
        return false;
    };
    let Some((operator, subtask)) = rest.rsplit_once('-') else {
        return false;
    };
    !operator.is_empty()
        && !subtask.is_empty()
        && subtask.bytes().all(|b| b.is_ascii_digit())
        && suffix.len() == INSTANCE_SUFFIX_LEN
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Removes a directory and everything in it; one already gone is fine.
///
/// # Errors
/// [`Error::Local`] naming `dir`.
pub(crate) fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    already_gone_is_fine(dir, std::fs::remove_dir_all(dir))
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
    use std::path::PathBuf;

    use super::super::test_hooks::{AFTER_ENTRY_REMOVED, set};
    use super::*;

    /// A dead instance's directory as a killed backend leaves it: an unlocked lock file naming its pid,
    /// a DB directory and files beside it.
    fn dead_instance(local: &Path, name: &str) -> PathBuf {
        let dir = local.join(name);
        std::fs::create_dir_all(dir.join("db")).unwrap();
        for i in 0..20 {
            std::fs::write(dir.join("db").join(format!("{i:06}.sst")), b"sst").unwrap();
            std::fs::write(dir.join(format!("file-{i}")), b"x").unwrap();
        }
        std::fs::write(dir.join(INSTANCE_LOCK), b"pid 1\n").unwrap();
        dir
    }

    /// Found by the kill loop on a machine whose file system listed the lock file before the DB
    /// directory: a process killed while it removed a dead instance's directory (its own start-up
    /// clean-up) had removed the lock file first, and the half-removed directory stayed for good, no
    /// clean-up taking it for an instance's.
    #[test]
    fn a_kill_during_a_removal_leaves_a_directory_the_next_clean_up_removes() {
        let local = tempfile::tempdir().unwrap();
        let dir = dead_instance(local.path(), "op-0-AbCdEf012345");
        // "Killed" after the first entry went.
        AFTER_ENTRY_REMOVED
            .with(|h| *h.borrow_mut() = Some(Box::new(|_: &Path| panic!("killed mid-removal"))));
        let cut = std::panic::catch_unwind(|| remove_dead_instances(local.path()));
        set(&AFTER_ENTRY_REMOVED, None);
        assert!(cut.is_err());
        assert!(dir.join(INSTANCE_LOCK).is_file(), "the lock file goes last");
        assert!(std::fs::read_dir(&dir).unwrap().count() > 1);
        assert_eq!(remove_dead_instances(local.path()), 1);
        assert!(!dir.exists());
    }

    /// A creator killed between its directory and its lock file (or a removal between the lock file and
    /// the directory) leaves an empty directory named as an instance's: removed. Other directories stay.
    #[test]
    fn an_empty_instance_directory_without_lock_file_is_removed_and_nothing_else() {
        let local = tempfile::tempdir().unwrap();
        let empty = local.path().join("word-counter-3-abcdefGHIJ12");
        let not_instance = local.path().join("my-notes");
        let with_data = local.path().join("op-1-abcdefGHIJ12");
        for dir in [&empty, &not_instance, &with_data] {
            std::fs::create_dir(dir).unwrap();
        }
        std::fs::write(with_data.join("data"), b"kept").unwrap();
        assert_eq!(remove_dead_instances(local.path()), 1);
        assert!(!empty.exists());
        assert!(not_instance.is_dir());
        assert!(with_data.join("data").is_file());
    }

    #[test]
    fn instance_names() {
        for name in ["op-0-abcdefGHIJ12", "word-counter-12-000000000000"] {
            assert!(has_instance_name(name.as_ref()), "{name}");
        }
        for name in [
            "op-0-abcdefGHIJ1",
            "op-x-abcdefGHIJ12",
            "-0-abcdefGHIJ12",
            "op--abcdefGHIJ12",
            "op-0-abcdefGHIJ1_",
            "abcdefGHIJ12",
        ] {
            assert!(!has_instance_name(name.as_ref()), "{name}");
        }
    }
}
