//! The RocksDB instance of one backend, as a component that owns it: the DB and its column families, the
//! options it was opened with and its block cache, the write and read options of every access (no WAL:
//! durability comes from checkpoints), and the working directory it lives in. Every RocksDB error leaves
//! here as a typed [`Error`] naming what failed; the backend above sees states, rows and batches.

use rocksdb::{
    ColumnFamily, DB, DBPinnableSlice, DBRawIterator, FlushOptions, IngestExternalFileOptions,
    Options, ReadOptions, WriteBatch, WriteOptions,
};

use crate::error::{Error, Result};
use crate::rocksdb::config::RocksDbConfig;
use crate::rocksdb::instance::InstanceDir;
use crate::rocksdb::options::{ColumnFamilyOptions, Memory, options_with};
use crate::rocksdb::ttl::TtlFilters;

/// Prefix of the rows in the `default` column family that describe states (`docs/formats.md`).
const META_PREFIX: &[u8] = b"meta:";

/// Properties whose sum is the number of entries still in memtables (active and immutable).
const MEMTABLE_ENTRIES: [&str; 2] = [
    "rocksdb.num-entries-active-mem-table",
    "rocksdb.num-entries-imm-mem-tables",
];

/// A RocksDB error as a local error naming `what`.
pub(crate) fn db_error(what: impl std::fmt::Display, e: rocksdb::Error) -> Error {
    Error::local(what.to_string(), e)
}

/// One backend's RocksDB instance in its own working directory.
pub(crate) struct Db {
    db: DB,
    cf_options: ColumnFamilyOptions,
    memory: Memory,
    write: WriteOptions,
    read: ReadOptions,
    /// The column families opened with automatic compactions off, until [`Db::resume_compactions`].
    paused: Vec<String>,
    /// Declared last: fields drop in order, so the DB is closed before its directory is removed.
    instance: InstanceDir,
}

impl Db {
    /// Opens the DB in `instance`'s `db/` directory with every column family it has, or creates it.
    ///
    /// # Errors
    /// [`Error::Local`] naming the directory if it cannot be created or RocksDB cannot open it.
    /// Keyed states' column families compact with the TTL filters of `filters` (`rocksdb/ttl.rs`); blocks
    /// and memtables live in `memory` (a cache of its own, or a budget shared with other backends).
    ///
    /// With `paused`, no column family it opens compacts by itself until [`Db::resume_compactions`]:
    /// a rescale clips first, so that RocksDB neither compacts rows about to be dropped nor stalls the
    /// clip's writes on the level-0 files several handles brought (RocksDB counts level-0 files
    /// against `level0_stop_writes_trigger` only while automatic compactions are on).
    pub(crate) fn open(
        config: &RocksDbConfig,
        instance: InstanceDir,
        filters: TtlFilters,
        memory: Memory,
        paused: bool,
    ) -> Result<Db> {
        let dir = instance.db();
        std::fs::create_dir_all(&dir).map_err(|e| Error::local(dir.display().to_string(), e))?;
        let options = options_with(config, &memory);
        let cf_options = ColumnFamilyOptions::new(config, &memory, Some(filters));
        let cfs = if dir.join("CURRENT").exists() {
            DB::list_cf(&options, &dir).map_err(|e| db_error(dir.display(), e))?
        } else {
            vec!["default".to_string()]
        };
        let descriptors = match paused {
            false => cf_options.descriptors(&cfs),
            true => (cfs.iter())
                .map(|name| {
                    let mut options = cf_options.for_cf(name);
                    options.set_disable_auto_compactions(true);
                    rocksdb::ColumnFamilyDescriptor::new(name, options)
                })
                .collect(),
        };
        let db = DB::open_cf_descriptors(&options, &dir, descriptors)
            .map_err(|e| db_error(dir.display(), e))?;
        let mut write = WriteOptions::default();
        write.disable_wal(true);
        Ok(Db {
            db,
            cf_options,
            memory,
            write,
            read: ReadOptions::default(),
            paused: if paused { cfs } else { Vec::new() },
            instance,
        })
    }

