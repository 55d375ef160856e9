// REFERENCE SOLUTION, lab 03 (for instructors and `observatory lab dev-check`; students: try
// first). Compiled into the pipeline from pipeline/src/slots/blocking.rs.
//
// The client call blocks its thread for the whole lookup. Called straight from async code it
// holds one of the runtime's few worker threads, so at most `runtime_threads` batches make
// progress at once however many parse workers there are. `spawn_blocking` moves the call to
// the blocking pool (threads made for waiting); the async task just awaits its result.

pub async fn lookup() -> u64 {
    tokio::task::spawn_blocking(super::blocking_lookup)
        .await
        .unwrap_or(0)
}
