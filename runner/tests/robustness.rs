//! The robustness report against real stage processes on loopback (`make chaos` runs it too):
//! every attack on a real run must be refused and counted under its reason, the run must end
//! by itself and conserve what the real source sent, and every stage must stay under its
//! memory bound (see `observatory_runner::robustness` for each attack).
//!
//! And the check of the counts must fail a wrong answer: an attack its stage did not count.

use observatory_runner::robustness::{Options, row, run_report, table, uncounted};
use std::collections::BTreeMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attack_is_refused_counted_and_the_run_conserved() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options::new(dir.path()).unwrap();
    let rows = run_report(&opts, |n, t, what| eprintln!("robustness {n}/{t}: {what}"))
        .await
        .unwrap();
    let text = table(&rows);
    eprintln!("{text}");
    assert!(dir.path().join("robustness.md").is_file());
    assert!(dir.path().join("robustness.json").is_file());
    for r in &rows {
        assert!(r.passed(), "{}: {:?}\n{text}", r.run, r.problems);
        assert!(r.conserved && r.lost == 0, "{text}");
    }
    // The impostor run: every real event persisted, and 18 attacks on the data ports and 4
    // on the admin ports.
    let impostors = &rows[0];
    assert_eq!(impostors.events_emitted, 3_000_000);
    assert_eq!(impostors.events_persisted, 3_000_000);
    assert_eq!(impostors.attacks.len(), 22, "{text}");
    for stage in ["parse", "aggregate", "sink"] {
        let r = &impostors.rejected[stage];
        // 544 connections sent no hello: each refused as not admitted, or at the connection
        // cap when the flood outran the closing (both counted, neither admitted).
        let refused = r["not_admitted"] + r.get("connection_limit").copied().unwrap_or(0);
        assert!(refused >= 544, "{stage}: {r:?}");
        assert_eq!(r["bad_token"], 3, "{stage}: {r:?}");
    }
    // The far-future run: one event dropped as future_timestamp, none as late.
    assert_eq!(rows[1].events_emitted, 300_001);
    assert_eq!(rows[1].events_persisted, 300_000);
}

#[test]
fn an_attack_its_stage_did_not_count_fails() {
    let a = row("forged end", "parse", &["not_admitted", "bad_token"]);
    let counted: BTreeMap<String, u64> = [("not_admitted".to_string(), 3)].into();
    assert_eq!(
        uncounted(&a, Some(&counted)),
        ["parse counted nothing under bad_token"]
    );
    assert_eq!(uncounted(&a, None).len(), 2, "a stage without figures");
    let all: BTreeMap<String, u64> = [("not_admitted".into(), 1), ("bad_token".into(), 1)].into();
    assert!(uncounted(&a, Some(&all)).is_empty());
}
