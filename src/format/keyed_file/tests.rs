//! Round trips, corruption and allocation limits of the keyed snapshot file.

use super::read::*;
use super::*;
use crate::snapshot::state_meta::StateKind;

fn header() -> FileHeader {
    FileHeader {
        max_parallelism: 16,
        key_groups: KeyGroupRange::new(0, 15).unwrap(),
        states: vec![StateMeta {
            name: "s".into(),
            kind: StateKind::Value,
            key_codec: "u64:be".into(),
            namespace_codec: "unit".into(),
            value_codec: "u64:be".into(),
            user_key_codec: String::new(),
        }],
        rewrite: None,
        appends: false,
        patches: false,
        whole: crate::key_group::KeyGroupRange::EMPTY,
    }
}

fn write(level: Option<i32>) -> (Vec<u8>, FileSummary) {
    let mut w = KeyedFileWriter::new(
        &header(),
        WriterOptions {
            zstd_level: level,
            frame_bytes: 64,
        },
    )
    .unwrap();
    let mut file = Vec::new();
    for kg in [1u32, 5, 9] {
        w.begin_key_group(kg).unwrap();
        for i in 0..20u64 {
            w.add_record(
                0,
                |b| b.extend_from_slice(&(i * 100 + u64::from(kg)).to_be_bytes()),
                |_| {},
                |b| b.extend_from_slice(&i.to_be_bytes()),
            )
            .unwrap();
        }
        file.extend(w.take_output());
    }
    let (last, summary) = w.finish().unwrap();
    file.extend(last);
    (file, summary)
}

fn read_all(file: &[u8]) -> Result<Vec<(u32, u64, u64)>> {
    let path = "test";
    let len = file.len() as u64;
    let footer = parse_footer(&file[file.len().saturating_sub(FOOTER_LEN)..], len, path)?;
    let index = parse_index(
        &file[footer.index_offset as usize..(footer.index_offset + footer.index_len) as usize],
        &footer,
        path,
    )?;
    let hl = header_len(&file[..HEADER_PREFIX_LEN], &footer, path)?;
    assert_eq!(parse_header(&file[..hl as usize], path)?, header());
    let mut out = Vec::new();
    for e in index {
        let raw = decode_frames(
            &file[e.offset as usize..(e.offset + e.len) as usize],
            e.offset,
            path,
        )?;
        for r in records(&raw, path) {
            let r = r?;
            out.push((
                e.key_group,
                u64::from_be_bytes(r.key.try_into().unwrap()),
                u64::from_be_bytes(r.value.try_into().unwrap()),
            ));
        }
    }
    Ok(out)
}

#[test]
fn round_trip_compressed_and_plain() {
    for level in [None, Some(1), Some(3)] {
        let (file, summary) = write(level);
        assert_eq!(summary.size, file.len() as u64);
        assert_eq!(summary.crc32, crc32fast::hash(&file));
        assert_eq!(summary.records, 60);
        let got = read_all(&file).unwrap();
        assert_eq!(got.len(), 60);
        assert_eq!(got[21], (5, 105, 1));
    }
}

#[test]
fn every_single_byte_flip_is_detected() {
    let (file, _) = write(Some(1));
    for i in 0..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x5a;
        let err = read_all(&bad).expect_err(&format!("flip at byte {i} went unnoticed"));
        assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    }
}

#[test]
fn every_truncation_is_an_error() {
    let (file, _) = write(Some(1));
    for len in 0..file.len() {
        assert!(
            read_all(&file[..len]).is_err(),
            "truncation to {len} bytes was accepted"
        );
    }
}

