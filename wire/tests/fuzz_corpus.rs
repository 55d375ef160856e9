//! Every input the fuzzers kept (`fuzz/corpus/TARGET/`, committed) replayed through its
//! target's property (`pipeline_wire::fuzzing`), on the stable toolchain: a regression found once
//! stays checked in every `make test`.

use std::path::PathBuf;

#[test]
fn every_corpus_input_holds_its_property() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    let mut total = 0;
    for target in pipeline_wire::fuzzing::TARGETS {
        let dir = root.join(target);
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (every target keeps a corpus)", dir.display()));
        let mut n = 0;
        for entry in entries {
            let path = entry.expect("a corpus entry").path();
            let data = std::fs::read(&path).expect("a corpus file");
            let ok = std::panic::catch_unwind(|| pipeline_wire::fuzzing::run(target, &data));
            assert!(
                matches!(ok, Ok(true)),
                "{target}: {} breaks its property (reproduce: cd fuzz && cargo fuzz run {target} {})",
                path.display(),
                path.display()
            );
            n += 1;
        }
        // A corpus grown by a fuzzer is far bigger than its seeds.
        assert!(
            n >= 20,
            "{target}: only {n} corpus inputs under {}",
            dir.display()
        );
        total += n;
    }
    eprintln!("replayed {total} corpus inputs");
}
