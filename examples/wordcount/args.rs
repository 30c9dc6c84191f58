//! Flags of the example job and their checks, all done before the job touches storage.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use clap::builder::RangedU64ValueParser;

#[derive(Parser, Debug)]
#[command(about = "Checkpointed word count on a statebackend keyed state backend")]
pub(crate) struct Args {
    /// State backend: `heap` (copy-on-write maps, full snapshots unless `--heap-incremental`) or `rocksdb`
    /// (LSM, incremental checkpoints).
    #[arg(long, default_value = "heap", value_parser = ["heap", "rocksdb"])]
    pub(crate) backend: String,
    /// Incremental checkpoints of the heap backend (`docs/heap-incremental.md`): after a confirmed
    /// checkpoint, each writes only the counts changed since.
    #[arg(long)]
    pub(crate) heap_incremental: bool,
    /// Local directory of the rocksdb backend: each subtask's backend creates a directory of its own in
    /// it and removes that one when it ends (default: `statebackend-<job id>` in the temporary directory).
    #[arg(long, value_parser = local_path)]
    pub(crate) local_dir: Option<PathBuf>,
    /// Local recovery (`docs/local-recovery.md`): every checkpoint is also kept in this directory, and a
    /// restart on this machine restores from it (checked against checkpoint storage's handles, read from
    /// storage where it is missing or damaged). Off without it.
    #[arg(long, value_parser = local_path)]
    pub(crate) local_recovery_dir: Option<PathBuf>,
    /// Input file (`-` for stdin); without it a seeded Zipf word stream is generated.
    #[arg(long)]
    pub(crate) input: Option<String>,
    /// Read lines from a TCP socket (HOST:PORT) until it closes.
    #[arg(long, conflicts_with = "input")]
    pub(crate) socket: Option<String>,
    /// Generated records (one word each).
    #[arg(long, default_value_t = 1_000_000)]
    pub(crate) records: u64,
    /// Distinct words of the generated stream.
    #[arg(long, default_value_t = 50_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) distinct: u64,
    /// Seed of the generated stream.
    #[arg(long, default_value_t = 42)]
    pub(crate) seed: u64,
    /// Checkpoint every N records (lines).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) checkpoint_every: u64,
    /// Checkpoint storage: a local directory (the embedded default), or a URL: `file:///dir`, `memory://`,
    /// `s3://bucket/prefix` (build with `--features aws`; `AWS_*` variables, `AWS_ENDPOINT` for an
    /// S3-compatible server).
    #[arg(long, default_value = "checkpoints")]
    pub(crate) checkpoint_dir: String,
    /// Job id: checkpoints go to CHECKPOINT_DIR/JOB_ID.
    #[arg(long, default_value = "wordcount")]
    pub(crate) job_id: String,
    /// Completed checkpoints to retain.
    #[arg(long, default_value_t = 2, value_parser = RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) retained: usize,
    /// Fail on purpose after N records of an attempt; the k-th flag applies to attempt k.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) fail_after: Vec<u64>,
    /// fixed-delay:ATTEMPTS:DELAY_MS | failure-rate:MAX:INTERVAL_MS:DELAY_MS | none
    #[arg(long, default_value = "fixed-delay:3:100")]
    pub(crate) restart: String,
    /// State TTL of the counts, in event time: a line's event time is its source offset (the line's
    /// index, or for a file its byte position) read as milliseconds, so a word's count expires once the
    /// source has moved this far past its last occurrence, and its next occurrence counts from 1. The
    /// verification replays the same rule.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) ttl_ms: Option<u64>,
    /// Subtasks of the counting operator.
    #[arg(long, default_value_t = 1, value_parser = parallelism())]
    pub(crate) parallelism: u32,
    /// Subtasks after the first restart (rescaled restore).
    #[arg(long, value_parser = parallelism())]
    pub(crate) rescale_to: Option<u32>,
    /// Max parallelism (number of key groups, at least every parallelism used); default as Flink's.
    #[arg(long, value_parser = parallelism())]
    pub(crate) max_parallelism: Option<u32>,
    /// Where to write `word<TAB>count` lines, sorted by word (a path or a `file://` URL; missing
    /// directories are created).
    #[arg(long, value_parser = local_path)]
    pub(crate) output: Option<PathBuf>,
    /// Delete the checkpoints when the job ends (default: retain them).
    #[arg(long)]
    pub(crate) delete_checkpoints: bool,
    /// Resume from the latest checkpoint of this job id left by an earlier run (from the beginning, saying
    /// so, if it left none). Without it the job starts from scratch and first deletes such checkpoints.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Orphan sweep at start and end: files of this job that no checkpoint references and older than this
    /// are deleted (ms). 0 assumes that no other process writes this job's checkpoints (an earlier run
    /// that was killed is dead); raise it where one may still be running.
    #[arg(long, default_value_t = 0)]
    pub(crate) sweep_min_age_ms: u64,
    /// Stop with a savepoint: when the input ends (or after `--stop-after` records), take a canonical
    /// savepoint into this checkpoint root (path or URL; it lands in `DIR/<job-id>/savepoints/sp-<id>`,
    /// printed), write `--output` and stop. A later run continues from it with `--from-savepoint`.
    #[arg(long)]
    pub(crate) stop_with_savepoint: Option<String>,
    /// With `--stop-with-savepoint`: stop after this many records of this run (counted from where it
    /// started: the beginning, or the savepoint it restored).
    #[arg(long, requires = "stop_with_savepoint", conflicts_with = "fail_after",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) stop_after: Option<u64>,
    /// Start from this savepoint (or checkpoint) directory, `<root>/<job>/savepoints/sp-<n>` as
    /// `--stop-with-savepoint` prints it, with any `--backend` and `--parallelism`, continuing from its
    /// source offset. Restored in NO_CLAIM mode: the job never deletes it.
    #[arg(long, conflicts_with = "resume")]
    pub(crate) from_savepoint: Option<String>,
}

