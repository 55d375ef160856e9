// REFERENCE SOLUTION, lab 12 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/percentile.rs.
//
// One order statistic does not need a full sort: `select_nth_unstable` partitions around the
// wanted rank in O(n) on average, where sorting is O(n log n).

use super::rank;

pub fn p99(values: &mut [u32]) -> u32 {
    if values.is_empty() {
        return 0;
    }
    let r = rank(values.len());
    *values.select_nth_unstable(r).1
}
