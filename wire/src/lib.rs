//! pipeline-wire: what crosses a pipeline process's boundary, as pure code (no runtime, no
//! telemetry, no allocator), so that the fuzz targets build only this crate.
//!
//! - [`event`]: compact event records, window results, drop reasons, the wall clock.
//! - [`json`]: the source's JSON records, parsed owned or borrowed, validated and encoded.
//! - [`generate`]: the seeded workload (Zipf keys, malformed records) a source emits.
//! - [`codec`]: length-delimited frames between stages, and the hello that opens a connection.
//! - [`admission`]: which peers a data port admits (plan, role, replica, token, limits).
//! - [`seglog`]: the sink's append-only, checksummed segment log and its reader.
//! - [`fuzzing`]: the property each cargo fuzz target (`fuzz/`) checks, and their seeds.
//!
//! The `pipeline` crate re-exports these modules under the same names.

pub mod admission;
pub mod codec;
pub mod event;
pub mod fuzzing;
pub mod generate;
pub mod json;
pub mod seglog;
