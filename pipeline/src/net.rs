//! Connections between stages.
//!
//! Upstream stages connect to their downstream's data port and push frames; each connection is
//! one stream. The same connection carries control frames the other way: a stage asked to stop
//! (SIGTERM, or a drain request from its own downstream) sends `Drain` to each upstream, which
//! finishes its stream with an end-of-stream frame. So stopping any stage drains the whole
//! pipeline from the source down, and nothing in flight is lost.
//!
//! Every queue is bounded: a slow consumer fills the queue, then the TCP window, then blocks
//! the producer upstream (backpressure), so memory stays bounded.

use crate::codec::{FrameCodec, FrameError, Kind, OutFrame, restamp};
use crate::context::StageCtx;
use crate::event::DropReason;
use futures::StreamExt;
use pipeline_plan::Role;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::codec::FramedRead;
use tracing::{debug, info, warn};

/// How long a draining stage waits for its upstreams to finish their streams.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a finishing stage waits for its downstream to acknowledge the end of stream.
const END_ACK_TIMEOUT: Duration = Duration::from_secs(30);
pub const READ_BUFFER: usize = 256 << 10;

pub use crate::event::now_ns;

/// How long a connection attempt to a downstream may take: a stale address (a pod that has
/// gone) can swallow SYNs for minutes.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What arrives on the data port, in arrival order.
#[derive(Debug)]
pub enum Input {
    /// Connection `conn` was accepted: a stream starts, before any of its frames.
    Start { conn: u64 },
    /// A validated data frame from connection `conn`.
    Batch {
        conn: u64,
        frame: crate::codec::Frame,
    },
    /// Connection `conn` finished its stream cleanly.
    End { conn: u64 },
    /// Connection `conn` closed (or was closed) without finishing its stream: nothing more
    /// comes from it (what it had in flight is counted as lost where it is known).
    Gone { conn: u64 },
}

/// The receiving side of a stage: yields inputs until every expected upstream has ended (or,
/// once draining, until the upstreams are gone). Once the stage gives up (`abandon`: the drain
/// deadline passed, or a second signal), it yields nothing more: what is queued or still
/// arriving is read and counted as `abandoned` for [`ABANDON_GRACE`], then the input ends
/// whatever the upstreams do. A full queue never outruns the deadline.
pub struct Ingress {
    rx: mpsc::Receiver<Input>,
    acker: Acker,
    ctx: Arc<StageCtx>,
    expected: u32,
    ended: u32,
    done: bool,
}

/// After giving up, how long a stage still reads (and counts) what its upstreams had sent.
pub const ABANDON_GRACE: Duration = Duration::from_secs(3);

impl Ingress {
    /// Start accepting on `listener`.
    pub fn start(ctx: Arc<StageCtx>, listener: TcpListener) -> Self {
        let cap = ctx.cfg.knobs.common().queue_capacity as usize;
        let (tx, rx) = mpsc::channel(cap);
        let acker = Acker::default();
        tokio::spawn(accept_loop(ctx.clone(), listener, tx, acker.clone()));
        Ingress {
            rx,
            acker,
            // In service mode the input never completes by itself, only by draining.
            expected: if ctx.cfg.service {
                u32::MAX
            } else {
                ctx.cfg.upstreams
            },
            ctx,
            ended: 0,
            done: false,
        }
    }

    /// A handle to acknowledge frames to the connection they came on (at least once).
    pub fn acker(&self) -> Acker {
        self.acker.clone()
    }

    /// The next input, or `None` once the input is complete.
    pub async fn recv(&mut self) -> Option<Input> {
        loop {
            if self.done || self.ended >= self.expected {
                self.done = true;
                return None;
            }
            if self.ctx.abandon.is_cancelled() {
                self.discard_rest().await;
                self.done = true;
                return None;
            }
            let abandon = self.ctx.abandon.clone();
            tokio::select! {
                biased;
                _ = abandon.cancelled() => {}
                item = self.rx.recv() => {
                    self.ctx.metrics.input_queue_depth.set(self.rx.len() as i64);
                    match item {
                        Some(input) => {
                            if matches!(input, Input::End { .. }) {
                                self.ended += 1;
                            }
                            return Some(input);
                        }
                        // The acceptor (stopped by the drain) and every reader are gone.
                        None => {
                            if self.ended < self.expected {
                                info!(ended = self.ended, expected = self.expected, "input closed while draining");
                            }
                            self.done = true;
                        }
                    }
                }
            }
        }
    }

    /// Count what is queued as abandoned (the readers count what they still read themselves),
    /// until every reader is done or [`ABANDON_GRACE`] passes.
    async fn discard_rest(&mut self) {
        let m = &self.ctx.metrics;
        let until = Instant::now() + ABANDON_GRACE;
        let mut abandoned = 0u64;
        loop {
            tokio::select! {
                item = self.rx.recv() => match item {
                    Some(Input::Batch { frame, .. }) => {
                        let events = u64::from(frame.header.event_count);
                        abandoned += events;
                        m.drop_events(DropReason::Abandoned, events, frame.wire_bytes as u64);
                    }
                    Some(Input::End { .. }) => self.ended += 1,
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(until) => break,
            }
            if self.ended >= self.expected {
                break;
            }
        }
        warn!(
            abandoned,
            ended = self.ended,
            expected = self.expected,
            "gave up on the input: what was queued or arriving is counted as abandoned"
        );
    }
}

/// At least once: acknowledges frames to the upstream connection they came on (the sink's
/// acks: how many of that connection's frames are durably in the log).
#[derive(Clone, Default)]
pub struct Acker(Arc<std::sync::Mutex<HashMap<u64, watch::Sender<u64>>>>);

impl Acker {
    /// The first `frames` frames of connection `conn` are durably handled.
    pub fn ack(&self, conn: u64, frames: u64) {
        if let Ok(map) = self.0.lock()
            && let Some(tx) = map.get(&conn)
        {
            tx.send_if_modified(|n| {
                let grew = frames > *n;
                *n = (*n).max(frames);
                grew
            });
        }
    }