/// One frame's bytes: codec, raw length, stored length, CRC32, payload.
fn frame(codec: u8, raw_len: u32, stored: &[u8]) -> Vec<u8> {
    let mut out = vec![codec];
    out.extend_from_slice(&raw_len.to_le_bytes());
    out.extend_from_slice(&(stored.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(stored).to_le_bytes());
    out.extend_from_slice(stored);
    out
}

#[test]
fn zstd_frame_claiming_over_1024_times_its_bytes_is_refused_before_allocation() {
    // 1 GiB of zeros compresses to a few dozen bytes: a valid zstd frame, a hostile claim.
    let zeros = zstd::bulk::compress(&vec![0u8; 1 << 20], 3).unwrap();
    let bad = frame(CODEC_ZSTD, MAX_FRAME_RAW_LEN, &zeros);
    let err = decode_frames(&bad, 100, "test").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    assert!(err.to_string().contains("above the limit"), "{err}");
    // A claim at the limit passes the header check; the payload (1 MiB) does not fit the bytes claimed
    // and reserved, and that is the error. The allocation was at most 1,024 times the block.
    let at_limit = frame(CODEC_ZSTD, zeros.len() as u32 * 1024, &zeros);
    let err = decode_frames(&at_limit, 0, "test").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    assert!(err.to_string().contains("does not decode"), "{err}");
    // A claim above what the payload decodes to: the length check is the error.
    let data: Vec<u8> = (0..65_536u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let packed = zstd::bulk::compress(&data, 3).unwrap();
    let short = frame(CODEC_ZSTD, data.len() as u32 + 100, &packed);
    let err = decode_frames(&short, 0, "test").unwrap_err();
    assert!(err.to_string().contains("its header says"), "{err}");
}

#[test]
fn stored_frame_must_declare_its_stored_length() {
    let bad = frame(CODEC_NONE, 1 << 20, b"0123456789");
    let err = decode_frames(&bad, 0, "test").unwrap_err();
    assert_eq!(err.kind(), crate::ErrorKind::Corrupt);
    let good = frame(CODEC_NONE, 10, b"0123456789");
    assert_eq!(decode_frames(&good, 0, "test").unwrap(), b"0123456789");
}

#[test]
fn frames_that_would_expand_over_the_limit_are_written_uncompressed_and_restore() {
    let mut w = KeyedFileWriter::new(
        &header(),
        WriterOptions {
            zstd_level: Some(3),
            frame_bytes: 1 << 22,
        },
    )
    .unwrap();
    let value = vec![0u8; 3 << 20];
    w.begin_key_group(3).unwrap();
    w.add_record(
        0,
        |b| b.extend_from_slice(&7u64.to_be_bytes()),
        |_| {},
        |b| b.extend_from_slice(&value),
    )
    .unwrap();
    let mut file = w.take_output();
    let (last, _) = w.finish().unwrap();
    file.extend(last);
    let footer = parse_footer(&file[file.len() - FOOTER_LEN..], file.len() as u64, "t").unwrap();
    let index = parse_index(
        &file[footer.index_offset as usize..(footer.index_offset + footer.index_len) as usize],
        &footer,
        "t",
    )
    .unwrap();
    let e = index[0];
    let block = &file[e.offset as usize..(e.offset + e.len) as usize];
    assert_eq!(
        block[0], CODEC_NONE,
        "a 3 MiB run of zeros must not be stored as zstd"
    );
    let raw = decode_frames(block, e.offset, "t").unwrap();
    let r = records(&raw, "t").next().unwrap().unwrap();
    assert_eq!(r.value, value.as_slice());
}

/// The header bytes a writer of `header` starts its file with.
fn header_bytes(header: &FileHeader) -> Vec<u8> {
    let options = WriterOptions {
        zstd_level: None,
        frame_bytes: 64,
    };
    KeyedFileWriter::new(header, options).unwrap().take_output()
}

#[test]
fn a_version_5_header_keeps_its_whole_range_and_a_range_outside_the_file_is_refused() {
    let mut delta = header();
    delta.rewrite = Some(Vec::new());
    delta.whole = KeyGroupRange::new(4, 7).unwrap();
    assert_eq!(delta.version(), WHOLE_VERSION);
    assert_eq!(delta.whole_range(), delta.whole);
    let bytes = header_bytes(&delta);
    let parsed = parse_header(&bytes, "test").unwrap();
    assert_eq!(
        parsed,
        FileHeader {
            appends: true,
            patches: true,
            ..delta.clone()
        }
    );
    // Without a whole range a delta stays of the version older readers read.
    let plain = FileHeader {
        whole: KeyGroupRange::EMPTY,
        ..delta.clone()
    };
    assert_eq!(plain.version(), DELTA_VERSION);
    assert_eq!(
        header().whole_range(),
        header().key_groups,
        "a full file is whole"
    );
    // The writer refuses a range outside the file's key groups, or on a full file.
    let outside = FileHeader {
        whole: KeyGroupRange::new(10, 20).unwrap(),
        ..delta.clone()
    };
    let full = FileHeader {
        rewrite: None,
        ..delta.clone()
    };
    for bad in [outside, full] {
        let err = KeyedFileWriter::new(
            &bad,
            WriterOptions {
                zstd_level: None,
                frame_bytes: 64,
            },
        );
        assert_eq!(
            err.err().unwrap().kind(),
            crate::error::ErrorKind::InvalidArgument
        );
    }
    // A reader refuses a stored range that is empty or outside, as a corrupt header.
    let end = bytes.len() - 4;
    for (first, end_exclusive) in [(6u32, 6u32), (12, 17), (9, 3)] {
        let mut bad = bytes.clone();
        bad[end - 8..end - 4].copy_from_slice(&first.to_le_bytes());
        bad[end - 4..end].copy_from_slice(&end_exclusive.to_le_bytes());
        let body = &bad[HEADER_PREFIX_LEN..end];
        let crc = crc32fast::hash(body);
        bad[end..].copy_from_slice(&crc.to_le_bytes());
        let err = parse_header(&bad, "test").unwrap_err();
        assert_eq!(
            err.kind(),
            crate::error::ErrorKind::Corrupt,
            "{first}..{end_exclusive}: {err}"
        );
        assert!(err.to_string().contains("whole range"), "{err}");
    }
}
