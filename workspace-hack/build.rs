//! Empty: cargo resolves `[build-dependencies]` (the host-side features this crate unifies) only
//! for a package with a build script.
fn main() {}
