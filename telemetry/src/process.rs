//! Process metrics (`process_*`) for every observatory process, with CPU time to the
//! microsecond.
//!
//! The prometheus crate's process collector exports `process_cpu_seconds_total` in whole
//! seconds (it divides clock ticks by the tick rate in integers), which makes per-stage CPU on
//! a dashboard or over an Experiment's window coarse to useless. [`ProcessMetrics`] keeps that
//! collector for everything else (memory, file descriptors, threads, start time) and replaces
//! the CPU value with `getrusage`'s user + system time. [`usage`] is that reading, for the
//! stages' own `/stats` too.

#[cfg(target_os = "linux")]
use prometheus::core::{Collector, Desc};
#[cfg(target_os = "linux")]
use prometheus::process_collector::ProcessCollector;
#[cfg(target_os = "linux")]
use prometheus::proto::{Counter, MetricFamily};

/// The name whose value this collector makes precise.
pub const CPU_SECONDS: &str = "process_cpu_seconds_total";

/// `process_*` metrics of this process; register it once per registry.
#[cfg(target_os = "linux")]
pub struct ProcessMetrics {
    inner: ProcessCollector,
}

#[cfg(target_os = "linux")]
impl ProcessMetrics {
    pub fn for_self() -> Self {
        ProcessMetrics {
            inner: ProcessCollector::for_self(),
        }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        if let Some(Usage { cpu_seconds, .. }) = usage() {
            for family in families.iter_mut().filter(|f| f.name() == CPU_SECONDS) {
                for metric in family.mut_metric() {
                    let mut counter = Counter::default();
                    counter.set_value(cpu_seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// What `getrusage` says of this process so far (all threads).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds, to the microsecond.
    pub cpu_seconds: f64,
    /// Peak resident set size.
    pub peak_rss_bytes: u64,
}

/// This process's CPU time and peak RSS; `None` if `getrusage` fails.
pub fn usage() -> Option<Usage> {
    // SAFETY: getrusage fills the zeroed struct we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return None;
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Some(Usage {
        cpu_seconds: secs(ru.ru_utime) + secs(ru.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_rss_bytes: (ru.ru_maxrss.max(0) as u64) * 1024,
    })
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use prometheus::{Encoder, Registry, TextEncoder};

    fn scrape(r: &Registry) -> f64 {
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(CPU_SECONDS))
            .expect("the CPU counter is exported");
        line.rsplit(' ').next().unwrap().parse().unwrap()
    }

    /// Burn 50 ms of this process's CPU time (not of wall time: on a busy machine 50 ms of wall
    /// time can be 20 ms of CPU), well under the one-second step of the stock collector.
    fn burn_50ms() {
        let cpu = || usage().expect("getrusage").cpu_seconds;
        let (start, wall) = (cpu(), std::time::Instant::now());
        let mut x = 0u64;
        while cpu() - start < 0.05 {
            for _ in 0..10_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            assert!(
                wall.elapsed() < std::time::Duration::from_secs(30),
                "50 ms of CPU not had in 30 s"
            );
        }
    }

    #[test]
    fn cpu_seconds_are_exported_below_a_second_and_grow() {
        let r = Registry::new();
        r.register(Box::new(ProcessMetrics::for_self())).unwrap();
        // Idle first, so that a clock that is not this process's CPU time (wall time since
        // start, or user and system time counted twice) exceeds the bound below.
        std::thread::sleep(std::time::Duration::from_millis(200));
        burn_50ms();
        let first = scrape(&r);
        assert!(
            first > 0.0 && first.fract() != 0.0,
            "not whole seconds: {first}"
        );
        burn_50ms();
        let second = scrape(&r);
        assert!(second >= first + 0.03, "{first} -> {second}");
        let cpu = usage().expect("getrusage").cpu_seconds;
        assert!(
            second <= cpu,
            "exported {second} s, more than the {cpu} s of CPU used"
        );
        // The other process metrics are still there.
        let mut out = Vec::new();
        TextEncoder::new().encode(&r.gather(), &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
