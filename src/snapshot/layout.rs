//! Where everything of a job lives under its root (`<root>/<job_id>/`, `docs/formats.md`, "Storage
//! layout"): the one place that names every path and parses a listed one.
//!
//! ```text
//! chk-<n>/_metadata            a checkpoint exists iff this exists (written last, create-if-absent)
//! chk-<n>/_trigger             id n was reserved (the highest one is the id watermark)
//! chk-<n>/_pinned, _stats      pinned by a NO_CLAIM restore; durations of its phases
//! chk-<n>/<file>               private files of checkpoint n
//! shared/<file>                files several checkpoints may reference
//! savepoints/sp-<n>/...        savepoint n: its _metadata, _trigger and files (self-contained)
//! _coordinators/<generation>   generation markers (fencing); `.closed` once shut down
//! _lineage/<g>-<id>-<kind>     where a generation's line continues from
//! _probe/<id>, _clock          conditional-create probes; the store-clock probe
//! ```

/// Name of the metadata file inside a checkpoint or savepoint directory.
pub const METADATA_FILE: &str = "_metadata";
/// Directory (relative to the job root) of shared files.
pub const SHARED_DIR: &str = "shared";
/// Marker file in a checkpoint directory: the checkpoint is pinned (restored in NO_CLAIM mode) and never
/// deleted by the job.
pub const PINNED_MARKER: &str = "_pinned";
/// Directory (relative to the job root) of savepoints.
pub const SAVEPOINT_DIR: &str = "savepoints";
/// File in a completed checkpoint's directory, written after `_metadata` (best effort): the durations
/// of its phases, for `statectl history` (`docs/formats.md`). Part of the checkpoint like its metadata.
pub const STATS_FILE: &str = "_stats";
/// Marker file in a checkpoint or savepoint directory: the id was reserved by a coordinator
/// (`docs/protocol.md`, "Ids never repeat"); its content names the coordinator instance.
pub const TRIGGER_MARKER: &str = "_trigger";
/// Directory (relative to the job root) of the coordinators' generation markers.
pub const COORDINATORS_DIR: &str = "_coordinators";
/// Directory (relative to the job root) of the lineage records.
pub const LINEAGE_DIR: &str = "_lineage";
/// Directory (relative to the job root) of conditional-create probes: `_probe/<16 hex>`, deleted by the
/// prober; one a failed delete leaves is collected by the orphan sweep.
pub const PROBE_DIR: &str = "_probe";
/// File (relative to the job root) a sweep overwrites to read the store's clock from its
/// `Last-Modified`.
pub const CLOCK_FILE: &str = "_clock";

/// Prefix of a checkpoint directory's name.
const CHECKPOINT_PREFIX: &str = "chk-";
/// Prefix of a savepoint directory's name.
const SAVEPOINT_PREFIX: &str = "sp-";

/// Directory (relative to the job root) of checkpoint `id`: `chk-<id>`.
pub fn checkpoint_dir(id: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{id}")
}

/// Directory (relative to the job root) of savepoint `id`: `savepoints/sp-<id>`. A savepoint's files and
/// its `_metadata` live there only (self-contained: `docs/savepoints.md`).
pub fn savepoint_dir(id: u64) -> String {
    format!("{SAVEPOINT_DIR}/{SAVEPOINT_PREFIX}{id}")
}

/// The id of a checkpoint directory's name (`chk-<n>`), if `name` is one.
pub fn checkpoint_dir_id(name: &str) -> Option<u64> {
    parse_id(name.strip_prefix(CHECKPOINT_PREFIX)?)
}

/// The id of a savepoint directory's name (`sp-<n>`, the last component), if `name` is one.
pub fn savepoint_dir_id(name: &str) -> Option<u64> {
    parse_id(name.strip_prefix(SAVEPOINT_PREFIX)?)
}

/// The id in a directory name (as `u64::from_str`).
fn parse_id(digits: &str) -> Option<u64> {
    digits.parse().ok()
}

