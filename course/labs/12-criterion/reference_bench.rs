//! REFERENCE SOLUTION, lab 12: the benchmark a student writes (for instructors and
//! `observatory lab dev-check`). The same input for every id, cloned outside the timed part
//! (`iter_batched_ref`), so sorting an already sorted vector never flatters an id.
//! `baseline_again` is the authoring check's A/A: the baseline must not beat itself.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pipeline::slots::percentile::p99;
use pipeline_plan::LabImpl;
use std::hint::black_box;

fn latencies() -> Vec<u32> {
    (0..4096u32)
        .map(|i| 100 + i.wrapping_mul(2_654_435_761) % 2_000_000)
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = latencies();
    let mut g = c.benchmark_group("lab12");
    for (id, imp) in [
        ("baseline", LabImpl::Baseline),
        ("reference", LabImpl::Reference),
        ("baseline_again", LabImpl::Baseline),
    ] {
        g.bench_function(id, |b| {
            b.iter_batched_ref(
                || input.clone(),
                |v| black_box(p99(imp, v)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
