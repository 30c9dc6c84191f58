//! The job's replayable source: lines from a file, stdin, a socket or a seeded generator, with the offset a
//! checkpoint stores.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};

use rand::SeedableRng;
use rand_distr::{Distribution, Zipf};

use crate::args::Args;

/// A replayable source of lines with an offset that a checkpoint stores.
pub(crate) enum Source {
    /// A file; the offset is the byte position of the next line.
    File {
        reader: BufReader<std::fs::File>,
        offset: u64,
    },
    /// Lines in memory (generated, stdin or socket); the offset is the next line's index.
    Memory { lines: Vec<String>, next: u64 },
}

impl Source {
    pub(crate) fn seek(&mut self, offset: u64) -> std::io::Result<()> {
        match self {
            Source::File { reader, offset: o } => {
                reader.seek(SeekFrom::Start(offset))?;
                *o = offset;
            }
            Source::Memory { next, .. } => *next = offset,
        }
        Ok(())
    }

    pub(crate) fn offset(&self) -> u64 {
        match self {
            Source::File { offset, .. } => *offset,
            Source::Memory { next, .. } => *next,
        }
    }

    pub(crate) fn next_line(&mut self, buf: &mut String) -> std::io::Result<bool> {
        buf.clear();
        match self {
            Source::File { reader, offset } => {
                let mut bytes = Vec::new();
                let n = reader.read_until(b'\n', &mut bytes)?;
                *offset += n as u64;
                buf.push_str(&String::from_utf8_lossy(&bytes));
                Ok(n > 0)
            }
            Source::Memory { lines, next } => match lines.get(*next as usize) {
                Some(line) => {
                    buf.push_str(line);
                    *next += 1;
                    Ok(true)
                }
                None => Ok(false),
            },
        }
    }
}

pub(crate) fn open_source(args: &Args) -> Result<Source, String> {
    match (&args.input, &args.socket) {
        (Some(path), _) if path == "-" => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| format!("stdin: {e}"))?;
            Ok(Source::Memory {
                lines: text.lines().map(str::to_string).collect(),
                next: 0,
            })
        }
        (Some(path), _) => {
            let file = std::fs::File::open(path).map_err(|e| format!("{path}: {e}"))?;
            Ok(Source::File {
                reader: BufReader::new(file),
                offset: 0,
            })
        }
        (None, Some(addr)) => {
            let stream = std::net::TcpStream::connect(addr).map_err(|e| format!("{addr}: {e}"))?;
            let lines = BufReader::new(stream)
                .lines()
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| e.to_string())?;
            Ok(Source::Memory { lines, next: 0 })
        }
        (None, None) => {
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
            let zipf = Zipf::new(args.distinct.max(1) as f64, 1.1).map_err(|e| e.to_string())?;
            let lines = (0..args.records)
                .map(|_| format!("w{}", zipf.sample(&mut rng) as u64))
                .collect();
            Ok(Source::Memory { lines, next: 0 })
        }
    }
}

/// Words of a line: maximal runs of alphanumeric characters, lowercased.
pub(crate) fn words(line: &str) -> impl Iterator<Item = String> + '_ {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Word counts (and the number of words) of the source's lines from the beginning up to offset `until`
/// (exclusive; a job stopped with a savepoint counted that far), in one plain pass; with `ttl_ms`, as the
/// job's event-time TTL counts them: a line's event time is the source offset after it, a count whose
/// last occurrence is `ttl_ms` or more behind restarts, and counts expired at the end are left out. The
/// third number is how many times a count expired.
pub(crate) fn single_pass_count(
    source: &mut Source,
    until: u64,
    ttl_ms: Option<u64>,
) -> std::io::Result<(HashMap<String, u64>, u64, u64)> {
    source.seek(0)?;
    // Word -> (count, event time of its last occurrence).
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    let (mut total, mut expired) = (0, 0);
    let mut line = String::new();
    let mut now = 0;
    let over = |last: u64, now: u64| ttl_ms.is_some_and(|ttl| last.saturating_add(ttl) <= now);
    while source.offset() < until && source.next_line(&mut line)? {
        now = source.offset();
        for w in words(&line) {
            let (count, last) = counts.entry(w).or_insert((0, now));
            if *count > 0 && over(*last, now) {
                *count = 0;
                expired += 1;
            }
            *count += 1;
            *last = now;
            total += 1;
        }
    }
    let live = counts
        .into_iter()
        .filter(|(_, (_, last))| !over(*last, now))
        .map(|(w, (count, _))| (w, count))
        .collect::<HashMap<_, _>>();
    Ok((live, total, expired))
}
