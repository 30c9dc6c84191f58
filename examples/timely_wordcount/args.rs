//! Flags of the timely word count: the job, the state backend, checkpoints, and timely's own
//! (`-w`, `-n`, `-p`, `-h`, as `timely::execute_from_args` reads them).

use std::path::PathBuf;

use statebackend::BackendKind;

/// Counts words on timely dataflow with keyed state in statebackend, checkpointed per epoch.
#[derive(clap::Parser, Debug, Clone)]
#[command(disable_help_flag = true)]
pub(crate) struct Args {
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    help: Option<bool>,
    /// Worker threads per process (timely `-w`).
    #[arg(short = 'w', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) workers: u32,
    /// Processes of the job (timely `-n`).
    #[arg(short = 'n', long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub(crate) processes: u32,
    /// Index of this process (timely `-p`).
    #[arg(short = 'p', long, default_value_t = 0)]
    pub(crate) process: u32,
    /// File with one `host:port` line per process (timely `-h`); needed with `-n` above 1.
    #[arg(short = 'h', long)]
    pub(crate) hostfile: Option<PathBuf>,

    /// Source splits (as Kafka partitions): each has its own offset and they are spread over the
    /// workers, so the job restores at any number of workers.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub(crate) splits: u32,
    /// Words each split produces.
    #[arg(long, default_value_t = 250_000)]
    pub(crate) words_per_split: u64,
    /// Distinct words (log-uniformly skewed: few hot words, many cold ones).
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) distinct: u64,
    /// Seed of the generated words.
    #[arg(long, default_value_t = 7)]
    pub(crate) seed: u64,
    /// Count per tumbling event-time window of this many ms (a word's event time is its position in
    /// its split, 1 ms apart) instead of in total. Each window is emitted when the watermark passes its
    /// end, by an event-time timer per word and window, and committed with the next completed checkpoint
    /// (`<output-dir>/emitted/`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) window_ms: Option<u64>,
    /// With `--window-ms`: no timers, every window is emitted at the end of input (the job before
    /// timers, for comparison).
    #[arg(long, requires = "window_ms")]
    pub(crate) windows_at_end: bool,

    /// State backend: heap or lsm.
    #[arg(long, default_value = "heap")]
    pub(crate) backend: BackendKind,
    /// Max parallelism (key groups).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=32768))]
    pub(crate) max_parallelism: u32,
    /// Local directory of the RocksDB backend (default: the system's temporary directory).
    #[arg(long)]
    pub(crate) local_dir: Option<PathBuf>,
    /// Memory of all RocksDB backends of this process together, MiB: one budget the workers share
    /// (memtables, data, index and filter blocks; `docs/engines.md`, "Memory"), at least 16.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(16..))]
    pub(crate) memory_budget_mib: u64,
    /// Checkpoint storage: a directory or a URL (`s3://bucket/prefix` with `--features aws`).
    #[arg(long)]
    pub(crate) checkpoint_dir: String,
    /// Job id: the storage prefix of this job's checkpoints.
    #[arg(long, default_value = "timely-wordcount")]
    pub(crate) job_id: String,
    /// Length of an epoch in ms: the sources advance timely's timestamp this often, and the end of each
    /// epoch (its frontier passing the counting operator) is a checkpoint's barrier.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) epoch_ms: u64,
    /// No checkpoints (epochs still advance every `--epoch-ms`): the baseline of the throughput figure.
    #[arg(long)]
    pub(crate) no_checkpoints: bool,
    /// Restore from the latest completed checkpoint in the storage.
    #[arg(long)]
    pub(crate) resume: bool,
    /// Where each worker writes its final counts (`counts-<worker>-of-<workers>.tsv`).
    #[arg(long)]
    pub(crate) output_dir: PathBuf,
    /// Do not run: compare the output files of a finished run at `--workers x --processes` with a
    /// single-pass count of the generated words, and exit 0 if they are equal.
    #[arg(long)]
    pub(crate) verify: bool,
}

impl Args {
    /// Timely's configuration from our flags.
    pub(crate) fn timely_config(&self) -> Result<timely::Config, String> {
        let mut argv = vec![
            "timely_wordcount".to_string(),
            "-w".into(),
            self.workers.to_string(),
            "-n".into(),
            self.processes.to_string(),
            "-p".into(),
            self.process.to_string(),
        ];
        if let Some(hosts) = &self.hostfile {
            argv.push("-h".into());
            argv.push(hosts.display().to_string());
        }
        timely::Config::from_args(argv.into_iter())
    }

    /// Total workers of the job.
    pub(crate) fn peers(&self) -> u32 {
        self.workers * self.processes
    }

    pub(crate) fn checkpointing(&self) -> bool {
        !self.no_checkpoints
    }

    /// Whether windows are emitted by timers as the watermark passes them.
    pub(crate) fn firing_windows(&self) -> bool {
        self.window_ms.is_some() && !self.windows_at_end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn timely_flags_pass_through_and_bad_values_are_refused() {
        let args = Args::try_parse_from([
            "t",
            "-w",
            "2",
            "-n",
            "2",
            "-p",
            "1",
            "-h",
            "hosts",
            "--checkpoint-dir",
            "d",
            "--output-dir",
            "o",
        ])
        .unwrap();
        assert_eq!(args.peers(), 4);
        assert!(args.checkpointing());
        assert!(
            Args::try_parse_from(["t", "-w", "0", "--checkpoint-dir", "d", "--output-dir", "o"])
                .is_err()
        );
        assert!(
            Args::try_parse_from([
                "t",
                "--backend",
                "memory",
                "--checkpoint-dir",
                "d",
                "--output-dir",
                "o"
            ])
            .is_err()
        );
    }
}
