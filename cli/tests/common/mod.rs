//! Shared by the command-line test binaries.

use std::process::Command;

/// True (after saying so) when valgrind is missing and `OBSERVATORY_SKIP_VALGRIND` allows the
/// instruction-count tests to be skipped; without that variable a missing valgrind fails them.
pub fn skip_without_valgrind() -> bool {
    if Command::new("valgrind").arg("--version").output().is_ok() {
        return false;
    }
    assert!(
        std::env::var_os("OBSERVATORY_SKIP_VALGRIND").is_some(),
        "install valgrind (apt-get install valgrind)"
    );
    eprintln!("SKIPPED: valgrind is not installed");
    true
}
