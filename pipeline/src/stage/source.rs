//! The source: generates (or replays) the event stream in batches on a dedicated thread and
//! pushes them into the egress queue; a full queue blocks generation (backpressure).
//!
//! At least once, batches are numbered from 0 (the same numbers and contents after a
//! restart: the stream is a function of the seed), and the source keeps, for each batch not
//! yet acknowledged, only where the generator was (24 bytes), never its bytes. An ack says
//! below which event time everything is in the sink's log; a rewind (a connection downstream
//! broke) makes it go back to the oldest unacknowledged batch and send everything again from
//! there. Its last batch has no events and a watermark past every event, which closes every
//! window; the stream ends once that too is acknowledged.

use super::contract::BatchKind;
use crate::codec::OutFrame;
use crate::context::StageCtx;
use crate::event::DropReason;
use crate::generate::{Generator, Mark};
use crate::net::{Egress, EgressSender, now_ns};
use crate::slots::batcher::{self, Ended, Frames};
use anyhow::Context;
use pipeline_plan::{LabImpl, LabSlot, SourceKnobs};
use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
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
    let batcher = ctx.labs.get(LabSlot::Batcher);
    let generated = tokio::task::spawn_blocking(move || match (records, batcher) {
        (Records::Generated(g), _) if gen_ctx.at_least_once() => {
            generate_acked(&gen_ctx, &knobs, *g, tx)
        }
        (Records::Generated(g), Some(imp)) => generate_piped(gen_ctx, &knobs, *g, tx, imp),
        (records, _) => generate(&gen_ctx, &knobs, records, tx),
    })
    .await
    .context("generator thread")?;
    egress.finish().await;
    let emitted = generated?;
    info!(emitted, "source finished its stream");
    Ok(())
}

/// How far behind its rate schedule the source may fall before it stops trying to catch up.
const MAX_CATCH_UP: Duration = Duration::from_millis(100);

/// Wait until the rate schedule allows `emitted` events; a source held back (backpressure, a
/// stopped stage) does not make the time up in a burst afterwards.
fn pace(k: &SourceKnobs, schedule: &mut Instant, emitted: u64) {
    if k.rate == 0 {
        return;
    }
    let due = *schedule + Duration::from_secs_f64(emitted as f64 / k.rate as f64);
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    } else if now - due > MAX_CATCH_UP {
        *schedule += now - due;
    }
}

/// When a timed run (`duration_seconds`) ends.
fn deadline(k: &SourceKnobs, start: Instant) -> Option<Instant> {
    (k.duration_seconds > 0.0).then(|| start + Duration::from_secs_f64(k.duration_seconds))
}

/// Whether an at-most-once stream has all it should have after `emitted` events: the
/// `events` count or the `duration_seconds` deadline reached.
fn stream_complete(k: &SourceKnobs, emitted: u64, deadline: Option<Instant>) -> bool {
    (k.events > 0 && emitted >= k.events) || deadline.is_some_and(|d| Instant::now() >= d)
}

/// A batch sent and not yet acknowledged: where the generator was, and its newest event time.
struct Unacked {
    seq: u64,
    mark: Mark,
    newest_us: u64,
}

/// At least once (see the module docs). Returns the events emitted (each position once, however
/// often it was resent).
fn generate_acked(
    ctx: &StageCtx,
    k: &SourceKnobs,
    mut g: Generator,
    mut tx: EgressSender,
) -> anyhow::Result<u64> {
    let m = &ctx.metrics;
    let batch = k.batch_events();
    let cap = k.max_unacked_batches as usize;
    let stream = ctx.origin_stream();
    let start = Instant::now();
    let mut schedule = start;
    let deadline = deadline(k, start);
    let mut unacked: VecDeque<Unacked> = VecDeque::new();
    let (mut seq, mut high) = (0u64, 0u64);
    let mut end = (k.events > 0).then_some(k.events);
    let mut last_sent = false;
    let mut cut = false;
    let mut rewinds = *ctx.rewind.borrow();
    let mut record = Vec::with_capacity(512);
    loop {
        if ctx.abandon.is_cancelled() {
            warn!(
                unacknowledged = unacked.len(),
                "gave up with batches not acknowledged"
            );
            break;
        }
        let durable = *ctx.durable.borrow();
        // `u64::MAX`: everything, the last batch included, is durable.
        while unacked
            .front()
            .is_some_and(|u| u.newest_us < durable || durable == u64::MAX)
        {
            unacked.pop_front();
        }
        if last_sent && unacked.is_empty() {
            info!(emitted = high, "every batch is acknowledged");
            break;
        }
        if !cut && (ctx.drain.is_cancelled() || deadline.is_some_and(|d| Instant::now() >= d)) {
            // Nothing new from here; what was sent is still resent until acknowledged.
            info!(emitted = high, "asked to finish the stream");
            cut = true;
            end = Some(end.map_or(high, |e| e.min(high)));
        }
        let now_rewinds = *ctx.rewind.borrow();
        if now_rewinds != rewinds {
            rewinds = now_rewinds;
            if let Some(first) = unacked.front() {
                info!(
                    from = first.seq,
                    batches = unacked.len(),
                    "resending what is not acknowledged"
                );
                g.restore(&first.mark);
                seq = first.seq;
                unacked.clear();
                last_sent = false;
            }
        }
        if last_sent || unacked.len() >= cap {
            std::thread::sleep(Duration::from_millis(1));
            continue;
        }
        let pos = g.generated();
        let lag = u16::try_from(seq - unacked.front().map_or(seq, |u| u.seq)).unwrap_or(u16::MAX);
        let mark = g.mark();
        let remaining = end.map_or(batch, |e| e.saturating_sub(pos));
        if remaining == 0 {
            // The last batch: no events, a watermark past all of them.
            let mut f = OutFrame::data(0);
            f.set_watermark(u64::MAX);
            f.set_emitted_at(now_ns());
            f.set_origin(stream, seq, lag);
            unacked.push_back(Unacked {
                seq,
                mark,
                newest_us: u64::MAX,
            });
            seq += 1;
            last_sent = true;
            if !tx.blocking_send(f) {
                break;
            }
            continue;
        }
        let want = batch.min(remaining);
        let span = ctx.blocking_batch(BatchKind::Generate, want as u32);
        let mut frame = OutFrame::data(want as usize * 240);
        for _ in 0..want {
            record.clear();
            g.next_into(&mut record);
            frame.push(&record);
        }
        drop(span);
        let newest_us = g.ts_of(pos + want - 1);
        let fresh = (pos + want).saturating_sub(high);
        high = high.max(pos + want);
        m.events_emitted.inc_by(fresh);
        m.events_resent.inc_by(want - fresh);
        if newest_us < durable {
            // Already in the log (a restarted source catching up): nothing to send.
            seq += 1;
            continue;
        }
        frame.set_emitted_at(now_ns());
        frame.set_origin(stream, seq, lag);
        unacked.push_back(Unacked {
            seq,
            mark,
            newest_us,
        });
        seq += 1;
        if !tx.blocking_send(frame) {
            break;
        }
        if fresh > 0 {
            pace(k, &mut schedule, high);
        }
    }
    Ok(high)
}

