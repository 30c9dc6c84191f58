//! Event-time windows emitted as the watermark passes them: the watermark from the sources, and the output
//! committed with checkpoints, so that what a run emits is exactly once across failures and rescales.
//!
//! - Watermark: at the end of every epoch each source sends every counting worker the least position not
//!   yet emitted of its splits (`u64::MAX` once it has none left); a word's event time is its position, so
//!   once an epoch is complete at a counter, every word before the least of the sources' latest values has
//!   been counted there.
//! - Output, two-phase: a counter's emitted windows wait in memory; the synchronous phase of checkpoint
//!   `n` writes them to `staged/<n>-<worker>.tsv`; the completion of `n` renames this worker's staged
//!   files up to `n` into `emitted/`. A restore from checkpoint `c` commits the staged files up to `c`
//!   (their checkpoint completed) and deletes the later ones (their windows are emitted again); the end of
//!   input commits everything and writes what is left as `emitted/final-<worker>-of-<workers>.tsv`, which
//!   a later restore deletes (its windows come again after the restored checkpoint).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

/// A watermark record: `(target worker, source worker, least position not yet emitted)`.
pub(crate) type WatermarkRecord = (u32, u32, u64);

/// The sources' watermarks as a counting worker sees them.
pub(crate) struct Watermarks {
    sources: usize,
    /// Records of epochs not complete yet.
    waiting: BTreeMap<u64, Vec<(u32, u64)>>,
    latest: HashMap<u32, u64>,
}

impl Watermarks {
    /// Watermarks of `sources` sources (every worker runs one).
    pub(crate) fn new(sources: u32) -> Self {
        Watermarks {
            sources: sources as usize,
            waiting: BTreeMap::new(),
            latest: HashMap::new(),
        }
    }

    /// A record of epoch `epoch`.
    pub(crate) fn add(&mut self, epoch: u64, source: u32, position: u64) {
        self.waiting
            .entry(epoch)
            .or_default()
            .push((source, position));
    }

    /// Every word with an event time below the returned watermark is in an epoch before `open` (0 until
    /// every source has reported once).
    pub(crate) fn advance(&mut self, open: u64) -> u64 {
        while let Some(entry) = self.waiting.first_entry() {
            if *entry.key() >= open {
                break;
            }
            for (source, position) in entry.remove() {
                let at = self.latest.entry(source).or_insert(position);
                *at = (*at).max(position);
            }
        }
        if self.latest.len() < self.sources {
            return 0;
        }
        self.latest.values().copied().min().unwrap_or(0)
    }
}

/// One counting worker's emitted windows: `(word, window, count)` lines, two-phase.
pub(crate) struct WindowSink {
    dir: PathBuf,
    worker: u32,
    workers: u32,
    /// Emitted since the last staging.
    buffer: Vec<(String, u64, u64)>,
    /// Checkpoints with a staged file of this worker not committed yet.
    staged: BTreeSet<u64>,
}

fn staged_path(dir: &Path, id: u64, worker: u32) -> PathBuf {
    dir.join("staged").join(format!("{id:020}-{worker}.tsv"))
}

fn write_lines(path: &Path, lines: &[(String, u64, u64)]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for (word, window, count) in lines {
        writeln!(file, "{word}\t{window}\t{count}")?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

impl WindowSink {
    pub(crate) fn new(dir: &Path, worker: u32, workers: u32) -> Self {
        WindowSink {
            dir: dir.to_path_buf(),
            worker,
            workers,
            buffer: Vec::new(),
            staged: BTreeSet::new(),
        }
    }

    pub(crate) fn emit(&mut self, word: String, window: u64, count: u64) {
        self.buffer.push((word, window, count));
    }

    /// The synchronous phase of checkpoint `id`: what was emitted since the last one goes to its staged
    /// file (durable before the checkpoint is acknowledged).
    pub(crate) fn stage(&mut self, id: u64) -> std::io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        write_lines(&staged_path(&self.dir, id, self.worker), &self.buffer)?;
        self.buffer.clear();
        self.staged.insert(id);
        Ok(())
    }

    /// Checkpoint `id` completed: this worker's staged files up to it are output now.
    pub(crate) fn commit_through(&mut self, id: u64) -> std::io::Result<()> {
        while let Some(&first) = self.staged.first() {
            if first > id {
                break;
            }
            let name = format!("{first:020}-{}.tsv", self.worker);
            std::fs::rename(
                staged_path(&self.dir, first, self.worker),
                self.dir.join("emitted").join(name),
            )?;
            self.staged.remove(&first);
        }
        Ok(())
    }

    /// The end of input: every staged file is output, and what is left goes to the final file.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        self.commit_through(u64::MAX)?;
        let name = format!("final-{}-of-{}.tsv", self.worker, self.workers);
        write_lines(&self.dir.join("emitted").join(name), &self.buffer)?;
        self.buffer.clear();
        Ok(())
    }
}

/// Makes the output directory agree with the restore point before any worker runs: `restored` is the
/// checkpoint restored from (`None`: a new job, the output starts empty).
pub(crate) fn prepare_output(dir: &Path, restored: Option<u64>) -> std::io::Result<()> {
    let (staged, emitted) = (dir.join("staged"), dir.join("emitted"));
    if restored.is_none() {
        for d in [&staged, &emitted] {
            if d.exists() {
                std::fs::remove_dir_all(d)?;
            }
        }
    }
    std::fs::create_dir_all(&staged)?;
    std::fs::create_dir_all(&emitted)?;
    let restored = restored.unwrap_or(0);
    for entry in std::fs::read_dir(&staged)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let id = name.split('-').next().and_then(|id| id.parse::<u64>().ok());
        match id {
            Some(id) if id <= restored && name.ends_with(".tsv") => {
                std::fs::rename(entry.path(), emitted.join(&name))?
            }
            _ => std::fs::remove_file(entry.path())?,
        }
    }
    for entry in std::fs::read_dir(&emitted)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("final-") {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Every emitted `(word, window) -> count` of a finished job; a window emitted twice is an error.
pub(crate) fn read_emitted(dir: &Path) -> Result<HashMap<(String, u64), u64>, String> {
    let mut got = HashMap::new();
    let emitted = dir.join("emitted");
    let entries = std::fs::read_dir(&emitted).map_err(|e| format!("{}: {e}", emitted.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines() {
            let mut parts = line.split('\t');
            let parsed = match (parts.next(), parts.next(), parts.next()) {
                (Some(word), Some(window), Some(count)) => window
                    .parse::<u64>()
                    .ok()
                    .zip(count.parse::<u64>().ok())
                    .map(|(w, c)| (word.to_string(), w, c)),
                _ => None,
            };
            let Some((word, window, count)) = parsed else {
                return Err(format!("{}: bad line `{line}`", path.display()));
            };
            if got.insert((word.clone(), window), count).is_some() {
                return Err(format!(
                    "({word}, {window}) was emitted twice ({})",
                    path.display()
                ));
            }
        }
    }
    Ok(got)
}
