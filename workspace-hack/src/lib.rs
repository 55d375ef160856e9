//! workspace-hack: no code. Its `Cargo.toml` turns on, in every build of the workspace, the
//! dependency features that only the tests' dev-dependencies would turn on, so that
//! `make build`, `cargo test`, clippy and a lab's student build (`cargo build --workspace --bin
//! pipeline`) share one compilation of every dependency. `tests/one_build.rs` checks it.
