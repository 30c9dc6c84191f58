//! Generation fencing between coordinators of one job (`docs/protocol.md`, "Fencing", invariant P5): every coordinator
//! registers a generation above all others when it opens (and again when a restore starts a new line),
//! and writes and deletes nothing another coordinator may use once a newer generation exists. A check
//! that cannot list the generations is "unknown", never "fenced" (`docs/faults.md`).

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::snapshot::layout::COORDINATORS_DIR;
use crate::storage::{CheckpointStorage, Created};

/// Suffix of the marker a coordinator writes when it shuts down: `_coordinators/<g>.closed`.
const CLOSED_SUFFIX: &str = ".closed";

/// Generations tried by one registration before it gives up (each taken by another coordinator).
const MAX_REGISTER_ATTEMPTS: usize = 64;

/// A coordinator's generation and the storage it is registered in. Clones share the generation (the
/// coordinator's and its store's view never differ).
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    inner: std::sync::Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    storage: CheckpointStorage,
    /// The coordinator instance, named in its markers.
    instance: String,
    generation: std::sync::atomic::AtomicU64,
}

/// What a fence check found.
#[derive(Debug)]
pub(crate) enum FenceCheck {
    /// No newer generation exists: this coordinator may write and delete.
    Holds,
    /// Generation `newer` exists: this coordinator is fenced for good.
    Fenced { newer: u64 },
    /// The generations could not be listed: postpone what needs the fence, change nothing durable.
    Unknown(Error),
}

/// Object-store path (relative to the job root) of generation `g`'s marker: 20 decimal digits, so that
/// names sort as numbers.
fn marker(g: u64) -> String {
    format!("{COORDINATORS_DIR}/{g:020}")
}

/// The newest generation of a job and whether its coordinator shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewestGeneration {
    /// The generation.
    pub generation: u64,
    /// Its coordinator wrote its `.closed` marker (`shutdown`): no coordinator of the job is known to run.
    pub closed: bool,
}

/// The content of generation `g`'s marker written by coordinator `instance`.
fn content(g: u64, instance: &str) -> Bytes {
    Bytes::from(format!("generation {g} of coordinator {instance}\n"))
}

