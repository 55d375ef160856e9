//! The parse stage: JSON records -> compact binary events, `workers` batches at a time, output
//! in input order (so event time stays monotonic downstream). With several aggregate partitions
//! downstream, each event goes to the partition its key hashes to.

use super::contract::BatchKind;
use crate::codec::{Frame, OutFrame};
use crate::context::StageCtx;
use crate::event::{DropReason, key_of, partition_of};
use crate::json::parse_into;
use crate::net::{Egress, Ingress, Input};
use crate::slots::{self, Hooks};
use crate::window::{Checker, Horizon};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use pipeline_plan::{LabSlot, ParseKnobs, ParseMode};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// One parsed batch (a frame per output lane) and what was dropped from it.
pub struct Parsed {
    pub frames: Vec<OutFrame>,
    pub drops: [u32; DropReason::ALL.len()],
    pub drop_bytes: [u64; DropReason::ALL.len()],
    pub elapsed: Duration,
    /// The newest event time among the events kept (0: none).
    pub newest: u64,
}

/// Parse every record of a frame into `lanes` output frames, each event going to the lane
/// (aggregate partition) its key hashes to; an event beyond the stage's `horizon`
/// ([`Horizon::unbounded`] for none) is dropped as `future_timestamp`. Pure CPU
/// work; never panics on bad input.
pub fn parse_batch(
    frame: &Frame,
    mode: ParseMode,
    lanes: usize,
    labs: Hooks,
    horizon: &Horizon,
) -> Parsed {
    // Lab 17's per-batch checksum (CPU work on the parsing thread, or on threads of its own).
    if let Some(imp) = labs.get(LabSlot::Threads) {
        std::hint::black_box(slots::threads::digest(imp, frame));
    }
    let mut check = horizon.checker();
    let limit = horizon.limit();
    let t0 = Instant::now();
    let lanes = lanes.max(1);
    // Compact events are about a fifth of the JSON.
    let capacity = frame.payload.len() / 4 / lanes;
    let mut out: Vec<OutFrame> = (0..lanes).map(|_| OutFrame::data(capacity)).collect();
    let mut drops = [0u32; DropReason::ALL.len()];
    let mut drop_bytes = [0u64; DropReason::ALL.len()];
    let mut watermark = 0;
    let mut scratch = Vec::with_capacity(128);
    // Course lab hooks (`lab_slot`), off in production.
    let mut prechecked = None;
    if let Some(imp) = labs.get(LabSlot::Errors) {
        let Some(results) = precheck(imp, frame) else {
            // The check panicked: the whole batch is set aside, counted.
            drops[DropReason::Panicked.index()] = frame.header.record_count;
            drop_bytes[DropReason::Panicked.index()] = frame.payload.len() as u64;
            return Parsed {
                frames: out,
                drops,
                drop_bytes,
                elapsed: t0.elapsed(),
                newest: 0,
            };
        };
        prechecked = Some(results);
    }
    let hotspot = labs.get(LabSlot::Hotspot);
    // Lab 14's partitioner (conformance keeps its answers below `lanes`; `%` keeps a wrong
    // one from taking the stage down).
    let lane_of = |key: &[u8]| match labs.get(LabSlot::Partition) {
        Some(imp) => slots::partition::lane(imp, key, lanes) % lanes,
        None => partition_of(key, lanes),
    };
    let zerocopy = labs.get(LabSlot::Zerocopy);
    let parse_into = |rec: &[u8], buf: &mut Vec<u8>| match zerocopy {
        Some(imp) => slots::zerocopy::parse_into(imp, rec, buf),
        None => parse_into(mode, rec, buf),
    };
    let leak = labs.get(LabSlot::Leak);
    let context = labs.get(LabSlot::Context);
    let mut described = false;
    let mut duplicates = 0u32;
    let mut classes = 0u64;
    for (i, rec) in frame.records().enumerate() {
        if let Some(imp) = leak {
            duplicates += u32::from(slots::leak::remember(imp, rec));
        }
        let failed_precheck = prechecked.as_ref().and_then(|p: &Vec<_>| p[i]);
        // Lab 18's validation: the first failure of a batch is described in the log.
        let failed_validation =
            context.and_then(|imp| match slots::context::validate(imp, rec, !described) {
                Ok(reading) => {
                    std::hint::black_box(reading);
                    None
                }
                Err((reason, message)) => {
                    if let Some(message) = std::hint::black_box(message) {
                        described = true;
                        tracing::debug!(%message, "record failed validation");
                    }
                    Some(reason)
                }
            });
        let parsed = if let Some(reason) = failed_precheck.or(failed_validation) {
            Err(reason)
        } else if lanes == 1 && hotspot.is_none() {
            let mut ts = 0;
            out[0]
                .record(|buf| {
                    parse_into(rec, buf)
                        .and_then(|t| within(t, &mut check))
                        .map(|t| ts = t)
                })
                .map(|()| ts)
        } else {
            scratch.clear();
            parse_into(rec, &mut scratch)
                .and_then(|t| within(t, &mut check))
                .inspect(|_| {
                    let key = key_of(&scratch).expect("the parser wrote a whole event");
                    if let Some(imp) = hotspot {
                        classes += u64::from(slots::hotspot::route_class(imp, key));
                    }
                    out[lane_of(key)].push(&scratch);
                })
        };
        match parsed {
            Ok(ts) => watermark = watermark.max(ts),
            Err(reason) => {
                drops[reason.index()] += 1;
                drop_bytes[reason.index()] += rec.len() as u64;
            }
        }
    }
    std::hint::black_box((duplicates, classes));
    // The stream is in event-time order, so every lane may advance to the batch's watermark,
    // even a lane that got no event of this batch. A watermark the batch carries itself (the
    // source's last, at least once) goes on.
    // A carried watermark past the horizon is not passed on (u64::MAX is: the at-least-once
    // source's last batch; the aggregate decides whether it believes it).
    let newest = watermark;
    let carried = frame.header.watermark_us;
    let watermark = if carried <= limit || carried == u64::MAX {
        watermark.max(carried)
    } else {
        watermark
    };
    for f in &mut out {
        f.set_emitted_at(frame.header.emitted_at_ns);
        f.set_watermark(watermark);
    }
    Parsed {
        frames: out,
        drops,
        drop_bytes,
        elapsed: t0.elapsed(),
        newest,
    }
}