    fn register(&self, conn: u64) -> watch::Receiver<u64> {
        let (tx, rx) = watch::channel(0);
        if let Ok(mut map) = self.0.lock() {
            map.insert(conn, tx);
        }
        rx
    }

    fn forget(&self, conn: u64) {
        if let Ok(mut map) = self.0.lock() {
            map.remove(&conn);
        }
    }
}

/// Every new connection's permits: one of the port's `max_connections`, and while it has not
/// been admitted one of the share unadmitted connections may take (all but one per expected
/// upstream, so a flood of silent connections cannot lock the real upstreams out).
struct Permits {
    _total: tokio::sync::OwnedSemaphorePermit,
    pending: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// Count (and log, throttled) a refused connection or frame.
fn refuse(ctx: &StageCtx, conn: u64, e: &FrameError) {
    ctx.metrics.frame_rejected(e);
    static LOG: crate::admission::LogThrottle =
        crate::admission::LogThrottle::new(Duration::from_secs(1));
    if let Some(suppressed) = LOG.allow() {
        warn!(conn, error = %e, reason = e.reason(), suppressed, "refused a connection or frame; closing it (suppressed: how many more since the last line)");
    }
}

async fn accept_loop(
    ctx: Arc<StageCtx>,
    listener: TcpListener,
    tx: mpsc::Sender<Input>,
    acker: Acker,
) {
    let common = ctx.cfg.knobs.common();
    let max = common.max_connections as usize;
    let total = Arc::new(tokio::sync::Semaphore::new(max));
    let reserved = (ctx.cfg.upstreams as usize).min(max - 1);
    let pending = Arc::new(tokio::sync::Semaphore::new(max - reserved));
    let expect = Arc::new(crate::admission::Expect::of(
        &ctx.cfg,
        ctx.token.get().copied(),
    ));
    let roster = Arc::new(crate::admission::Roster::default());
    let mut next_conn = 0u64;
    loop {
        tokio::select! {
            _ = ctx.drain.cancelled() => {
                debug!("no longer accepting connections");
                return;
            }
            accepted = listener.accept() => match accepted {
                Ok((sock, peer)) => {
                    next_conn += 1;
                    let permits = total
                        .clone()
                        .try_acquire_owned()
                        .ok()
                        .zip(pending.clone().try_acquire_owned().ok());
                    let Some((total, pending)) = permits else {
                        refuse(&ctx, next_conn, &FrameError::ConnectionLimit);
                        drop(sock);
                        continue;
                    };
                    let _ = sock.set_nodelay(true);
                    debug!(conn = next_conn, %peer, "connection accepted");
                    let permits = Permits { _total: total, pending: Some(pending) };
                    let admit = (expect.clone(), roster.clone());
                    tokio::spawn(read_conn(ctx.clone(), next_conn, sock, tx.clone(), acker.clone(), permits, admit));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

type Frames = FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>;

/// Read a new connection's hello (within [`crate::admission::HELLO_TIMEOUT`], in frames of at
/// most [`crate::codec::HELLO_MAX`] bytes) and admit it, or say why not.
async fn admit(
    frames: &mut Frames,
    expect: &crate::admission::Expect,
    roster: &Arc<crate::admission::Roster>,
) -> Result<(crate::codec::Hello, crate::admission::Seat), FrameError> {
    let first = tokio::time::timeout(crate::admission::HELLO_TIMEOUT, frames.next())
        .await
        .map_err(|_| FrameError::HelloTimeout)?;
    let frame = match first {
        Some(Ok(f)) => f,
        Some(Err(FrameError::Oversized)) => return Err(FrameError::NotAdmitted),
        Some(Err(e)) => return Err(e),
        None => return Err(FrameError::NotAdmitted),
    };
    let hello = match frame.header.kind {
        Kind::Hello => frame.hello().ok_or(FrameError::BadHello)?,
        _ => return Err(FrameError::NotAdmitted),
    };
    expect.check(&hello)?;
    let seat = roster.seat(expect, &hello)?;
    Ok((hello, seat))
}

/// Read one upstream connection: admit it, then read until its end of stream, a bad frame,
/// or close.
async fn read_conn(
    ctx: Arc<StageCtx>,
    conn: u64,
    sock: TcpStream,
    tx: mpsc::Sender<Input>,
    acker: Acker,
    mut permits: Permits,
    (expect, roster): (Arc<crate::admission::Expect>, Arc<crate::admission::Roster>),
) {
    let m = &ctx.metrics;
    let max = ctx.cfg.knobs.common().max_frame_bytes as usize;
    let (rd, wr) = sock.into_split();
    let mut frames = FramedRead::with_capacity(rd, FrameCodec::new(crate::codec::HELLO_MAX), 1024);
    let (hello, seat) = match admit(&mut frames, &expect, &roster).await {
        Ok(admitted) => admitted,
        Err(e) => {
            refuse(&ctx, conn, &e);
            return;
        }
    };
    drop(permits.pending.take());
    frames.decoder_mut().set_max(max);
    frames.read_buffer_mut().reserve(READ_BUFFER);
    debug!(
        conn,
        replica = hello.replica,
        stream = hello.stream_id,
        "upstream admitted"
    );
    // At least once, events carry their origin (the source's stream) as far as the
    // aggregate; window results, and everything at most once, the connection's own.
    let data_stream = if ctx.at_least_once() && ctx.cfg.role() != Role::Sink {
        crate::context::source_stream(&ctx.cfg.pipeline)
    } else {
        hello.stream_id
    };
    m.upstream_connections.inc();
    // The drain request goes upstream the moment the stage drains, even while this reader
    // waits on a full queue (the upstream must stop producing now, not once there is room).
    let closed = tokio_util::sync::CancellationToken::new();
    let conn_acks = ctx.at_least_once().then(|| acker.register(conn));
    let notifier = tokio::spawn(upstream_control(
        ctx.clone(),
        conn,
        wr,
        closed.clone(),
        conn_acks,
    ));
    let (mut events_in, mut records_in) = (0u64, 0u64);
    let mut ended = false;
    let mut discard = false;
    // A frame that has started must complete within FRAME_TIMEOUT of reading time.
    let mut progress = Instant::now();
    let mut stall = tokio::time::interval(crate::admission::FRAME_TIMEOUT / 4);
    stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    if tx.send(Input::Start { conn }).await.is_err() {
        closed.cancel();
        acker.forget(conn);
        m.upstream_connections.dec();
        return;
    }
    loop {
        if discard {
            // The stage gave up: read what the upstream still sends, without handing it on,
            // so nothing is left unread in the socket (it would be lost uncounted).
            discard_conn(&ctx, conn, &mut frames, (&mut events_in, &mut records_in)).await;
            ended = true;
            break;
        }
        tokio::select! {
            biased;
            _ = ctx.abandon.cancelled() => discard = true,
            _ = stall.tick() => {
                let started = frames.decoder().mid_frame() || !frames.read_buffer().is_empty();
                if started && progress.elapsed() >= crate::admission::FRAME_TIMEOUT {
                    refuse(&ctx, conn, &FrameError::FrameTimeout);
                    break;
                }
                if !started {
                    progress = Instant::now();
                }
            }
            next = frames.next() => match next {
                Some(Ok(frame)) => match frame.header.kind {
                    Kind::Data => {
                        if frame.header.stream_id != data_stream {
                            refuse(&ctx, conn, &FrameError::WrongStream);
                            break;
                        }
                        let events = u64::from(frame.header.event_count);
                        events_in = events_in.saturating_add(events);
                        records_in = records_in.saturating_add(u64::from(frame.header.record_count));
                        m.events_received.inc_by(events);
                        m.batches_received.inc();
                        m.received_bytes.inc_by(frame.wire_bytes as u64);
                        if m.telemetry && frame.header.emitted_at_ns > 0 {
                            let age = now_ns().saturating_sub(frame.header.emitted_at_ns);
                            m.batch_age.observe(age as f64 / 1e9);
                        }
                        let wire = frame.wire_bytes as u64;
                        tokio::select! {
                            sent = tx.send(Input::Batch { conn, frame }) => if sent.is_err() {
                                break;
                            },
                            _ = ctx.abandon.cancelled() => {
                                m.drop_events(DropReason::Abandoned, events, wire);
                                discard = true;
                            }
                        }
                        progress = Instant::now();
                    }
                    Kind::End => {
                        if frame.header.stream_id != hello.stream_id
                            || frame.end_totals() != (records_in, events_in)
                        {
                            // Never taken on trust: the stream is not over, and nothing is
                            // counted as lost on its word (what arrived is accounted for).
                            refuse(&ctx, conn, &FrameError::BadEndTotals);
                            break;
                        }
                        debug!(conn, events = events_in, "upstream finished its stream");
                        seat.ended();
                        ended = tx.send(Input::End { conn }).await.is_ok();
                        break;
                    }
                    kind @ (Kind::Drain | Kind::Ack | Kind::Rewind | Kind::Hello) => {
                        refuse(&ctx, conn, &FrameError::Kind(kind as u8));
                        break;
                    }
                },
                Some(Err(e)) => {
                    refuse(&ctx, conn, &e);
                    break;
                }
                None => {
                    if events_in > 0 {
                        warn!(conn, events = events_in, "upstream closed without finishing its stream");
                    }
                    break;
                }
            }
        }
    }
    if !ended {
        let _ = tx.send(Input::Gone { conn }).await;
    }
    // Closing our side is the receipt the upstream waits for after its end of stream.
    closed.cancel();
    let _ = notifier.await;
    acker.forget(conn);
    drop(seat);
    m.upstream_connections.dec();
}

/// What goes upstream on a connection, until the reader is done (then the write half is
/// dropped: the receipt of an end of stream): `Drain` when the stage drains; at least once,
/// acks (what is durable: this connection's frames, and the stage's event time) and rewinds.
async fn upstream_control(
    ctx: Arc<StageCtx>,
    conn: u64,
    mut wr: tokio::net::tcp::OwnedWriteHalf,
    closed: tokio_util::sync::CancellationToken,
    mut conn_acks: Option<watch::Receiver<u64>>,
) {
    let alo = ctx.at_least_once();
    let mut durable = ctx.durable.subscribe();
    let mut rewind = ctx.rewind.subscribe();
    let (mut drained, mut broken) = (false, false);
    let mut frames_acked = 0u64;
    // A connection that joins late (a restarted upstream) learns at once what is durable.
    let mut ack_due = alo && *durable.borrow() > 0;
    loop {
        let mut out = None;
        if ack_due {
            ack_due = false;
            let through = *durable.borrow_and_update();
            debug!(conn, frames_acked, through, "ack upstream");
            out = Some(OutFrame::ack(frames_acked, through));
        }
        if let Some(frame) = out
            && !broken
        {
            broken = !write_upstream(&mut wr, frame, &closed, conn).await;
        }
        let conn_ack = async {
            match conn_acks.as_mut() {
                Some(rx) => rx.changed().await.map(|()| *rx.borrow_and_update()),
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            biased;
            _ = closed.cancelled() => return,
            _ = ctx.drain.cancelled(), if !drained => {
                drained = true;
                OutFrame::drain()
            }
            Ok(()) = durable.changed(), if alo => {
                ack_due = true;
                continue;
            }
            Ok(frames) = conn_ack => {
                frames_acked = frames;
                ack_due = true;
                continue;
            }
            Ok(()) = rewind.changed(), if alo => OutFrame::rewind(),
        };
        if !broken {
            broken = !write_upstream(&mut wr, frame, &closed, conn).await;
        }
    }
}

/// Write one control frame upstream; `false` if the connection broke. An upstream that reads
/// nothing (stopped) cannot hold the reader past its end: the write gives way once it is done.
async fn write_upstream(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: OutFrame,
    closed: &tokio_util::sync::CancellationToken,
    conn: u64,
) -> bool {
    let bytes = frame.finish(0, 0);
    tokio::select! {
        r = wr.write_all(&bytes) => match r {
            Ok(()) => true,
            Err(e) => {
                debug!(conn, error = %e, "could not write upstream");
                false
            }
        },
        _ = closed.cancelled() => false,
    }
}

/// Read the rest of a connection after the stage gave up, counting every event as received
/// and abandoned, until the upstream's end of stream (its totals checked), the connection
/// closes, or [`ABANDON_GRACE`] passes.
async fn discard_conn(
    ctx: &StageCtx,
    conn: u64,
    frames: &mut Frames,
    (events_in, records_in): (&mut u64, &mut u64),
) {
    let m = &ctx.metrics;
    let until = Instant::now() + ABANDON_GRACE;
    let mut abandoned = 0u64;
    loop {
        let next = tokio::select! {
            n = frames.next() => n,
            _ = tokio::time::sleep_until(until) => break,
        };
        match next {
            Some(Ok(frame)) if frame.header.kind == Kind::Data => {
                let events = u64::from(frame.header.event_count);
                *events_in = events_in.saturating_add(events);
                *records_in = records_in.saturating_add(u64::from(frame.header.record_count));
                abandoned += events;
                m.events_received.inc_by(events);
                m.batches_received.inc();
                m.received_bytes.inc_by(frame.wire_bytes as u64);
                m.drop_events(DropReason::Abandoned, events, frame.wire_bytes as u64);
            }
            Some(Ok(frame)) if frame.header.kind == Kind::End => {
                if frame.end_totals() != (*records_in, *events_in) {
                    refuse(ctx, conn, &FrameError::BadEndTotals);
                }
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                m.frame_rejected(&e);
                break;
            }
            None => break,
        }
    }
    debug!(
        conn,
        abandoned, "read the rest of the stream after giving up"
    );
}

/// The sending side of a stage: one writer task per downstream address, each owning that
/// connection. Frames are either dealt (`send`, the source's and the aggregate's output): put
/// on one shared bounded queue that every *connected* writer pulls from, so a downstream that
/// is away (restarting, draining, slow) gets nothing while the others carry the stream; or
/// addressed (`send_to`, parse's key partitions): put on that lane's own bounded queue, which
/// only its writer sends. With no downstream, one lane discards and counts.
pub struct Egress {
    lanes: Vec<Lane>,
    shared: mpsc::Sender<OutFrame>,
    ctx: Arc<StageCtx>,
}

struct Lane {
    tx: mpsc::Sender<OutFrame>,
    task: JoinHandle<()>,
    connected: Arc<AtomicBool>,
}

/// The dealt queue, shared by the writers; one of them at a time waits on it.
type SharedQueue = Arc<tokio::sync::Mutex<mpsc::Receiver<OutFrame>>>;

/// A handle for a producer on its own thread: puts frames on the dealt queue.
pub struct EgressSender {
    shared: mpsc::Sender<OutFrame>,
    ctx: Arc<StageCtx>,
}

/// A frame the writers no longer take (the stage gave up, or they gave up on the downstream):
/// counted as lost.
fn refused(ctx: &StageCtx, frame: &OutFrame) {
    let reason = if ctx.abandon.is_cancelled() {
        DropReason::Abandoned
    } else {
        DropReason::DownstreamLost
    };
    ctx.metrics
        .drop_events(reason, u64::from(frame.events()), frame.len() as u64);
}

impl EgressSender {
    /// Queue a frame for whichever downstream takes it first, blocking while the queue is full
    /// (backpressure). `false` once the writers are gone (the frame is counted as lost).
    pub fn blocking_send(&mut self, frame: OutFrame) -> bool {
        match self.shared.blocking_send(frame) {
            Ok(()) => true,
            Err(e) => {
                refused(&self.ctx, &e.0);
                false
            }
        }
    }
}

impl Egress {
    pub fn start(ctx: Arc<StageCtx>) -> Self {
        let cap = ctx.cfg.knobs.common().queue_capacity as usize;
        let (shared, shared_rx) = mpsc::channel(cap);
        let shared_rx: SharedQueue = Arc::new(tokio::sync::Mutex::new(shared_rx));
        let up = Arc::new(AtomicUsize::new(0));
        let lanes_n = ctx.cfg.downstream.len().max(1);
        let acks = Arc::new(LaneAcks((0..lanes_n).map(|_| AtomicU64::new(0)).collect()));
        let mut index = 0usize;
        let mut lane = |addr: Option<String>| {
            let at = index;
            index += 1;
            let (tx, rx) = mpsc::channel(cap);
            let connected = Arc::new(AtomicBool::new(addr.is_none()));
            let queues = Queues {
                own: rx,
                own_open: true,
                shared: shared_rx.clone(),
                shared_open: true,
                shared_depth: 0,
            };
            let task = match addr {
                Some(addr) => tokio::spawn(write_loop(
                    ctx.clone(),
                    addr,
                    queues,
                    connected.clone(),
                    up.clone(),
                    (at, acks.clone()),
                )),
                None => tokio::spawn(discard_loop(ctx.clone(), queues)),
            };
            Lane {
                tx,
                task,
                connected,
            }
        };
        let lanes = if ctx.cfg.downstream.is_empty() {
            vec![lane(None)]
        } else {
            ctx.cfg
                .downstream
                .iter()
                .cloned()
                .map(|a| lane(Some(a)))
                .collect()
        };
        Egress { lanes, shared, ctx }
    }

    /// Number of lanes (downstream connections).
    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }

    /// A handle for a producer on another thread (dealt frames).
    pub fn sender(&self) -> EgressSender {
        EgressSender {
            shared: self.shared.clone(),
            ctx: self.ctx.clone(),
        }
    }

    /// Queue a frame for whichever connected downstream takes it first, waiting while the
    /// queue is full (backpressure). Once the writers have given up, the frame is counted as
    /// lost.
    pub async fn send(&self, frame: OutFrame) {
        if let Err(e) = self.shared.send(frame).await {
            refused(&self.ctx, &e.0);
        }
    }

    /// Queue a frame on one lane, waiting while it is full (backpressure).
    pub async fn send_to(&self, lane: usize, frame: OutFrame) {
        if let Err(e) = self.lanes[lane].tx.send(frame).await {
            refused(&self.ctx, &e.0);
        }
    }

    /// Whether every lane is connected.
    pub fn is_connected(&self) -> bool {
        self.lanes
            .iter()
            .all(|l| l.connected.load(Ordering::Relaxed))
    }

    /// Wait until connected (or the stage drains, or `timeout` passes).
    pub async fn wait_connected(&self, ctx: &StageCtx, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.is_connected() && !ctx.drain.is_cancelled() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.is_connected()
    }

    /// Close the queues, let the writers send what is queued and their end of stream, and wait.
    pub async fn finish(self) {
        drop(self.shared);
        let tasks: Vec<_> = self
            .lanes
            .into_iter()
            .map(|l| {
                drop(l.tx);
                l.task
            })
            .collect();
        for t in tasks {
            if let Err(e) = t.await {
                warn!(error = %e, "egress task failed");
            }
        }
    }
}

/// What one writer sends: its own lane's frames and the dealt ones.
struct Queues {
    own: mpsc::Receiver<OutFrame>,
    own_open: bool,
    shared: SharedQueue,
    shared_open: bool,
    /// Frames waiting in the dealt queue, as last seen.
    shared_depth: usize,
}

impl Queues {
    /// The next frame to send, from either queue; `None` once both are closed and empty.
    async fn next(&mut self) -> Option<OutFrame> {
        loop {
            if !self.own_open && !self.shared_open {
                return None;
            }
            let shared = self.shared.clone();
            tokio::select! {
                biased;
                f = self.own.recv(), if self.own_open => match f {
                    Some(f) => return Some(f),
                    None => self.own_open = false,
                },
                f = async {
                    let mut q = shared.lock().await;
                    let f = q.recv().await;
                    (f, q.len())
                }, if self.shared_open => match f {
                    (Some(f), depth) => {
                        self.shared_depth = depth;
                        return Some(f);
                    }
                    (None, _) => self.shared_open = false,
                },
            }
        }
    }

    /// Nothing can come any more (both queues closed and drained). Never waits: while another
    /// writer holds the dealt queue (waiting for its next frame), it is not known to be done,
    /// and a reconnecting writer need not wait for that frame to make its next attempt.
    fn exhausted(&mut self) -> bool {
        if self.own_open && self.own.is_closed() && self.own.is_empty() {
            self.own_open = false;
        }
        if self.shared_open
            && let Ok(q) = self.shared.try_lock()
            && q.is_closed()
            && q.is_empty()
        {
            self.shared_open = false;
        }
        !self.own_open && !self.shared_open
    }

    /// Frames waiting for this writer: its own, and the dealt ones as last seen.
    fn len(&self) -> usize {
        self.own.len() + self.shared_depth
    }
}

fn stream_id() -> u32 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::process::id().rotate_left(16)
        ^ (now_ns() as u32)
        ^ (NEXT.fetch_add(1, Ordering::Relaxed) as u32)
}

async fn discard_loop(ctx: Arc<StageCtx>, mut queues: Queues) {
    while let Some(frame) = queues.next().await {
        ctx.metrics.drop_events(
            DropReason::NoDownstream,
            u64::from(frame.events()),
            frame.len() as u64,
        );
    }
}

/// How a connection attempt ended.
enum Connected {
    Yes(TcpStream),
    /// The stage gave up waiting (its drain deadline passed, or it was told to).
    GaveUp,
    /// Nothing is left to send on this lane (its queues are closed and empty).
    NothingToSend,
}

/// Connect, retrying with backoff (each attempt resolves the name again and takes at most
/// [`CONNECT_TIMEOUT`]), until connected, the stage gives up, or nothing is left to send.
async fn connect(ctx: &StageCtx, addr: &str, queues: &mut Queues) -> Connected {
    let mut backoff = Duration::from_millis(10);
    let mut last_log = Instant::now();
    loop {
        if ctx.abandon.is_cancelled() {
            return Connected::GaveUp;
        }
        let attempt = tokio::select! {
            r = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)) => r,
            _ = ctx.abandon.cancelled() => return Connected::GaveUp,
        };
        let error = match attempt {
            Ok(Ok(sock)) => {
                let _ = sock.set_nodelay(true);
                info!(downstream = addr, "connected downstream");
                return Connected::Yes(sock);
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {CONNECT_TIMEOUT:?}"),
        };
        if last_log.elapsed() > Duration::from_secs(5) {
            warn!(downstream = addr, %error, "still waiting for the downstream");
            last_log = Instant::now();
        }
        if queues.exhausted() {
            return Connected::NothingToSend;
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = ctx.abandon.cancelled() => return Connected::GaveUp,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// One downstream connection and what has been sent on it (an end of stream carries the
/// totals of its connection).
struct Conn {
    wr: tokio::net::tcp::OwnedWriteHalf,
    control: FramedRead<tokio::net::tcp::OwnedReadHalf, FrameCodec>,
    stream: u32,
    seq: u64,
    records: u64,
    events: u64,
}

impl Conn {
    fn new(sock: TcpStream, max: usize) -> Self {
        let (rd, wr) = sock.into_split();
        Conn {
            wr,
            control: FramedRead::new(rd, FrameCodec::new(max)),
            stream: stream_id(),
            seq: 0,
            records: 0,
            events: 0,
        }
    }

    /// Introduce this stage on the new connection (the downstream admits nothing else first).
    async fn hello(&mut self, ctx: &StageCtx) -> bool {
        let hello = crate::admission::hello(&ctx.cfg, ctx.token.get(), self.stream).to_frame();
        tokio::select! {
            r = self.wr.write_all(&hello) => r.is_ok(),
            _ = ctx.abandon.cancelled() => false,
        }
    }

    /// Send the end of stream with this connection's totals and wait for the downstream to
    /// close it (its receipt).
    async fn end(mut self) {
        let end = OutFrame::end(self.records, self.events).finish(self.stream, self.seq);
        if let Err(e) = self.wr.write_all(&end).await {
            warn!(error = %e, "could not send end of stream");
            return;
        }
        let _ = self.wr.shutdown().await;
        let acked = tokio::time::timeout(END_ACK_TIMEOUT, async {
            while let Some(Ok(_)) = self.control.next().await {}
        })
        .await;
        if acked.is_err() {
            warn!("downstream did not close after the end of stream");
        }
        debug!(
            records = self.records,
            events = self.events,
            "stream finished"
        );
    }
}

/// Count every frame queued for this writer as dropped for `reason` (the dealt queue's too
/// when `shared`: no other writer will take them), and close the queues so that whatever the
/// producers queue later is refused and counted by them. Never waits for the producers.
async fn drop_queued(ctx: &StageCtx, queues: &mut Queues, reason: DropReason, shared: bool) -> u64 {
    let m = &ctx.metrics;
    let mut dropped = 0u64;
    let mut count = |f: OutFrame| {
        dropped += u64::from(f.events());
        m.drop_events(reason, u64::from(f.events()), f.len() as u64);
    };
    queues.own.close();
    while let Ok(f) = queues.own.try_recv() {
        count(f);
    }
    queues.own_open = false;
    if shared {
        let mut q = queues.shared.lock().await;
        q.close();
        while let Ok(f) = q.try_recv() {
            count(f);
        }
        queues.shared_open = false;
    }
    dropped
}

/// Once the stage gives up, how long a write already under way may still take (a downstream
/// that is giving up too reads everything at once; one that is stopped never does), and then
/// how long the end of stream may take.
const WRITE_ON_ABANDON: Duration = Duration::from_millis(1500);
const END_ON_ABANDON: Duration = Duration::from_millis(1000);

/// At least once, in a stage that does not keep what it sent (source, parse): the event time
/// each downstream lane has acknowledged as durable. What is durable on every lane is durable.
struct LaneAcks(Vec<AtomicU64>);

impl LaneAcks {
    fn record(&self, ctx: &StageCtx, lane: usize, through_us: u64) {
        if let Some(a) = self.0.get(lane) {
            a.fetch_max(through_us, Ordering::Relaxed);
        }
        let low = self
            .0
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        ctx.mark_durable(low);
    }
}

/// At least once, in the aggregate: a frame written and not yet acknowledged, kept to be
/// written again on the next connection.
struct Unacked {
    /// Its sequence on the current connection.
    seq: u64,
    bytes: bytes::Bytes,
    records: u64,
    events: u64,
    on_acked: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Act on an ack from downstream: release what it covers (a keeping stage), or record the
/// durable event time (the others).
fn on_ack(
    ctx: &StageCtx,
    lane: &(usize, Arc<LaneAcks>),
    keep: bool,
    pending: &mut VecDeque<Unacked>,
    frames: u64,
    through_us: u64,
) {
    debug!(
        frames,
        through_us,
        kept = pending.len(),
        "ack from downstream"
    );
    if keep {
        while pending.front().is_some_and(|u| u.seq < frames) {
            if let Some(tx) = pending.pop_front().and_then(|u| u.on_acked) {
                let _ = tx.send(());
            }
        }
    } else {
        lane.1.record(ctx, lane.0, through_us);
    }
}

/// Write every kept frame again on a new connection, in order. `false` if the connection
/// broke (or the stage gave up) meanwhile.
async fn resend(ctx: &StageCtx, c: &mut Conn, pending: &mut VecDeque<Unacked>) -> bool {
    let n = pending.len();
    for u in pending.iter_mut() {
        let bytes = restamp(&u.bytes, c.stream, c.seq);
        let written = tokio::select! {
            r = c.wr.write_all(&bytes) => r.is_ok(),
            _ = ctx.abandon.cancelled() => false,
        };
        if !written {
            return false;
        }
        u.seq = c.seq;
        c.seq += 1;
        c.records += u.records;
        c.events += u.events;
    }
    if n > 0 {
        info!(
            frames = n,
            "resent what the downstream had not acknowledged"
        );
    }
    true
}

async fn write_loop(
    ctx: Arc<StageCtx>,
    addr: String,
    mut queues: Queues,
    connected: Arc<AtomicBool>,
    up: Arc<AtomicUsize>,
    lane: (usize, Arc<LaneAcks>),
) {
    let m = &ctx.metrics;
    let max = ctx.cfg.knobs.common().max_frame_bytes as usize;
    let alo = ctx.at_least_once();
    // At least once, the aggregate keeps what it wrote until the sink acknowledges it (its
    // window state cannot be regenerated upstream); source and parse keep nothing here: the
    // source regenerates from the seed on a rewind.
    let keep = alo && ctx.cfg.role() == Role::Aggregate;
    // Bounded like a queue (backpressure): the sink acknowledges within an fsync.
    let cap = ctx.cfg.knobs.common().queue_capacity as usize;
    let mut pending: VecDeque<Unacked> = VecDeque::new();
    let mut conn: Option<Conn> = None;
    let lost = |conn: &mut Option<Conn>| {
        if conn.take().is_some() {
            connected.store(false, Ordering::Relaxed);
            up.fetch_sub(1, Ordering::Relaxed);
            if alo && !keep {
                // What was written on it may never be applied: have it resent.
                ctx.ask_rewind();
            }
        }
    };
    // A downstream that closes each new connection at once (it refuses this stage: a wrong
    // token, another pipeline) is not hammered: such reconnections back off up to 1 s.
    let mut connected_at: Option<Instant> = None;
    let mut refusals = 0u32;
    loop {
        if conn.is_none() {
            if let Some(at) = connected_at.take() {
                if at.elapsed() < Duration::from_secs(1) {
                    refusals = refusals.saturating_add(1);
                    let wait =
                        Duration::from_millis(10 << refusals.min(7)).min(Duration::from_secs(1));
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctx.abandon.cancelled() => {}
                    }
                } else {
                    refusals = 0;
                }
            }
            match connect(&ctx, &addr, &mut queues).await {
                Connected::Yes(sock) => {
                    connected_at = Some(Instant::now());
                    let mut c = Conn::new(sock, max);
                    if !c.hello(&ctx).await || !resend(&ctx, &mut c, &mut pending).await {
                        warn!(
                            downstream = addr,
                            "connection broke while resending; reconnecting"
                        );
                        continue;
                    }
                    conn = Some(c);
                    connected.store(true, Ordering::Relaxed);
                    up.fetch_add(1, Ordering::Relaxed);
                }
                Connected::NothingToSend => return,
                Connected::GaveUp => {
                    // Nobody to deliver to: account for what only this lane could send, and
                    // for the dealt frames too when no other lane is connected to take them
                    // (every lane gives up together, so the last one counts them).
                    let shared = up.load(Ordering::Relaxed) == 0;
                    let dropped =
                        drop_queued(&ctx, &mut queues, DropReason::DownstreamLost, shared).await;
                    warn!(downstream = addr, dropped, "gave up on the downstream");
                    return;
                }
            }
        }
        let Some(c) = conn.as_mut() else {
            continue;
        };
        tokio::select! {
            biased;
            _ = ctx.abandon.cancelled() => break,
            frame = queues.next(), if !keep || pending.len() < cap => match frame {
                Some(mut f) => {
                    m.output_queue_depth.set(queues.len() as i64);
                    let (records, events) = (u64::from(f.records()), u64::from(f.events()));
                    let on_acked = f.on_acked.take();
                    let bytes = f.finish(c.stream, c.seq);
                    // A downstream that reads nothing (stopped, wedged) cannot hold this past
                    // the moment the stage gives up.
                    let mut write = std::pin::pin!(c.wr.write_all(&bytes));
                    let written = loop {
                        tokio::select! {
                            r = &mut write => break Some(r),
                            _ = ctx.abandon.cancelled() => break None,
                            // A downstream that asks to finish while this write waits on it
                            // (it is full) is heard now: the stage stops producing at once.
                            Some(Ok(f)) = c.control.next() => match f.header.kind {
                                Kind::Drain if !ctx.cfg.service && !ctx.drain.is_cancelled() => {
                                    info!("downstream asked to finish the stream");
                                    ctx.drain.cancel();
                                }
                                Kind::Ack => if let Some((frames, through)) = f.ack() {
                                    on_ack(&ctx, &lane, keep, &mut pending, frames, through);
                                },
                                Kind::Rewind if alo && !keep => ctx.ask_rewind(),
                                _ => {}
                            }
                        }
                    };
                    let written = match written {
                        Some(r) => Some(r),
                        None => {
                            // Give the producers back at once (what they queue from now on is
                            // refused and counted), and the write a moment to complete.
                            drop_queued(&ctx, &mut queues, DropReason::Abandoned, true).await;
                            tokio::time::timeout(WRITE_ON_ABANDON, write).await.ok()
                        }
                    };
                    if keep && written.is_some() {
                        // Written or not, it stays until acknowledged (a failed write is
                        // written again on the next connection).
                        pending.push_back(Unacked { seq: c.seq, bytes: bytes.clone(), records, events, on_acked });
                    }
                    match written {
                        Some(Ok(())) => {
                            c.seq += 1;
                            c.records += records;
                            c.events += events;
                            m.events_sent.inc_by(events);
                            m.batches_sent.inc();
                            m.sent_bytes.inc_by(bytes.len() as u64);
                        }
                        Some(Err(e)) => {
                            if alo {
                                // Kept for a resend (aggregate), or regenerated by the source.
                                warn!(downstream = addr, error = %e, events, "write failed; reconnecting, to resend");
                            } else {
                                m.drop_events(DropReason::DownstreamLost, events, bytes.len() as u64);
                                warn!(downstream = addr, error = %e, events, "write failed; reconnecting");
                            }
                            lost(&mut conn);
                        }
                        None => {
                            // Possibly half written: this connection cannot carry an end of
                            // stream any more.
                            m.drop_events(DropReason::Abandoned, events, bytes.len() as u64);
                            lost(&mut conn);
                            break;
                        }
                    }
                }
                None => break,
            },
            ctrl = c.control.next() => match ctrl {
                Some(Ok(f)) if f.header.kind == Kind::Drain => {
                    if ctx.cfg.service {
                        // The downstream instance is going away: finish this connection (the
                        // other lanes take the dealt frames meanwhile) and carry on with
                        // whichever instance answers next at the same address.
                        info!(downstream = addr, "downstream is draining: ending this connection, then reconnecting");
                        if let Some(c) = conn.take() {
                            connected.store(false, Ordering::Relaxed);
                            up.fetch_sub(1, Ordering::Relaxed);
                            c.end().await;
                        }
                    } else {
                        info!("downstream asked to finish the stream");
                        ctx.drain.cancel();
                    }
                }
                Some(Ok(f)) if f.header.kind == Kind::Ack => {
                    if let Some((frames, through)) = f.ack() {
                        on_ack(&ctx, &lane, keep, &mut pending, frames, through);
                    }
                }
                Some(Ok(f)) if f.header.kind == Kind::Rewind && alo && !keep => {
                    info!(downstream = addr, "downstream asked for a resend");
                    ctx.ask_rewind();
                }
                Some(Ok(f)) => warn!(kind = ?f.header.kind, "unexpected frame from downstream; ignored"),
                Some(Err(e)) => {
                    warn!(error = %e, "bad control frame from downstream; reconnecting");
                    lost(&mut conn);
                }
                None => {
                    warn!(downstream = addr, "downstream closed the connection; reconnecting");
                    lost(&mut conn);
                }
            }
        }
    }
    if ctx.abandon.is_cancelled() {
        // Gave up: count what is queued, then end the stream (if the downstream still takes
        // it) so that it knows exactly what was sent.
        let dropped = drop_queued(&ctx, &mut queues, DropReason::Abandoned, true).await;
        warn!(
            downstream = addr,
            dropped, "gave up: queued frames counted as abandoned"
        );
        if let Some(c) = conn {
            up.fetch_sub(1, Ordering::Relaxed);
            if tokio::time::timeout(END_ON_ABANDON, c.end()).await.is_err() {
                warn!(
                    downstream = addr,
                    "the downstream did not take the end of stream"
                );
            }
        }
        return;
    }
    if let Some(c) = conn {
        up.fetch_sub(1, Ordering::Relaxed);
        c.end().await;
    }
}
