//! W3C trace context: the edge continues the caller's trace (`traceparent`) or starts
//! one, and passes a child `traceparent` to the origin so one trace spans both.
//! Randomness comes in as bytes (the glue draws them). The header is parsed by the
//! contract's [`TraceParent`], the same parser the origin uses.

pub use contract::trace::TraceParent;

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
                flags: 1,
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
        assert_eq!(child.flags, 1);
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
            assert_eq!(t.flags, 1);
        }
    }

    #[test]
    fn all_zero_randomness_still_gives_valid_ids() {
        let t = child_of(None, [0; 24]);
        assert!(TraceParent::parse(&t.header()).is_some());
    }
}