fn generate(
    ctx: &StageCtx,
    k: &SourceKnobs,
    mut records: Records,
    mut tx: EgressSender,
) -> anyhow::Result<u64> {
    let m = &ctx.metrics;
    let batch = k.batch_events() as usize;
    let max_frame = ctx.cfg.knobs.common().max_frame_bytes as usize;
    let max_record = max_frame / 2;
    let start = Instant::now();
    let mut schedule = start;
    let deadline = deadline(k, start);
    let mut emitted = 0u64;
    let mut exhausted = false;
    while !exhausted {
        if ctx.drain.is_cancelled() {
            info!(emitted, "asked to finish the stream");
            break;
        }
        if stream_complete(k, emitted, deadline) {
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
        pace(k, &mut schedule, emitted);
    }
    Ok(emitted)
}

/// How long the lab's pipe may take to hand over what it holds after the last record.
const PIPE_FINISH: Duration = Duration::from_secs(30);

/// Lab 02 (`lab_slot = batcher`): the generator pushes one record at a time into the lab's
/// pipe ([`batcher::start`]), which frames them and sends the frames. Records the pipe never
/// sent (it panicked, or still held them after [`PIPE_FINISH`]) are counted as dropped.
fn generate_piped(
    ctx: Arc<StageCtx>,
    k: &SourceKnobs,
    mut g: Generator,
    tx: EgressSender,
    imp: LabImpl,
) -> anyhow::Result<u64> {
    let max_frame = ctx.cfg.knobs.common().max_frame_bytes as usize;
    let sent = Arc::new(AtomicU64::new(0));
    // The egress handle, taken back from the pipe if it does not let go in time.
    let egress = Arc::new(Mutex::new(Some(tx)));
    let (frames, finished) = {
        let (ctx, sent, egress) = (ctx.clone(), sent.clone(), egress.clone());
        Frames::new(move |records: Vec<Vec<u8>>| {
            let Ok(mut guard) = egress.lock() else {
                return false;
            };
            let Some(tx) = guard.as_mut() else {
                return false;
            };
            // Whatever the lab's code hands over, a frame stays within the frame limits.
            let mut rest = records.as_slice();
            while !rest.is_empty() {
                let mut frame =
                    OutFrame::data(rest.iter().take(batcher::MAX_BATCH).map(Vec::len).sum());
                let mut n = 0;
                while let Some((r, tail)) = rest.split_first() {
                    if n == batcher::MAX_BATCH || (n > 0 && frame.len() + r.len() + 8 > max_frame) {
                        break;
                    }
                    frame.push(r);
                    n += 1;
                    rest = tail;
                }
                frame.set_emitted_at(now_ns());
                ctx.metrics.events_emitted.inc_by(n as u64);
                sent.fetch_add(n as u64, Ordering::Relaxed);
                if !tx.blocking_send(frame) {
                    return false;
                }
            }
            true
        })
    };
    let mut feed = batcher::start(imp, frames);
    let start = Instant::now();
    let mut schedule = start;
    let deadline = deadline(k, start);
    let mut fed = 0u64;
    loop {
        if ctx.drain.is_cancelled() {
            info!(emitted = fed, "asked to finish the stream");
            break;
        }
        if stream_complete(k, fed, deadline) {
            break;
        }
        let mut record = Vec::with_capacity(256);
        g.next_into(&mut record);
        fed += 1;
        if !feed.push(record) {
            break;
        }
        pace(k, &mut schedule, fed);
    }
    drop(feed);
    let ended = finished.wait(PIPE_FINISH);
    // From here the pipe sends nothing more: a late frame finds no egress.
    if let Ok(mut guard) = egress.lock() {
        guard.take();
    }
    let lost = fed.saturating_sub(sent.load(Ordering::Relaxed));
    if lost > 0 {
        let reason = match ended {
            Ended::Done { panicked: true } => DropReason::Panicked,
            _ => DropReason::Abandoned,
        };
        warn!(
            lost,
            ?ended,
            "the lab's pipe did not send every record it was fed"
        );
        ctx.metrics.events_emitted.inc_by(lost);
        ctx.metrics.drop_events(reason, lost, 0);
    }
    Ok(fed)
}
