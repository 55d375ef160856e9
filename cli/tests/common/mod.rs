//! Shared by the command-line test binaries.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// The `observatory` binary under test.
pub fn observatory() -> Command {
    Command::new(env!("CARGO_BIN_EXE_observatory"))
}

/// A JSON file, parsed (panics naming the file).
pub fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(
        &std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

/// True (after saying so) when valgrind is missing and `OBSERVATORY_SKIP_VALGRIND` allows the
/// instruction-count tests to be skipped; without that variable a missing valgrind fails them.
pub fn skip_without_valgrind() -> bool {
    observatory_testkit::skip_without(
        "valgrind",
        "OBSERVATORY_SKIP_VALGRIND",
        "apt-get install valgrind",
    )
}