/// What a path relative to the job root is, as [`JobPath::parse`] reads a listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobPath<'a> {
    /// `chk-<id>/<name>` (`name` may hold further `/`).
    Checkpoint {
        /// Checkpoint id.
        id: u64,
        /// The path below the checkpoint directory.
        name: &'a str,
    },
    /// `savepoints/sp-<id>/<name>`.
    Savepoint {
        /// Savepoint id.
        id: u64,
        /// The path below the savepoint directory.
        name: &'a str,
    },
    /// `shared/<name>`.
    Shared(&'a str),
    /// `_coordinators/<name>`, `_lineage/<name>`, `_probe/<name>` or `_clock`: the protocol's own files.
    Protocol(&'a str),
    /// Anything else (a file of another writer, or of a newer release).
    Other,
}

impl<'a> JobPath<'a> {
    /// Classifies `path`, relative to the job root.
    pub fn parse(path: &'a str) -> JobPath<'a> {
        if path == CLOCK_FILE {
            return JobPath::Protocol(path);
        }
        let Some((dir, rest)) = path.split_once('/') else {
            return JobPath::Other;
        };
        if dir == SHARED_DIR {
            return JobPath::Shared(rest);
        }
        if [COORDINATORS_DIR, LINEAGE_DIR, PROBE_DIR].contains(&dir) {
            return JobPath::Protocol(path);
        }
        if dir == SAVEPOINT_DIR {
            return match rest.split_once('/') {
                Some((sp, name)) => match savepoint_dir_id(sp) {
                    Some(id) => JobPath::Savepoint { id, name },
                    None => JobPath::Other,
                },
                None => JobPath::Other,
            };
        }
        match checkpoint_dir_id(dir) {
            Some(id) => JobPath::Checkpoint { id, name: rest },
            None => JobPath::Other,
        }
    }

    /// The directory of the snapshot the path lies in (`chk-<n>` or `savepoints/sp-<n>`), if any.
    pub fn snapshot_dir(&self) -> Option<String> {
        match self {
            JobPath::Checkpoint { id, .. } => Some(checkpoint_dir(*id)),
            JobPath::Savepoint { id, .. } => Some(savepoint_dir(*id)),
            _ => None,
        }
    }

    /// Whether the path is one of the protocol's bookkeeping files (a snapshot's `_metadata`,
    /// `_trigger`, `_pinned` or `_stats`, or a file of [`JobPath::Protocol`]) rather than state.
    pub fn is_bookkeeping(&self) -> bool {
        match self {
            JobPath::Checkpoint { name, .. } | JobPath::Savepoint { name, .. } => {
                [METADATA_FILE, TRIGGER_MARKER, PINNED_MARKER, STATS_FILE].contains(name)
            }
            JobPath::Protocol(_) => true,
            JobPath::Shared(_) | JobPath::Other => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_path_of_the_layout_parses_to_its_place() {
        assert_eq!(
            JobPath::parse("chk-12/_metadata"),
            JobPath::Checkpoint {
                id: 12,
                name: METADATA_FILE
            }
        );
        assert_eq!(
            JobPath::parse("chk-3/db/000012.sst"),
            JobPath::Checkpoint {
                id: 3,
                name: "db/000012.sst"
            }
        );
        assert_eq!(
            JobPath::parse("savepoints/sp-4/op-0.keyed"),
            JobPath::Savepoint {
                id: 4,
                name: "op-0.keyed"
            }
        );
        assert_eq!(JobPath::parse("shared/a.sst"), JobPath::Shared("a.sst"));
        for protocol in [
            "_coordinators/00000000000000000001",
            "_lineage/x",
            "_probe/ab",
            "_clock",
        ] {
            assert_eq!(JobPath::parse(protocol), JobPath::Protocol(protocol));
        }
        for other in [
            "chk-x/a",
            "chk-/a",
            "chk-1",
            "savepoints/sp-1",
            "savepoints/x/a",
            "a",
        ] {
            assert_eq!(JobPath::parse(other), JobPath::Other, "{other}");
        }
        assert_eq!(
            JobPath::parse(&format!("{}/{STATS_FILE}", checkpoint_dir(9))).snapshot_dir(),
            Some("chk-9".to_string())
        );
        assert_eq!(savepoint_dir(5), "savepoints/sp-5");
        assert_eq!(savepoint_dir_id("sp-5"), Some(5));
        assert!(JobPath::parse("chk-1/_pinned").is_bookkeeping());
        assert!(!JobPath::parse("chk-1/op.keyed").is_bookkeeping());
    }
}