impl Fence {
    /// Registers a generation above every one in `storage` (create-if-absent of its marker, whose content
    /// names the coordinator `instance`).
    ///
    /// # Errors
    /// Storage errors; [`Error::IllegalState`] if 64 generations in a row were taken meanwhile.
    pub(crate) async fn register(storage: &CheckpointStorage, instance: &str) -> Result<Fence> {
        let fence = Fence {
            inner: std::sync::Arc::new(Inner {
                storage: storage.clone(),
                instance: instance.to_string(),
                generation: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        fence.advance().await?;
        Ok(fence)
    }

    /// Registers a generation above every one in storage for this coordinator (a restore starts a new
    /// line). A create that failed in a way that may have taken effect is read back: the marker naming
    /// this instance is its own, so a coordinator never fences itself with a registration it did not
    /// learn of (and [`Fence::check`] adopts such a marker too).
    ///
    /// # Errors
    /// Storage errors (the generation stays as it was); [`Error::IllegalState`] if 64 generations in a row
    /// were taken meanwhile.
    pub(crate) async fn advance(&self) -> Result<()> {
        let storage = &self.inner.storage;
        let mut generation = highest(storage).await?.map_or(1, |h| h.generation + 1);
        for _ in 0..MAX_REGISTER_ATTEMPTS {
            let ours = content(generation, &self.inner.instance);
            let created = match storage
                .put_if_absent(&marker(generation), ours.clone())
                .await
            {
                Ok(created) => created,
                Err(e) => match storage.read(&marker(generation)).await {
                    Ok(found) if found == ours => Created::Yes,
                    Ok(_) => Created::Conflict,
                    Err(_) => return Err(e),
                },
            };
            match created {
                Created::Yes => {
                    self.set_generation(generation);
                    return Ok(());
                }
                Created::Conflict => generation += 1,
            }
        }
        Err(Error::IllegalState(format!(
            "{MAX_REGISTER_ATTEMPTS} coordinator generations were registered by others meanwhile"
        )))
    }

    fn set_generation(&self, g: u64) {
        self.inner
            .generation
            .fetch_max(g, std::sync::atomic::Ordering::SeqCst);
    }

    /// This coordinator's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.inner
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether a newer generation exists. A newer marker that names this coordinator instance is its own
    /// (a registration whose answer was lost): adopted, not a fence.
    pub(crate) async fn check(&self) -> FenceCheck {
        let storage = &self.inner.storage;
        match highest(storage).await {
            Ok(Some(h)) if h.generation > self.generation() => {
                match storage.read(&marker(h.generation)).await {
                    Ok(found) if found == content(h.generation, &self.inner.instance) => {
                        self.set_generation(h.generation);
                        FenceCheck::Holds
                    }
                    Ok(_) => FenceCheck::Fenced {
                        newer: h.generation,
                    },
                    // Gone again (retired) or unreadable: ask again later.
                    Err(e) => FenceCheck::Unknown(e),
                }
            }
            Ok(_) => FenceCheck::Holds,
            Err(e) => FenceCheck::Unknown(e),
        }
    }

    /// The error a fenced coordinator answers.
    pub(crate) fn fenced_error(&self, newer: u64) -> Error {
        Error::Fenced {
            generation: self.generation(),
            newer,
        }
    }

    /// Writes this generation's `.closed` marker: its coordinator shut down (an operator's `statectl gc`
    /// may then sweep without `--force`). The generation marker itself stays, so generations never go
    /// down.
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn close(&self) -> Result<()> {
        let closed = format!("{}{CLOSED_SUFFIX}", marker(self.generation()));
        self.inner
            .storage
            .put_if_absent(&closed, Bytes::from_static(b"closed\n"))
            .await
            .map(|_| ())
    }

    /// Deletes the markers of older generations (a newer one fences them for ever); best effort.
    pub(crate) async fn retire_older(&self) {
        let storage = &self.inner.storage;
        let Ok(files) = storage.list_files(COORDINATORS_DIR).await else {
            return;
        };
        let generation = self.generation();
        for f in files {
            if parse(&f.path).is_some_and(|(g, _)| g < generation) {
                let _ = storage.delete(&f.path).await;
            }
        }
    }
}

/// Generation of a marker path, and whether it is the `.closed` marker.
fn parse(path: &str) -> Option<(u64, bool)> {
    let name = path.strip_prefix(COORDINATORS_DIR)?.strip_prefix('/')?;
    let (digits, closed) = match name.strip_suffix(CLOSED_SUFFIX) {
        Some(d) => (d, true),
        None => (name, false),
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, closed))
}

/// The newest generation registered in `storage`, and whether it shut down.
async fn highest(storage: &CheckpointStorage) -> Result<Option<NewestGeneration>> {
    let mut newest: Option<NewestGeneration> = None;
    let mut closed = std::collections::BTreeSet::new();
    for (g, is_closed) in storage
        .list_files(COORDINATORS_DIR)
        .await?
        .iter()
        .filter_map(|f| parse(&f.path))
    {
        if is_closed {
            closed.insert(g);
        } else if newest.is_none_or(|n| g > n.generation) {
            newest = Some(NewestGeneration {
                generation: g,
                closed: false,
            });
        }
    }
    Ok(newest.map(|n| NewestGeneration {
        closed: closed.contains(&n.generation),
        ..n
    }))
}

impl NewestGeneration {
    /// The newest coordinator generation of the job in `storage` and whether it shut down (read-only):
    /// `statectl gc` refuses to sweep while it has not, since a running coordinator's files could be in
    /// flight. `None` for a job no coordinator opened.
    ///
    /// # Errors
    /// Storage errors while listing.
    pub async fn read(storage: &CheckpointStorage) -> Result<Option<NewestGeneration>> {
        highest(storage).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_parse_and_other_names_do_not() {
        assert_eq!(parse(&marker(7)), Some((7, false)));
        assert_eq!(parse(&format!("{}.closed", marker(7))), Some((7, true)));
        for other in [
            "_coordinators/probe",
            "_coordinators/7",
            "_coordinators/0000000000000000000x",
        ] {
            assert_eq!(parse(other), None, "{other}");
        }
    }
}
