//! Lab 12: YOUR criterion benchmark (`course/labs/12-criterion`).
//!
//! It measures the baseline p99 already. Add a benchmark with the id `lab12/student` that
//! measures `pipeline::slots::percentile::p99(LabImpl::Student, ...)` on the same input, then
//! make the STUDENT p99 in `pipeline/src/slots/percentile.rs` faster and prove it with
//! `observatory lab check 12`. Run it yourself with
//! `cargo bench -p observatory-course --bench lab12_student`.

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use pipeline::slots::percentile::p99;
use pipeline_plan::LabImpl;
use std::hint::black_box;

/// A batch of latencies in microseconds, the size of one parse batch.
fn latencies() -> Vec<u32> {
    (0..4096u32)
        .map(|i| 100 + i.wrapping_mul(2_654_435_761) % 2_000_000)
        .collect()
}

fn bench(c: &mut Criterion) {
    let input = latencies();
    let mut g = c.benchmark_group("lab12");
    g.bench_function("baseline", |b| {
        b.iter_batched_ref(
            || input.clone(),
            |v| black_box(p99(LabImpl::Baseline, v)),
            BatchSize::SmallInput,
        )
    });
    // TODO (lab 12): benchmark `LabImpl::Student` the same way, as "student".
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
