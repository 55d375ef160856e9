//! Shared by the command-line test binaries.

/// True (after saying so) when valgrind is missing and `OBSERVATORY_SKIP_VALGRIND` allows the
/// instruction-count tests to be skipped; without that variable a missing valgrind fails them.
pub fn skip_without_valgrind() -> bool {
    observatory_testkit::skip_without(
        "valgrind",
        "OBSERVATORY_SKIP_VALGRIND",
        "apt-get install valgrind",
    )
}
