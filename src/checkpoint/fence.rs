//! Generation fencing between coordinators of one job (`docs/protocol.md`, "Fencing"): every coordinator
//! registers a generation above all others when it opens, and deletes nothing another coordinator may
//! reference once a newer generation exists.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::storage::{CheckpointStorage, Created};

/// Directory (relative to the job root) of the generation markers.
pub const COORDINATORS_DIR: &str = "_coordinators";

/// Generations tried by one registration before it gives up (each taken by another coordinator).
const MAX_REGISTER_ATTEMPTS: usize = 64;

/// A coordinator's generation and the storage it is registered in.
#[derive(Debug, Clone)]
pub(crate) struct Fence {
    storage: CheckpointStorage,
    generation: u64,
}

/// Object-store path (relative to the job root) of generation `g`'s marker: 20 decimal digits, so that
/// names sort as numbers.
fn marker(g: u64) -> String {
    format!("{COORDINATORS_DIR}/{g:020}")
}

impl Fence {
    /// Registers a generation above every one in `storage` (create-if-absent of its marker, whose content
    /// names the coordinator `instance`).
    ///
    /// # Errors
    /// Storage errors; [`Error::IllegalState`] if 64 generations in a row were taken meanwhile.
    pub(crate) async fn register(storage: &CheckpointStorage, instance: &str) -> Result<Fence> {
        let mut generation = highest(storage).await?.map_or(1, |h| h + 1);
        for _ in 0..MAX_REGISTER_ATTEMPTS {
            let content = Bytes::from(format!(
                "generation {generation} of coordinator {instance}\n"
            ));
            match storage.put_if_absent(&marker(generation), content).await? {
                Created::Yes => {
                    return Ok(Fence {
                        storage: storage.clone(),
                        generation,
                    });
                }
                Created::Conflict => generation += 1,
            }
        }
        Err(Error::IllegalState(format!(
            "{MAX_REGISTER_ATTEMPTS} coordinator generations were registered by others meanwhile"
        )))
    }

    /// This coordinator's generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether no coordinator of a newer generation exists: deletes are allowed only then.
    ///
    /// # Errors
    /// Storage errors while listing (the caller must then not delete either).
    pub(crate) async fn holds(&self) -> Result<bool> {
        Ok(highest(&self.storage)
            .await?
            .is_none_or(|h| h <= self.generation))
    }

    /// Deletes this generation's own marker (the job ends).
    ///
    /// # Errors
    /// Storage errors.
    pub(crate) async fn retire(&self) -> Result<()> {
        self.storage.delete(&marker(self.generation)).await
    }

    /// Deletes the markers of older generations (a newer one fences them for ever); best effort.
    pub(crate) async fn retire_older(&self) {
        let Ok(files) = self.storage.list_files(COORDINATORS_DIR).await else {
            return;
        };
        for f in files {
            if parse(&f.path).is_some_and(|g| g < self.generation) {
                let _ = self.storage.delete(&f.path).await;
            }
        }
    }
}

/// Generation of a marker path.
fn parse(path: &str) -> Option<u64> {
    path.strip_prefix(COORDINATORS_DIR)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

/// The highest generation registered in `storage`.
async fn highest(storage: &CheckpointStorage) -> Result<Option<u64>> {
    Ok(storage
        .list_files(COORDINATORS_DIR)
        .await?
        .iter()
        .filter_map(|f| parse(&f.path))
        .max())
}
