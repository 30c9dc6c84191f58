//! What a restore has read of one keyed snapshot file (or of a chain, merged): the layer's hand-over
//! type between reading (`load.rs`), merging (`chain.rs`) and the backends' restores.

use crate::format::keyed_file::FileHeader;
use crate::snapshot::result::RestoreSources;

/// The key groups of one file that a restore needs, decoded to raw record bytes.
pub(crate) struct LoadedFile {
    /// The file's path as the store names it (for errors).
    pub(crate) path: String,
    pub(crate) header: FileHeader,
    /// Decoded record bytes of each wanted key group that has records, ascending.
    pub(crate) groups: Vec<(u32, Vec<u8>)>,
    /// Whether the file was read from its local copy or checkpoint storage, and how many bytes.
    pub(crate) sources: RestoreSources,
}
