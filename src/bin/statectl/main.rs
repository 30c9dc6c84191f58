//! `statectl`: the operator's tool for a job's checkpoints and savepoints (`docs/statectl.md`).
//!
//! `URL` is a job's checkpoint root (`<checkpoint dir>/<job id>`, what wordcount prints as its checkpoint
//! dir): a local path, `file://...`, or `s3://bucket/prefix/<job id>` (with `AWS_*` variables and
//! `AWS_ENDPOINT` for an S3-compatible server). `CHECKPOINT` is one checkpoint's or savepoint's directory,
//! `URL/chk-7` or `URL/savepoints/sp-3`. Errors are one line on stderr and exit code 1; `verify` exits 2
//! when it finds damaged or missing files.

/// `println!` that ends the program quietly when stdout is a closed pipe ([`job::emit`]).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::job::emit(format_args!($($t)*))
    };
}

mod convert;
mod dump;
mod inspect;
mod job;
mod list;
mod maintain;
mod verify;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use statebackend::inspect::TtlView;
use statebackend::{Clock, SystemClock};

#[derive(Parser)]
#[command(
    name = "statectl",
    version,
    about = "Look inside, verify and clean up the checkpoints and savepoints of a statebackend job"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Checkpoints and savepoints: id, kind, time, full and checkpointed size, files.
    List {
        /// The job's checkpoint root.
        url: String,
        /// One JSON object per snapshot, as an array.
        #[arg(long)]
        json: bool,
    },
    /// Per checkpoint, as Flink's checkpoint tab: bytes uploaded vs reused (a bar per row), files, the
    /// time since the one before.
    History {
        /// The job's checkpoint root.
        url: String,
        /// An array of rows instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// One checkpoint or savepoint: tasks, states (kind, codecs), key-group ranges, files, sizes.
    Inspect {
        /// The snapshot's directory (`URL/chk-<n>` or `URL/savepoints/sp-<n>`).
        checkpoint: String,
        /// Count each state's entries (key and namespace pairs) of canonical files: reads every file
        /// whole; native LSM files are not counted.
        #[arg(long)]
        entries: bool,
        #[arg(long)]
        json: bool,
    },
    /// One state of a canonical snapshot (heap checkpoint, canonical savepoint): key group, key,
    /// namespace and value per line, tab-separated, decoded for the crate's built-in codecs (hex
    /// otherwise), sorted.
    Dump {
        /// The snapshot's directory.
        checkpoint: String,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// Only this key group (reads only its frames).
        #[arg(long)]
        key_group: Option<u32>,
        #[arg(long)]
        json: bool,
        /// The state's TTL (ms): each value of a TTL state then says when it expires, or that it has
        /// (at `--now-ms`). Snapshots do not store TTLs: pass the descriptor's.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        ttl_ms: Option<u64>,
        /// The time to judge expiry at (ms, in the state's TTL time: a watermark for event time).
        /// Default: the system clock now (processing time).
        #[arg(long, requires = "ttl_ms")]
        now_ms: Option<u64>,
    },
    /// Reads every file of one checkpoint or savepoint, checking its size and CRC32; exits 2 naming each
    /// damaged or missing file.
    Verify {
        /// The snapshot's directory.
        checkpoint: String,
        /// Files read at once.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        concurrency: u32,
        #[arg(long)]
        json: bool,
    },
    /// Savepoint operations.
    Savepoint {
        #[command(subcommand)]
        action: SavepointCommand,
    },
    /// Bytes by shared, private and metadata files, and how many bytes each checkpoint alone holds (what
    /// deleting it would free).
    Du {
        /// The job's checkpoint root.
        url: String,
        #[arg(long)]
        json: bool,
    },
    /// The orphan sweep: deletes files no checkpoint uses, older than `--min-age` on the store's clock;
    /// deletes nothing while a checkpoint's metadata is unreadable. It refuses while the job's newest
    /// coordinator has not shut down (a job that may be running); with `--force` it registers as the
    /// job's newest coordinator (as a restarted job does), which fences a coordinator still running: it
    /// stops deleting and triggering.
    Gc {
        /// The job's checkpoint root.
        url: String,
        /// Print what would be deleted; delete and write nothing (safe on a running job; ages on the local
        /// clock).
        #[arg(long)]
        dry_run: bool,
        /// Sweep although the job's newest coordinator has not shut down (a job that crashed).
        #[arg(long, conflicts_with = "dry_run")]
        force: bool,
        /// Files younger than this are kept (an upload may be in flight): e.g. `30s`, `10m`, `2h`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        min_age: Duration,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SavepointCommand {
    /// Rewrites a checkpoint or native savepoint (`SRC`, its directory) as a canonical savepoint, offline:
    /// written to `DST/<job id>/savepoints/sp-<id + 1>` (`DST` a checkpoint root, path or URL), restorable
    /// by either backend at any parallelism.
    Convert {
        /// The checkpoint's or savepoint's directory.
        src: String,
        /// The checkpoint root to write the canonical savepoint under.
        dst: String,
        /// The format to convert to.
        #[arg(long, value_parser = ["canonical"], default_value = "canonical")]
        to: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("tokio runtime: {e}")),
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::List { url, json } => list::list(&url, json).await,
            Command::History { url, json } => list::history(&url, json).await,
            Command::Inspect {
                checkpoint,
                entries,
                json,
            } => inspect::inspect(&checkpoint, entries, json).await,
            Command::Verify {
                checkpoint,
                concurrency,
                json,
            } => verify::verify(&checkpoint, concurrency as usize, json).await,
            Command::Dump {
                checkpoint,
                state,
                key_group,
                json,
                ttl_ms,
                now_ms,
            } => {
                let ttl = ttl_ms.map(|ttl_ms| TtlView {
                    ttl_ms,
                    now_ms: now_ms.unwrap_or_else(|| SystemClock.now_ms()),
                });
                dump::dump(&checkpoint, &state, key_group, json, ttl).await
            }
            Command::Savepoint {
                action: SavepointCommand::Convert { src, dst, to: _ },
            } => convert::convert(&src, &dst).await,
            Command::Du { url, json } => maintain::du(&url, json).await,
            Command::Gc {
                url,
                dry_run,
                force,
                min_age,
                json,
            } => maintain::gc(&url, dry_run, force, min_age, json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    // One line: a multi-line cause is joined.
    eprintln!("statectl: {}", message.replace('\n', " "));
    ExitCode::FAILURE
}