    /// Turns automatic compactions back on in the column families [`Db::open`] paused (none otherwise).
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB if RocksDB refuses the option change.
    pub(crate) fn resume_compactions(&mut self) -> Result<()> {
        for name in std::mem::take(&mut self.paused) {
            if let Some(cf) = self.db.cf_handle(&name) {
                (self
                    .db
                    .set_options_cf(cf, &[("disable_auto_compactions", "false")]))
                .map_err(|e| db_error(self.path(), e))?;
            }
        }
        Ok(())
    }

    /// Where the DB's blocks and memtables live (the read-only opens of a restore or a canonical savepoint
    /// use it too).
    pub(crate) fn memory(&self) -> &Memory {
        &self.memory
    }

    /// The working directory (the DB, native checkpoints, restore downloads).
    pub(crate) fn instance(&self) -> &InstanceDir {
        &self.instance
    }

    /// The options column family `cf` is created and opened with.
    pub(crate) fn cf_options(&self, cf: &str) -> &Options {
        self.cf_options.of(cf)
    }

    /// The RocksDB handle itself (the crate's benches, through the `internals` feature).
    #[cfg(feature = "internals")]
    pub(crate) fn raw(&self) -> &DB {
        &self.db
    }

    fn path(&self) -> String {
        self.instance.db().display().to_string()
    }

    /// The column family `name`, if the DB has it.
    #[inline]
    pub(crate) fn cf(&self, name: &str) -> Option<&ColumnFamily> {
        self.db.cf_handle(name)
    }