fn within(ts: u64, check: &mut Checker) -> Result<u64, DropReason> {
    if check.accept(ts) {
        Ok(ts)
    } else {
        Err(DropReason::FutureTimestamp)
    }
}

/// The errors lab's per-record pre-check, guarded: `None` if it panicked.
fn precheck(imp: pipeline_plan::LabImpl, frame: &Frame) -> Option<Vec<Option<DropReason>>> {
    std::panic::catch_unwind(|| {
        frame
            .records()
            .map(|rec| slots::errors::precheck(imp, rec).err().map(|e| e.reason()))
            .collect()
    })
    .ok()
}

pub async fn run(ctx: Arc<StageCtx>, listener: TcpListener) -> anyhow::Result<()> {
    let knobs: ParseKnobs = ctx.knobs()?;
    let mut ingress = Ingress::start(ctx.clone(), listener);
    let egress = Egress::start(ctx.clone());
    egress.wait_connected(&ctx, Duration::from_secs(60)).await;
    ctx.mark_ready();
    let workers = knobs.workers as usize;
    let lanes = egress.lanes();
    let alo = ctx.at_least_once();
    let horizon = Arc::new(Horizon::new(knobs.common.max_future_skew_ms));
    let mut pending = FuturesOrdered::new();
    let mut input_done = false;
    while !(input_done && pending.is_empty()) {
        tokio::select! {
            biased;
            Some(done) = pending.next(), if !pending.is_empty() => {
                let (parsed, origin): (Parsed, Option<(u32, u64, u16)>) = done?;
                account(&ctx, &parsed);
                // With partitions, an empty frame still carries the watermark; at least once,
                // every batch reaches every aggregate, so each can tell it has seen them all.
                let always = parsed.frames.len() > 1 || alo;
                for (lane, mut f) in parsed.frames.into_iter().enumerate() {
                    if let Some((stream, seq, lag)) = origin {
                        f.set_origin(stream, seq, lag);
                    }
                    if always || !f.is_empty() {
                        egress.send_to(lane, f).await;
                    }
                }
            }
            input = ingress.recv(), if !input_done && pending.len() < workers => match input {
                Some(Input::Batch { frame, .. }) => {
                    let ctx = ctx.clone();
                    let horizon = horizon.clone();
                    let h = &frame.header;
                    let origin = alo.then_some((h.stream_id, h.batch_seq, h.origin_lag));
                    pending.push_back(tokio::spawn(async move {
                        let records = frame.header.record_count;
                        let parsed = ctx.batch(BatchKind::Parse, records, async {
                            if let Some(imp) = ctx.labs.get(LabSlot::Blocking) {
                                crate::slots::blocking::lookup(imp).await;
                            }
                            if let Some(imp) = ctx.labs.get(LabSlot::Fanout) {
                                let keys = crate::slots::fanout::keys(frame.header.batch_seq, records);
                                std::hint::black_box(crate::slots::fanout::enrich(imp, keys).await);
                            }
                            let parsed = parse_batch(&frame, knobs.mode, lanes, ctx.labs, &horizon);
                            horizon.advance(parsed.newest);
                            parsed
                        })
                        .await;
                        (parsed, origin)
                    }));
                }
                Some(Input::Start { .. } | Input::End { .. } | Input::Gone { .. }) => {}
                None => input_done = true,
            }
        }
    }
    egress.finish().await;
    Ok(())
}

fn account(ctx: &StageCtx, parsed: &Parsed) {
    let m = &ctx.metrics;
    for (i, reason) in DropReason::ALL.iter().enumerate() {
        m.drop_events(*reason, u64::from(parsed.drops[i]), parsed.drop_bytes[i]);
    }
}
