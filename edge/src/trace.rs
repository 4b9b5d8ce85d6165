//! W3C trace context: the edge continues the caller's trace (`traceparent`) or starts
//! one, and passes a child `traceparent` to the origin so one trace spans both.
//! Randomness comes in as bytes (the glue draws them).

/// A parsed `traceparent`: version 00, 16-byte trace id, 8-byte parent id, flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: String,
    pub parent_id: String,
    pub flags: String,
}

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl TraceParent {
    /// Parses a `traceparent` header; `None` when it is not a valid version-00 one.
    pub fn parse(header: &str) -> Option<Self> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let [version, trace_id, parent_id, flags] = parts.as_slice() else {
            return None;
        };
        let valid = *version == "00"
            && is_hex(trace_id, 32)
            && is_hex(parent_id, 16)
            && is_hex(flags, 2)
            && trace_id.bytes().any(|b| b != b'0')
            && parent_id.bytes().any(|b| b != b'0');
        valid.then(|| TraceParent {
            trace_id: trace_id.to_string(),
            parent_id: parent_id.to_string(),
            flags: flags.to_string(),
        })
    }

    pub fn header(&self) -> String {
        format!("00-{}-{}-{}", self.trace_id, self.parent_id, self.flags)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `traceparent` to send upstream: the caller's trace with a new span id, or a new
/// sampled trace when the caller sent none (or an invalid one). `random` gives 24 bytes.
pub fn child_of(incoming: Option<&str>, random: [u8; 24]) -> TraceParent {
    let mut span = random[16..24].to_vec();
    if span.iter().all(|&b| b == 0) {
        span[7] = 1;
    }
    match incoming.and_then(TraceParent::parse) {
        Some(parent) => TraceParent {
            parent_id: hex(&span),
            ..parent
        },
        None => {
            let mut trace = random[..16].to_vec();
            if trace.iter().all(|&b| b == 0) {
                trace[15] = 1;
            }
            TraceParent {
                trace_id: hex(&trace),
                parent_id: hex(&span),
                flags: "01".into(),
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_continued_with_a_new_span() {
        let child = child_of(Some(GOOD), [7; 24]);
        assert_eq!(child.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(child.parent_id, "0707070707070707");
        assert_eq!(child.flags, "01");
        assert_eq!(TraceParent::parse(&child.header()), Some(child));
    }

    #[test]
    fn a_missing_or_invalid_traceparent_starts_a_new_trace() {
        for bad in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            Some("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            Some("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
        ] {
            let t = child_of(bad, [0xab; 24]);
            assert_eq!(t.trace_id, "ab".repeat(16), "{bad:?}");
            assert_eq!(t.flags, "01");
        }
    }

    #[test]
    fn all_zero_randomness_still_gives_valid_ids() {
        let t = child_of(None, [0; 24]);
        assert!(TraceParent::parse(&t.header()).is_some());
    }
}
