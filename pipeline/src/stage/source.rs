//! The source: generates (or replays) the event stream in batches on a dedicated thread and
//! pushes them into the egress queue; a full queue blocks generation (backpressure).

use super::contract::BatchKind;
use crate::codec::OutFrame;
use crate::context::StageCtx;
use crate::event::DropReason;
use crate::generate::Generator;
use crate::net::{Egress, EgressSender, now_ns};
use anyhow::Context;
use pipeline_plan::SourceKnobs;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{info, warn};

/// Where records come from.
enum Records {
    Generated(Box<Generator>),
    Replay {
        reader: BufReader<File>,
        line: Vec<u8>,
    },
}

/// What one pull produced.
enum Pulled {
    Record,
    /// A record of this many bytes, too large for a frame.
    TooLarge(usize),
    Exhausted,
}

impl Records {
    fn open(k: &SourceKnobs) -> anyhow::Result<Self> {
        if k.replay.is_empty() {
            return Ok(Records::Generated(Box::new(Generator::new(k))));
        }
        let file =
            File::open(&k.replay).with_context(|| format!("opening replay file {}", k.replay))?;
        Ok(Records::Replay {
            reader: BufReader::with_capacity(1 << 20, file),
            line: Vec::new(),
        })
    }

    /// Append the next record to `out` (nothing is appended unless `Record` is returned).
    fn pull(&mut self, out: &mut Vec<u8>, max_record: usize) -> std::io::Result<Pulled> {
        match self {
            Records::Generated(g) => {
                g.next_into(out);
                Ok(Pulled::Record)
            }
            Records::Replay { reader, line } => loop {
                line.clear();
                if reader.read_until(b'\n', line)? == 0 {
                    return Ok(Pulled::Exhausted);
                }
                while matches!(line.last(), Some(b'\n' | b'\r')) {
                    line.pop();
                }
                if line.is_empty() {
                    continue;
                }
                if line.len() > max_record {
                    return Ok(Pulled::TooLarge(line.len()));
                }
                out.extend_from_slice(line);
                return Ok(Pulled::Record);
            },
        }
    }
}

pub async fn run(ctx: Arc<StageCtx>) -> anyhow::Result<()> {
    let knobs: SourceKnobs = ctx.knobs()?;
    let records = Records::open(&knobs)?;
    let egress = Egress::start(ctx.clone());
    // The clock of a timed or rate-limited run starts when data can flow.
    if !egress.wait_connected(&ctx, Duration::from_secs(60)).await {
        warn!("starting without a downstream connection");
    }
    ctx.mark_ready();
    let tx = egress.sender();
    let gen_ctx = ctx.clone();
    let generated = tokio::task::spawn_blocking(move || generate(&gen_ctx, &knobs, records, tx))
        .await
        .context("generator thread")?;
    egress.finish().await;
    let emitted = generated?;
    info!(emitted, "source finished its stream");
    Ok(())
}

/// How far behind its rate schedule the source may fall before it stops trying to catch up.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

fn generate(
    ctx: &StageCtx,
    k: &SourceKnobs,
    mut records: Records,
    mut tx: EgressSender,
) -> anyhow::Result<u64> {
    let m = &ctx.metrics;
    // At a fixed rate, batches are cut at most every 10 ms so latency does not wait on a full
    // batch.
    let batch = if k.rate > 0 {
        (k.batch_size as u64).min((k.rate / 100).max(1)) as usize
    } else {
        k.batch_size as usize
    };
    let max_frame = ctx.cfg.knobs.common().max_frame_bytes as usize;
    let max_record = max_frame / 2;
    let start = Instant::now();
    let mut schedule = start;
    let deadline =
        (k.duration_seconds > 0.0).then(|| start + Duration::from_secs_f64(k.duration_seconds));
    let mut emitted = 0u64;
    let mut exhausted = false;
    while !exhausted {
        if ctx.drain.is_cancelled() {
            info!(emitted, "asked to finish the stream");
            break;
        }
        if (k.events > 0 && emitted >= k.events) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        let want = if k.events > 0 {
            batch.min((k.events - emitted) as usize)
        } else {
            batch
        };
        let batch = ctx.blocking_batch(BatchKind::Generate, want as u32);
        let mut frame = OutFrame::data(want * 240);
        let mut got = 0u64;
        let (mut too_large, mut too_large_bytes) = (0u64, 0u64);
        while (got as usize) < want && frame.len() + max_record < max_frame {
            let pulled = frame.record(|out| match records.pull(out, max_record) {
                Ok(Pulled::Record) => Ok(()),
                Ok(other) => Err(Ok(other)),
                Err(e) => Err(Err(e)),
            });
            match pulled {
                Ok(()) => got += 1,
                Err(Ok(Pulled::TooLarge(len))) => {
                    too_large += 1;
                    too_large_bytes += len as u64;
                }
                Err(Ok(_)) => {
                    exhausted = true;
                    break;
                }
                Err(Err(e)) => return Err(e).context("reading the replay file"),
            }
        }
        if too_large > 0 {
            m.events_emitted.inc_by(too_large);
            m.drop_events(DropReason::TooLarge, too_large, too_large_bytes);
            emitted += too_large;
        }
        if got == 0 {
            batch.discard();
            continue;
        }
        frame.set_emitted_at(now_ns());
        m.events_emitted.inc_by(got);
        emitted += got;
        drop(batch);
        if !tx.blocking_send(frame) {
            // The writers gave up on the downstream; the frame and the rest are accounted.
            break;
        }
        if k.rate > 0 {
            let due = schedule + Duration::from_secs_f64(emitted as f64 / k.rate as f64);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            } else if now - due > MAX_CATCH_UP {
                // Held back (backpressure, a stopped stage): the time lost is not made up in a
                // burst afterwards; the offered rate stays the knob's.
                schedule += now - due;
            }
        }
    }
    Ok(emitted)
}
