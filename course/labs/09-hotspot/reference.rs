// REFERENCE SOLUTION, lab 09 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/hotspot.rs.
//
// The flamegraph shows `hotspot::baseline` under `parse_batch`, and under it `to_lowercase`,
// `String::from_utf8_lossy` and the allocator: the table is rebuilt and the key copied and
// lowercased for every event. The prefixes are constant and already lowercase, so compare bytes
// in place, with memchr's substring search (SIMD). (Keys are generated lowercase; an
// ASCII-case-insensitive search would keep the baseline's exact semantics for any input.)

use super::PREFIXES;

pub fn route_class(key: &[u8]) -> u8 {
    PREFIXES
        .iter()
        .position(|p| memchr::memmem::find(key, p.as_bytes()).is_some())
        .map_or(0, |i| (i + 1) as u8)
}
