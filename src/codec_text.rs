//! Text for encoded bytes of the crate's built-in codecs (`statectl dump`): the codec id stored in a
//! snapshot says how the bytes were written (`src/codec/mod.rs`).

/// `bytes` as text if `codec_id` is one of the crate's built-in codecs and the bytes decode: numbers in
/// decimal, `utf8` quoted (Rust escapes), `bytes` and unknown codecs `None` (the caller shows hex), the void
/// namespace and `unit` as `-`, a pair as `(a, b)` (its parts by their own ids), a TTL state's value
/// (`ttl(<id>)`) as `<value> (written at <ms> ms)`.
pub fn describe_encoded(codec_id: &str, bytes: &[u8]) -> Option<String> {
    describe_encoded_at(codec_id, bytes, None)
}

/// A TTL to judge stamped values by in [`describe_encoded_at`]: the state's time to live and the time
/// (ms, in the state's TTL time: the clock for processing time, a watermark for event time) to judge at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TtlView {
    /// The state's time to live (ms).
    pub ttl_ms: u64,
    /// Now (ms): a value written at `t` has expired if `t + ttl_ms <= now_ms`, as the backends judge.
    pub now_ms: u64,
}

/// As [`describe_encoded`]; with `ttl`, a TTL state's value also says when it expires or that it has:
/// `<value> (written at <ms> ms, expires at <ms> ms)` or `<value> (written at <ms> ms, expired)`.
pub fn describe_encoded_at(codec_id: &str, bytes: &[u8], ttl: Option<TtlView>) -> Option<String> {
    macro_rules! be {
        ($t:ty) => {
            <$t>::from_be_bytes(bytes.try_into().ok()?).to_string()
        };
    }
    macro_rules! ordered {
        ($t:ty, $u:ty) => {
            ((<$u>::from_be_bytes(bytes.try_into().ok()?) ^ (1 << (<$u>::BITS - 1))) as $t)
                .to_string()
        };
    }
    Some(match codec_id {
        "u8" => be!(u8),
        "u16:be" => be!(u16),
        "u32:be" => be!(u32),
        "u64:be" => be!(u64),
        "u128:be" => be!(u128),
        "i8:ordered" => ordered!(i8, u8),
        "i16:be-ordered" => ordered!(i16, u16),
        "i32:be-ordered" => ordered!(i32, u32),
        "i64:be-ordered" => ordered!(i64, u64),
        "i128:be-ordered" => ordered!(i128, u128),
        "f64:be-bits" => f64::from_bits(u64::from_be_bytes(bytes.try_into().ok()?)).to_string(),
        "bool" => match bytes {
            [0] => "false".into(),
            [1] => "true".into(),
            _ => return None,
        },
        "utf8" => format!("{:?}", std::str::from_utf8(bytes).ok()?),
        "void-namespace" | "unit" if bytes.is_empty() => "-".into(),
        id if id.starts_with("ttl(") => {
            // A value of a state with TTL (`docs/ttl.md`): the time of its last write, then the value.
            let inner = id.strip_prefix("ttl(")?.strip_suffix(')')?;
            let (written, value) = bytes.split_first_chunk::<8>()?;
            let written = u64::from_be_bytes(*written);
            let expiry = match ttl {
                None => String::new(),
                Some(view) => match written.saturating_add(view.ttl_ms) {
                    at if at <= view.now_ms => ", expired".into(),
                    at => format!(", expires at {at} ms"),
                },
            };
            format!(
                "{} (written at {written} ms{expiry})",
                describe_encoded_at(inner, value, ttl).unwrap_or_else(|| hex_bytes(value)),
            )
        }
        id => {
            let inner = id.strip_prefix("pair(")?.strip_suffix(')')?;
            let (a, b) = split_pair(inner)?;
            let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
            let first = bytes.get(4..4usize.checked_add(len)?)?;
            let second = &bytes[4 + len..];
            format!(
                "({}, {})",
                describe_encoded_at(a, first, ttl).unwrap_or_else(|| hex_bytes(first)),
                describe_encoded_at(b, second, ttl).unwrap_or_else(|| hex_bytes(second))
            )
        }
    })
}

/// `a,b` split at the comma outside parentheses.
fn split_pair(inner: &str) -> Option<(&str, &str)> {
    let mut depth = 0i32;
    for (i, c) in inner.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => return Some((&inner[..i], &inner[i + 1..])),
            _ => {}
        }
    }
    None
}

/// Lower-case hex of `bytes`, `0x` first (`0x` alone for no bytes).
pub fn hex_bytes(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * bytes.len());
    s.push_str("0x");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, VoidNamespace};

    fn text<T: Codec>(v: T) -> Option<String> {
        let mut out = Vec::new();
        v.encode(&mut out);
        describe_encoded(&T::codec_id(), &out)
    }

    #[test]
    fn built_in_codecs_read_back_and_others_do_not() {
        assert_eq!(text(42u64).as_deref(), Some("42"));
        assert_eq!(text(-7i64).as_deref(), Some("-7"));
        assert_eq!(text(-7i8).as_deref(), Some("-7"));
        assert_eq!(text(1.5f64).as_deref(), Some("1.5"));
        assert_eq!(text(true).as_deref(), Some("true"));
        assert_eq!(text("w\"1".to_string()).as_deref(), Some("\"w\\\"1\""));
        assert_eq!(text(VoidNamespace).as_deref(), Some("-"));
        assert_eq!(
            text((3u32, ("x".to_string(), -1i32))).as_deref(),
            Some("(3, (\"x\", -1))")
        );
        assert_eq!(
            text(vec![1u8, 2]),
            None,
            "bytes are shown as hex by the caller"
        );
        assert_eq!(describe_encoded("u64:be", &[1, 2]), None, "wrong length");
        // A TTL state's value: the last write's time (ms, big-endian), then the value.
        let mut stamped = 1_000_000u64.to_be_bytes().to_vec();
        7u64.encode(&mut stamped);
        assert_eq!(
            describe_encoded("ttl(u64:be)", &stamped).as_deref(),
            Some("7 (written at 1000000 ms)")
        );
        let view = |now_ms| {
            Some(TtlView {
                ttl_ms: 500,
                now_ms,
            })
        };
        assert_eq!(
            describe_encoded_at("ttl(u64:be)", &stamped, view(1_000_499)).as_deref(),
            Some("7 (written at 1000000 ms, expires at 1000500 ms)")
        );
        assert_eq!(
            describe_encoded_at("ttl(u64:be)", &stamped, view(1_000_500)).as_deref(),
            Some("7 (written at 1000000 ms, expired)")
        );
        assert_eq!(
            describe_encoded("ttl(u64:be)", &[0; 7]),
            None,
            "shorter than a timestamp"
        );
        assert_eq!(describe_encoded("someone-elses", &[1]), None);
        assert_eq!(hex_bytes(&[0xab, 0x01]), "0xab01");
    }
}