    /// # Errors
    /// [`Error::Local`] if RocksDB fails the read.
    #[inline]
    pub(crate) fn get(&self, cf: &ColumnFamily, key: &[u8]) -> Result<Option<DBPinnableSlice<'_>>> {
        self.db
            .get_pinned_cf_opt(cf, key, &self.read)
            .map_err(|e| db_error("get", e))
    }

    /// The rows of `keys` (sorted, as `sorted_input` promises RocksDB) with one `MultiGet`.
    ///
    /// # Errors
    /// [`Error::Local`] if RocksDB fails a read.
    pub(crate) fn multi_get<'k>(
        &self,
        cf: &ColumnFamily,
        keys: impl IntoIterator<Item = &'k [u8]>,
    ) -> Result<Vec<Option<DBPinnableSlice<'_>>>> {
        self.db
            .batched_multi_get_cf_opt(cf, keys, true, &self.read)
            .into_iter()
            .map(|got| got.map_err(|e| db_error("multi_get", e)))
            .collect()
    }

    /// # Errors
    /// [`Error::Local`] if RocksDB fails the write.
    #[inline]
    pub(crate) fn put(&self, cf: &ColumnFamily, key: &[u8], value: &[u8]) -> Result<()> {
        self.db
            .put_cf_opt(cf, key, value, &self.write)
            .map_err(|e| db_error("put", e))
    }

    /// # Errors
    /// [`Error::Local`] if RocksDB fails the write.
    #[inline]
    pub(crate) fn delete(&self, cf: &ColumnFamily, key: &[u8]) -> Result<()> {
        self.db
            .delete_cf_opt(cf, key, &self.write)
            .map_err(|e| db_error("delete", e))
    }

    /// Appends `operand` through the column family's merge operator (list append).
    ///
    /// # Errors
    /// [`Error::Local`] if RocksDB fails the write.
    #[inline]
    pub(crate) fn merge(&self, cf: &ColumnFamily, key: &[u8], operand: &[u8]) -> Result<()> {
        self.db
            .merge_cf_opt(cf, key, operand, &self.write)
            .map_err(|e| db_error("merge", e))
    }

    /// Writes `batch` atomically; `what` names the operation in the error.
    ///
    /// # Errors
    /// [`Error::Local`] naming `what` if RocksDB fails the write.
    pub(crate) fn write(&self, batch: WriteBatch, what: &str) -> Result<()> {
        self.db
            .write_opt(batch, &self.write)
            .map_err(|e| db_error(what, e))
    }

    /// Removes every row of `cf` in each `[from, to)` of `ranges`: first the SST files lying wholly inside a
    /// range (`DeleteFilesInRange`: no rewrite, their space is freed at once), then whatever is left there
    /// with one range tombstone per range (`DeleteRange`), so that no older version a deleted file hid can
    /// come back.
    ///
    /// # Errors
    /// [`Error::Local`] naming `what` if RocksDB fails either step.
    pub(crate) fn delete_ranges(
        &self,
        cf: &ColumnFamily,
        ranges: &[(&[u8], &[u8])],
        what: &str,
    ) -> Result<()> {
        let mut batch = WriteBatch::default();
        for &(from, to) in ranges {
            // DeleteFilesInRange includes `to`; no row is a bare key-group prefix, so a file ending
            // exactly at `to` holds no row at or past it that should stay.
            self.db
                .delete_file_in_range_cf(cf, from, to)
                .map_err(|e| db_error(what, e))?;
            batch.delete_range_cf(cf, from, to);
        }
        self.write(batch, what)
    }

    /// A raw iterator over `cf` (seek, then step; check `status()` at the end).
    pub(crate) fn iter(&self, cf: &ColumnFamily) -> DBRawIterator<'_> {
        self.db.raw_iterator_cf(cf)
    }

    /// A raw iterator over the rows of `cf` below `upper` (exclusive): RocksDB stops there instead of
    /// stepping over the rows and tombstones beyond (`iterate_upper_bound`).
    pub(crate) fn iter_below(&self, cf: &ColumnFamily, upper: &[u8]) -> DBRawIterator<'_> {
        let mut read = ReadOptions::default();
        read.set_iterate_upper_bound(upper.to_vec());
        self.db.raw_iterator_cf_opt(cf, read)
    }

    /// The values of every state's meta row, in name order.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB if RocksDB fails the scan.
    pub(crate) fn meta_rows(&self) -> Result<Vec<Box<[u8]>>> {
        let mut rows = Vec::new();
        for item in self.db.prefix_iterator(META_PREFIX) {
            let (key, value) = item.map_err(|e| db_error(self.path(), e))?;
            if !key.starts_with(META_PREFIX) {
                break;
            }
            rows.push(value);
        }
        Ok(rows)
    }

    /// Writes (or, with `None`, deletes) the meta row `key` of the `default` column family.
    ///
    /// # Errors
    /// [`Error::Local`] if RocksDB fails the write.
    pub(crate) fn set_meta(&self, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        match value {
            Some(v) => self.db.put_opt(key, v, &self.write),
            None => self.db.delete_opt(key, &self.write),
        }
        .map_err(|e| db_error("state meta", e))
    }

    /// # Errors
    /// [`Error::Local`] naming the column family if RocksDB cannot create it.
    pub(crate) fn create_cf(&mut self, name: &str) -> Result<()> {
        self.db
            .create_cf(name, &self.cf_options.for_cf(name))
            .map_err(|e| db_error(format!("column family {name}"), e))
    }

    /// # Errors
    /// [`Error::Local`] naming the column family if RocksDB cannot drop it.
    pub(crate) fn drop_cf(&mut self, name: &str) -> Result<()> {
        self.db
            .drop_cf(name)
            .map_err(|e| db_error(format!("column family {name}"), e))
    }

    /// Moves the SST files `ssts` into `cf` (they leave their place as hard links).
    ///
    /// # Errors
    /// [`Error::Local`] naming the files if RocksDB refuses them.
    pub(crate) fn ingest(&self, cf: &ColumnFamily, ssts: &[std::path::PathBuf]) -> Result<()> {
        let mut ingest = IngestExternalFileOptions::default();
        ingest.set_move_files(true);
        let names = ssts.iter().map(|p| p.display().to_string());
        let names = names.collect::<Vec<_>>().join(", ");
        self.db
            .ingest_external_file_cf_opts(cf, &ingest, ssts.iter().collect())
            .map_err(|e| db_error(&names, e))
    }

    /// Ingests `files`, SST files another RocksDB database wrote for one column family (listed by
    /// `db_files::files_oldest_first`), into `cf` as they are: hard-linked, their sequence numbers
    /// kept (`rocksdb/ingest_db_files.rs`). All or nothing.
    ///
    /// # Errors
    /// RocksDB's message if it refuses them: a file overlaps a row or range tombstone already in `cf`
    /// (for instance one an earlier rescale wrote), or cannot be read or linked. `cf` is then unchanged.
    pub(crate) fn ingest_db_files(
        &self,
        cf: &ColumnFamily,
        files: &[&crate::rocksdb::db_files::SstFile],
    ) -> std::result::Result<(), String> {
        crate::rocksdb::ingest_db_files::ingest_db_files(&self.db, cf, files)
    }

    /// Whether every SST file of every column family but `default` (which holds no keyed rows) lies in
    /// the row keys `[start, end)`, range tombstones included.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB if RocksDB cannot list its files.
    pub(crate) fn keyed_files_within(&self, start: &[u8], end: &[u8]) -> Result<bool> {
        let dir = self.instance.db();
        let files = crate::rocksdb::db_files::files_oldest_first(&self.db, &dir)
            .map_err(|message| Error::local(self.path(), message))?;
        Ok(files
            .iter()
            .filter(|(cf, _)| cf != "default")
            .all(|(_, files)| files.iter().all(|f| f.within(start, end))))
    }

    /// A native RocksDB checkpoint (hard links of the SSTs, copies of the other files) into `dir`, which
    /// must not exist.
    ///
    /// # Errors
    /// [`Error::Local`] naming `dir`.
    pub(crate) fn native_checkpoint(&self, dir: &std::path::Path) -> Result<()> {
        rocksdb::checkpoint::Checkpoint::new(&self.db)
            .and_then(|c| c.create_checkpoint(dir))
            .map_err(|e| db_error(dir.display(), e))
    }

    fn families<'a>(&'a self, names: &'a [&'a str]) -> impl Iterator<Item = &'a ColumnFamily> + 'a {
        names.iter().filter_map(|n| self.db.cf_handle(n))
    }

    /// Flushes the memtables of the column families `names` and waits for the flush.
    ///
    /// # Errors
    /// [`Error::Local`] if RocksDB fails the flush.
    pub(crate) fn flush(&self, names: &[&str]) -> Result<()> {
        let cfs: Vec<&ColumnFamily> = self.families(names).collect();
        let mut flush = FlushOptions::default();
        flush.set_wait(true);
        self.db
            .flush_cfs_opt(&cfs, &flush)
            .map_err(|e| db_error(self.path(), e))
    }

    /// Whether no column family of `names` has an entry in a memtable (active or immutable), so that the
    /// SST files hold all their state. A property RocksDB cannot give counts as not empty.
    pub(crate) fn memtables_empty(&self, names: &[&str]) -> bool {
        self.families(names).all(|cf| {
            MEMTABLE_ENTRIES
                .iter()
                .all(|p| self.db.property_int_value_cf(cf, *p).ok().flatten() == Some(0))
        })
    }

    /// Flushes and compacts each column family of `names` over its whole key range.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB if a flush fails.
    pub(crate) fn compact(&self, names: &[&str]) -> Result<()> {
        self.flush(names)?;
        for cf in self.families(names) {
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// RocksDB's approximation of the SST bytes of each key range `[start, end)` of `ranges` in the column
    /// family `cf` (`GetApproximateSizes`, files only: memtables are not counted), in the order given.
    pub(crate) fn approximate_sizes(
        &self,
        cf: &ColumnFamily,
        ranges: &[(Vec<u8>, Vec<u8>)],
    ) -> Vec<u64> {
        let ranges: Vec<rocksdb::Range<'_>> = ranges
            .iter()
            .map(|(start, end)| rocksdb::Range::new(start, end))
            .collect();
        self.db.get_approximate_sizes_cf(cf, &ranges)
    }

    /// The integer property `property` summed over the column families of `names`; `None` if RocksDB
    /// knows it for none of them.
    ///
    /// # Errors
    /// [`Error::Local`] naming the DB if RocksDB fails to read a property.
    pub(crate) fn int_property(&self, names: &[&str], property: &str) -> Result<Option<u64>> {
        let mut sum = None;
        for cf in self.families(names) {
            let value = self
                .db
                .property_int_value_cf(cf, property)
                .map_err(|e| db_error(self.path(), e))?;
            if let Some(v) = value {
                sum = Some(sum.unwrap_or(0) + v);
            }
        }
        Ok(sum)
    }
}