/// Parser of a parallelism flag: 1 to 32,768 (Flink's upper bound of max parallelism).
fn parallelism() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=32_768)
}

impl Args {
    /// Checks what one flag alone cannot (clap checks each flag's range): the max parallelism covers every
    /// parallelism, and the restart strategy parses. Runs before anything touches storage.
    ///
    /// # Errors
    /// A one-line message naming the flags.
    pub(crate) fn validate(&self) -> Result<RestartStrategy, String> {
        let restart = parse_restart(&self.restart)?;
        let largest = self.parallelism.max(self.rescale_to.unwrap_or(0));
        if let Some(max) = self.max_parallelism
            && max < largest
        {
            return Err(format!(
                "--max-parallelism {max} is below the parallelism {largest}: every subtask needs a key group"
            ));
        }
        Ok(restart)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum RestartStrategy {
    FixedDelay {
        attempts: u32,
        delay: Duration,
    },
    FailureRate {
        max: usize,
        interval: Duration,
        delay: Duration,
    },
    None,
}

/// A local path given as a path (`dir`, `a/b`, `./dir`, `../dir`, absolute) or a `file://` URL.
pub(crate) fn local_path(s: &str) -> Result<PathBuf, String> {
    if s.is_empty() {
        return Err("an empty path".into());
    }
    match s.strip_prefix("file://") {
        Some(_) => url::Url::parse(s)
            .ok()
            .and_then(|u| u.to_file_path().ok())
            .ok_or_else(|| format!("`{s}` is not a local file URL (file:///absolute/path)")),
        None => Ok(PathBuf::from(s)),
    }
}

pub(crate) fn parse_restart(s: &str) -> Result<RestartStrategy, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |p: &str| {
        p.parse::<u64>()
            .map_err(|_| format!("bad number `{p}` in --restart {s}"))
    };
    match parts.as_slice() {
        ["none"] => Ok(RestartStrategy::None),
        ["fixed-delay", a, d] => Ok(RestartStrategy::FixedDelay {
            attempts: u32::try_from(num(a)?)
                .map_err(|_| format!("too many attempts in --restart {s}"))?,
            delay: Duration::from_millis(num(d)?),
        }),
        ["failure-rate", m, i, d] => Ok(RestartStrategy::FailureRate {
            max: usize::try_from(num(m)?)
                .map_err(|_| format!("too many failures in --restart {s}"))?,
            interval: Duration::from_millis(num(i)?),
            delay: Duration::from_millis(num(d)?),
        }),
        _ => Err(format!("unknown restart strategy `{s}`")),
    }
}

impl RestartStrategy {
    /// Delay before the next attempt, or `None` if the job must fail. `failures` are the failure times.
    pub(crate) fn next(&self, failures: &[Instant]) -> Option<Duration> {
        match *self {
            RestartStrategy::None => None,
            RestartStrategy::FixedDelay { attempts, delay } => {
                (failures.len() as u32 <= attempts).then_some(delay)
            }
            RestartStrategy::FailureRate {
                max,
                interval,
                delay,
            } => {
                let now = Instant::now();
                let recent = failures
                    .iter()
                    .filter(|t| now.duration_since(**t) <= interval)
                    .count();
                (recent <= max).then_some(delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flags: &[&str]) -> Result<RestartStrategy, String> {
        let args = Args::try_parse_from(std::iter::once("wordcount").chain(flags.iter().copied()))
            .map_err(|e| e.to_string())?;
        args.validate()
    }

    #[test]
    fn every_zero_or_inconsistent_flag_is_refused_before_storage() {
        for flags in [
            &["--parallelism", "0"][..],
            &["--retained", "0"],
            &["--checkpoint-every", "0"],
            &["--fail-after", "0"],
            &["--rescale-to", "0"],
            &["--distinct", "0"],
            &["--max-parallelism", "0"],
            &["--parallelism", "40000"],
            &["--parallelism", "4", "--max-parallelism", "2"],
            &["--rescale-to", "8", "--max-parallelism", "4"],
            &["--restart", "fixed-delay:x:1"],
            &["--restart", "fixed-delay:99999999999:1"],
            &["--restart", "sometimes"],
        ] {
            assert!(parse(flags).is_err(), "{flags:?} was accepted");
        }
        assert!(parse(&["--parallelism", "4", "--max-parallelism", "4"]).is_ok());
        assert!(parse(&["--restart", "failure-rate:3:1000:10"]).is_ok());
    }

    #[test]
    fn local_paths_take_every_form() {
        for (given, path) in [
            ("counts.tsv", "counts.tsv"),
            ("a/b", "a/b"),
            ("./dir", "./dir"),
            ("../dir", "../dir"),
            ("/abs/dir", "/abs/dir"),
            ("file:///abs/dir", "/abs/dir"),
        ] {
            assert_eq!(local_path(given).unwrap(), PathBuf::from(path), "{given}");
        }
        assert!(local_path("file://host/x").is_err());
        assert!(local_path("").is_err());
    }
}
