//! The typed knobs of each stage: what labs change.
//!
//! Every stage has its own struct; the knobs every stage shares live in [`CommonKnobs`] and are
//! flattened into it, so a knob is always addressed as `stage.knob` (e.g. `parse.mode`,
//! `sink.fsync`, `aggregate.queue_capacity`). Field names are the knob names everywhere: in the
//! stage config file, in `--set`, in `PIPELINE_KNOB_*` environment variables and in the
//! Kubernetes `Pipeline` resource.

use crate::PlanError;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value};
use std::fmt;
use std::str::FromStr;

/// The role a pipeline process plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Source,
    Parse,
    Aggregate,
    Sink,
}

impl Role {
    /// The stages in data-flow order.
    pub const CHAIN: [Role; 4] = [Role::Source, Role::Parse, Role::Aggregate, Role::Sink];

    /// The stage whose replicas connect to this one's data port (plans are a prefix of
    /// [`Role::CHAIN`], so it is always the one before in the chain).
    pub fn upstream(self) -> Option<Role> {
        let at = Role::CHAIN.iter().position(|r| *r == self)?;
        at.checked_sub(1).map(|i| Role::CHAIN[i])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Source => "source",
            Role::Parse => "parse",
            Role::Aggregate => "aggregate",
            Role::Sink => "sink",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = PlanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::CHAIN
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| PlanError::UnknownStage(s.to_string()))
    }
}

/// Where the source's event time starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum EventTime {
    /// A fixed origin: the stream is the same bytes on every run (reproducible aggregates).
    #[default]
    Fixed,
    /// The wall clock when the source starts: a restarted long-running source continues in
    /// the present instead of replaying old event times (which would all be late).
    WallClock,
}

/// How the parse stage turns JSON into events.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ParseMode {
    /// Every string field is copied into an owned `String`.
    #[default]
    Owned,
    /// String fields borrow from the input buffer (`#[serde(borrow)]`, zero-copy).
    Borrowed,
}

/// How the aggregate stage shares its window state between workers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StateStrategy {
    /// One `Mutex` around the whole window map, locked per event.
    #[default]
    Mutex,
    /// `shards` mutexes, a key's shard chosen by its hash, locked per event.
    Sharded,
    /// A single task owns the map; workers send it decoded batches over a channel.
    Owner,
}

/// What the sink does with window results.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SinkMode {
    /// Append every result to the checksummed segment log.
    #[default]
    Log,
    /// Count and discard (pure throughput runs).
    Blackhole,
}

/// When the sink calls `fsync` on the segment log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// Never: the OS decides when data reaches the disk.
    Never,
    /// At most every `fsync_interval_ms`.
    #[default]
    Interval,
    /// After every received batch, before it is counted as persisted.
    Batch,
}

/// What a stage promises about the batches it hands downstream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Each batch is sent once; what a failure cuts off is counted as lost, never silently.
    #[default]
    AtMostOnce,
    /// Batches are acknowledged once durably handled downstream and resent after a failure;
    /// receivers drop what they have already seen, so the log holds each window once.
    AtLeastOnce,
}

/// The process's global allocator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Allocator {
    /// The platform allocator (glibc malloc).
    System,
    /// jemalloc, with heap profiling available on `/debug/pprof/heap`.
    #[default]
    Jemalloc,
}

impl Allocator {
    pub fn as_str(self) -> &'static str {
        match self {
            Allocator::System => "system",
            Allocator::Jemalloc => "jemalloc",
        }
    }
}

/// A course lab's code slot (`pipeline/src/slots/<slot>.rs`): a hook in the pipeline that runs
/// only when selected, so baseline, student and reference code run A/B from one binary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LabSlot {
    /// No lab code runs (production).
    #[default]
    None,
    /// Parse: a per-batch lookup made from async code.
    Blocking,
    /// Parse: a per-record pre-check whose failures must not take the batch down.
    Errors,
    /// Aggregate: a per-frame summary over the records.
    Iterators,
    /// Parse: a per-event route classification.
    Hotspot,
    /// Aggregate: bookkeeping when windows close.
    Deadlock,
    /// Parse: a cache of recently seen trace ids.
    Leak,
    /// Parse: the typed event a record is parsed into (owned or borrowed strings).
    Zerocopy,
    /// Parse: per-batch requests to a remote service (awaited one by one, or all at once).
    Fanout,
    /// Sink: when to fsync the log (group commit within a durability bound).
    Fsync,
    /// Sink kernel: replaying the log into events per key after a crash.
    Replay,
    /// Aggregate: a per-frame tally (lab 16, a recall lab).
    Recall,
    /// Parse: a per-batch checksum, CPU work (lab 17: OS threads and channels).
    Threads,
    /// Source: the pipe from the generator to the network (lab 02: a bounded channel and a
    /// batcher).
    Batcher,
    /// Parse: a per-record validation with errors that say what and where (lab 18).
    Context,
    /// Aggregate: per-frame metric names, made and thrown away with the frame (lab 08: an
    /// arena).
    Arena,
    /// Aggregate: per-key totals that every worker adds its frames to (lab 04: contention
    /// under hot keys).
    Contention,
    /// Parse: which aggregate partition an event's key goes to (lab 14).
    Partition,
    /// Sink kernel: compacting the log's layers into one segment (lab 19).
    Compaction,
    /// Sink kernel: what two replicas of the compacted log must take from each other (lab 20).
    Reconcile,
}

impl LabSlot {
    pub const ALL: [LabSlot; 20] = [
        LabSlot::None,
        LabSlot::Blocking,
        LabSlot::Errors,
        LabSlot::Iterators,
        LabSlot::Hotspot,
        LabSlot::Deadlock,
        LabSlot::Leak,
        LabSlot::Zerocopy,
        LabSlot::Fanout,
        LabSlot::Fsync,
        LabSlot::Replay,
        LabSlot::Recall,
        LabSlot::Threads,
        LabSlot::Batcher,
        LabSlot::Context,
        LabSlot::Arena,
        LabSlot::Contention,
        LabSlot::Partition,
        LabSlot::Compaction,
        LabSlot::Reconcile,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LabSlot::None => "none",
            LabSlot::Blocking => "blocking",
            LabSlot::Errors => "errors",
            LabSlot::Iterators => "iterators",
            LabSlot::Hotspot => "hotspot",
            LabSlot::Deadlock => "deadlock",
            LabSlot::Leak => "leak",
            LabSlot::Zerocopy => "zerocopy",
            LabSlot::Fanout => "fanout",
            LabSlot::Fsync => "fsync",
            LabSlot::Replay => "replay",
            LabSlot::Recall => "recall",
            LabSlot::Threads => "threads",
            LabSlot::Batcher => "batcher",
            LabSlot::Context => "context",
            LabSlot::Arena => "arena",
            LabSlot::Contention => "contention",
            LabSlot::Partition => "partition",
            LabSlot::Compaction => "compaction",
            LabSlot::Reconcile => "reconcile",
        }
    }
}

/// Which implementation a lab slot runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum LabImpl {
    /// The code the lab starts from.
    #[default]
    Baseline,
    /// The student's version (the function marked STUDENT in the slot file).
    Student,
    /// The reference solution (in `course/labs/NN-slug/reference.rs`).
    Reference,
    /// Mutant N of the slot's lab (a wrong but fast STUDENT body from its `lab.toml`), for the
    /// labs' authoring check only: compiled in with the pipeline's `lab-mutants` feature, run
    /// by `pipeline conformance --impl mutant-N`, never a knob value.
    #[serde(skip)]
    #[cfg_attr(feature = "schema", schemars(skip))]
    Mutant(u8),
}

impl LabImpl {
    /// The name of a knob value (`mutant` for any mutant, which no knob can select; its
    /// `Display` form names it: `mutant-N`).
    pub fn as_str(self) -> &'static str {
        match self {
            LabImpl::Baseline => "baseline",
            LabImpl::Student => "student",
            LabImpl::Reference => "reference",
            LabImpl::Mutant(_) => "mutant",
        }
    }
}

impl fmt::Display for LabImpl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LabImpl::Mutant(n) => write!(f, "mutant-{n}"),
            other => f.write_str(other.as_str()),
        }
    }
}

impl FromStr for LabImpl {
    type Err = String;

    /// `baseline`, `student`, `reference` or `mutant-N` (N from 1).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "baseline" => Ok(LabImpl::Baseline),
            "student" => Ok(LabImpl::Student),
            "reference" => Ok(LabImpl::Reference),
            _ => s
                .strip_prefix("mutant-")
                .and_then(|n| n.parse::<u8>().ok())
                .filter(|n| *n >= 1)
                .map(LabImpl::Mutant)
                .ok_or_else(|| {
                    format!("`{s}`: expected baseline, student, reference or mutant-N (N from 1)")
                }),
        }
    }
}

/// Knobs every stage has.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct CommonKnobs {
    /// Capacity, in batches, of each bounded queue inside the stage (1..=4096).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 4096)))]
    pub queue_capacity: u32,
    /// The global allocator of the process.
    pub allocator: Allocator,
    /// Histograms, allocation counting and per-batch spans. The accounting counters that
    /// conservation needs stay on either way.
    pub telemetry: bool,
    /// Largest frame accepted on the data port, in bytes (4096..=268435456).
    #[cfg_attr(feature = "schema", schemars(range(min = 4096, max = 268435456)))]
    pub max_frame_bytes: u32,
    /// Tokio worker threads of the process (1..=64).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 64)))]
    pub runtime_threads: u32,
    /// Injected fault for drills: sleep this many microseconds per batch processed
    /// (0..=10000000; 0 = off).
    #[cfg_attr(feature = "schema", schemars(range(max = 10000000)))]
    pub inject_delay_us: u64,
    /// Injected cost for drills and labs: sleep this many nanoseconds more per event of each
    /// batch, a stand-in for work done per event elsewhere (0..=1000000; 0 = off).
    #[cfg_attr(feature = "schema", schemars(range(max = 1000000)))]
    pub inject_delay_ns_per_event: u64,
    /// Course labs: the code slot whose hook runs (`none` in production).
    pub lab_slot: LabSlot,
    /// Course labs: which implementation the slot runs.
    pub lab_impl: LabImpl,
    /// Delivery guarantee; every stage of a plan must have the same.
    pub delivery: Delivery,
    /// Most connections open at once on the data port (16..=4096). Connections not yet
    /// admitted (no hello yet) may take all but one per expected upstream; more are closed at
    /// once, counted as `connection_limit`.
    #[cfg_attr(feature = "schema", schemars(range(min = 16, max = 4096)))]
    pub max_connections: u32,
    /// Parse and aggregate: an event more than this far (event time, ms) ahead of the newest
    /// event accepted so far is dropped as `future_timestamp` and moves no watermark
    /// (1000..=2592000000, 30 days).
    #[cfg_attr(feature = "schema", schemars(range(min = 1000, max = 2592000000u64)))]
    pub max_future_skew_ms: u64,
}

impl Default for CommonKnobs {
    fn default() -> Self {
        CommonKnobs {
            queue_capacity: 8,
            allocator: Allocator::Jemalloc,
            telemetry: true,
            max_frame_bytes: 8 << 20,
            runtime_threads: 2,
            inject_delay_us: 0,
            inject_delay_ns_per_event: 0,
            lab_slot: LabSlot::None,
            lab_impl: LabImpl::Baseline,
            delivery: Delivery::AtMostOnce,
            max_connections: 128,
            max_future_skew_ms: 3_600_000,
        }
    }
}

/// Knobs of the source: the workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct SourceKnobs {
    /// Seed of the deterministic event stream.
    pub seed: u64,
    /// Events to emit, then end the stream (0 = no count limit).
    pub events: u64,
    /// Seconds to run, then end the stream (0 = no time limit).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0)))]
    pub duration_seconds: f64,
    /// Events per second (0 = as fast as downstream accepts).
    pub rate: u64,
    /// Events per batch (frame) (1..=65536).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65536)))]
    pub batch_size: u32,
    /// Distinct services (1..=1000).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub services: u32,
    /// Distinct routes per service (1..=1000).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1000)))]
    pub routes: u32,
    /// Zipf exponent over the (service, route) keys; 0 is uniform, larger is hotter (0..=5).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 5.0)))]
    pub zipf_skew: f64,
    /// Fraction of records that are malformed on purpose (0..=1).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub malformed_rate: f64,
    /// Fraction of valid requests with a 5xx status (0..=1).
    #[cfg_attr(feature = "schema", schemars(range(min = 0.0, max = 1.0)))]
    pub error_rate: f64,
    /// Event-time step between consecutive events, in microseconds (0..=1000000).
    #[cfg_attr(feature = "schema", schemars(range(max = 1000000)))]
    pub event_time_step_us: u64,
    /// Origin of event time.
    pub event_time: EventTime,
    /// Replay this file of JSON lines instead of generating events ("" = generate).
    pub replay: String,
    /// At least once: batches sent and not yet acknowledged, at most (then the source waits:
    /// backpressure). It keeps only where each one started (~64 bytes), not its bytes: a
    /// resend regenerates it (1..=65535).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65535)))]
    pub max_unacked_batches: u32,
    #[serde(flatten)]
    pub common: CommonKnobs,
}

impl Default for SourceKnobs {
    fn default() -> Self {
        SourceKnobs {
            seed: 42,
            events: 0,
            duration_seconds: 0.0,
            rate: 0,
            batch_size: 1024,
            services: 16,
            routes: 16,
            zipf_skew: 1.1,
            malformed_rate: 0.0,
            error_rate: 0.02,
            event_time_step_us: 10,
            event_time: EventTime::Fixed,
            replay: String::new(),
            max_unacked_batches: 4096,
            common: CommonKnobs::default(),
        }
    }
}

/// Knobs of the parse stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct ParseKnobs {
    /// Owned or borrowed (zero-copy) deserialization.
    pub mode: ParseMode,
    /// Batches parsed in parallel; output order is preserved (1..=64).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 64)))]
    pub workers: u32,
    #[serde(flatten)]
    pub common: CommonKnobs,
}

impl Default for ParseKnobs {
    fn default() -> Self {
        ParseKnobs {
            mode: ParseMode::Owned,
            workers: 1,
            common: CommonKnobs::default(),
        }
    }
}

/// Knobs of the aggregate stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct AggregateKnobs {
    /// How workers share the window state.
    pub state: StateStrategy,
    /// Shards of the `sharded` strategy (1..=1024).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1024)))]
    pub shards: u32,
    /// Batches aggregated in parallel (1..=64).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 64)))]
    pub workers: u32,
    /// Tumbling window length in event time, milliseconds (1..=3600000).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 3600000)))]
    pub window_ms: u64,
    /// Window results per outgoing frame (1..=65536).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 65536)))]
    pub batch_size: u32,
    /// Most windows (key x window) open at once (1..=1048576; ~13 KiB each). An event that
    /// would open one more is dropped as `window_limit`, counted.
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 1048576)))]
    pub max_open_windows: u32,
    /// An upstream stream that has sent nothing for this long (ms) stops holding windows back
    /// (the idle-source rule); it rejoins with its next frame (1000..=86400000).
    #[cfg_attr(feature = "schema", schemars(range(min = 1000, max = 86400000)))]
    pub idle_timeout_ms: u64,
    #[serde(flatten)]
    pub common: CommonKnobs,
}

impl Default for AggregateKnobs {
    fn default() -> Self {
        AggregateKnobs {
            state: StateStrategy::Mutex,
            shards: 16,
            workers: 1,
            window_ms: 1000,
            batch_size: 512,
            max_open_windows: 8192,
            idle_timeout_ms: 30_000,
            common: CommonKnobs::default(),
        }
    }
}

/// Knobs of the sink.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(default)]
pub struct SinkKnobs {
    /// Persist to the segment log, or discard.
    pub mode: SinkMode,
    /// When to fsync the log.
    pub fsync: FsyncPolicy,
    /// Interval of the `interval` fsync policy, milliseconds (1..=60000).
    #[cfg_attr(feature = "schema", schemars(range(min = 1, max = 60000)))]
    pub fsync_interval_ms: u64,
    /// Size at which a segment file is rolled, bytes (4096..=17179869184).
    #[cfg_attr(
        feature = "schema",
        schemars(range(min = 4096, max = 17_179_869_184_u64))
    )]
    pub segment_bytes: u64,
    /// Directory of the segment log.
    pub dir: String,
    #[serde(flatten)]
    pub common: CommonKnobs,
}

impl Default for SinkKnobs {
    fn default() -> Self {
        SinkKnobs {
            mode: SinkMode::Log,
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 1000,
            segment_bytes: 64 << 20,
            dir: "data".into(),
            common: CommonKnobs::default(),
        }
    }
}

/// Behaviour shared by every stage's knob struct: loading from a key/value map with unknown-knob
/// detection, `key=value` overrides and range validation, all with errors naming the knob.
pub trait Knobs: Serialize + DeserializeOwned + Default + Clone {
    /// Check every range and cross-knob rule. `stage` prefixes knob names in errors.
    fn validate(&self, stage: &str) -> Result<(), PlanError>;

    /// The knobs shared by every stage.
    fn common(&self) -> &CommonKnobs;

    /// The knob names this stage accepts.
    fn names() -> Vec<String> {
        match serde_json::to_value(Self::default()) {
            Ok(Value::Object(map)) => map.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    /// Build from a map of knob values (missing knobs take their defaults), rejecting unknown
    /// knobs and out-of-range values.
    fn from_map(stage: &str, map: Map<String, Value>) -> Result<Self, PlanError> {
        let known = Self::names();
        if let Some(bad) = map.keys().find(|k| !known.contains(k)) {
            return Err(PlanError::UnknownKnob {
                knob: format!("{stage}.{bad}"),
                known: known.join(", "),
            });
        }
        let knobs: Self = serde_path_to_error::deserialize(Value::Object(map)).map_err(|e| {
            let path = e.path().to_string();
            PlanError::Knob {
                knob: format!("{stage}.{path}"),
                message: e.into_inner().to_string(),
            }
        })?;
        knobs.validate(stage)?;
        Ok(knobs)
    }

    /// Set one knob from its textual value (`--set stage.key=value`, `PIPELINE_KNOB_KEY=value`).
    fn set(&mut self, stage: &str, key: &str, raw: &str) -> Result<(), PlanError> {
        let Ok(Value::Object(mut map)) = serde_json::to_value(&*self) else {
            return Err(PlanError::Knob {
                knob: format!("{stage}.{key}"),
                message: "knobs do not serialize to a map".into(),
            });
        };
        let value = match map.get(key) {
            None => {
                return Err(PlanError::UnknownKnob {
                    knob: format!("{stage}.{key}"),
                    known: Self::names().join(", "),
                });
            }
            // A string knob takes the text as it is; anything else is read as a JSON scalar
            // (numbers, booleans), falling back to a string so enum names need no quotes.
            Some(Value::String(_)) => Value::String(raw.to_string()),
            Some(_) => serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.into())),
        };
        map.insert(key.to_string(), value);
        *self = Self::from_map(stage, map)?;
        Ok(())
    }
}

fn in_range<T: PartialOrd + fmt::Display>(
    stage: &str,
    name: &str,
    value: T,
    lo: T,
    hi: T,
) -> Result<(), PlanError> {
    if value >= lo && value <= hi {
        Ok(())
    } else {
        Err(PlanError::Knob {
            knob: format!("{stage}.{name}"),
            message: format!("must be between {lo} and {hi}, got {value}"),
        })
    }
}

fn fraction(stage: &str, name: &str, value: f64) -> Result<(), PlanError> {
    if value.is_finite() {
        in_range(stage, name, value, 0.0, 1.0)
    } else {
        Err(PlanError::Knob {
            knob: format!("{stage}.{name}"),
            message: format!("must be a finite number between 0 and 1, got {value}"),
        })
    }
}

impl CommonKnobs {
    fn validate(&self, stage: &str) -> Result<(), PlanError> {
        in_range(stage, "queue_capacity", self.queue_capacity, 1, 4096)?;
        in_range(
            stage,
            "max_frame_bytes",
            self.max_frame_bytes,
            4096,
            256 << 20,
        )?;
        in_range(stage, "runtime_threads", self.runtime_threads, 1, 64)?;
        in_range(stage, "max_connections", self.max_connections, 16, 4096)?;
        in_range(
            stage,
            "max_future_skew_ms",
            self.max_future_skew_ms,
            1000,
            2_592_000_000,
        )?;
        in_range(
            stage,
            "inject_delay_ns_per_event",
            self.inject_delay_ns_per_event,
            0,
            1_000_000,
        )?;
        in_range(
            stage,
            "inject_delay_us",
            self.inject_delay_us,
            0,
            10_000_000,
        )
    }

    /// The injected delay of a batch of `records` events (`inject_delay_us` and
    /// `inject_delay_ns_per_event`), if any.
    pub fn injected_delay(&self, records: u32) -> Option<std::time::Duration> {
        let ns = self.inject_delay_us.saturating_mul(1000).saturating_add(
            self.inject_delay_ns_per_event
                .saturating_mul(u64::from(records)),
        );
        (ns > 0).then(|| std::time::Duration::from_nanos(ns))
    }
}

impl SourceKnobs {
    /// Events per batch the source cuts: at a fixed rate, at most 10 ms of events, so latency
    /// does not wait on a full batch.
    pub fn batch_events(&self) -> u64 {
        if self.rate > 0 {
            u64::from(self.batch_size).min((self.rate / 100).max(1))
        } else {
            u64::from(self.batch_size)
        }
    }
}

impl Knobs for SourceKnobs {
    fn validate(&self, stage: &str) -> Result<(), PlanError> {
        in_range(stage, "batch_size", self.batch_size, 1, 65536)?;
        in_range(stage, "services", self.services, 1, 1000)?;
        in_range(stage, "routes", self.routes, 1, 1000)?;
        if !self.zipf_skew.is_finite() {
            return Err(PlanError::Knob {
                knob: format!("{stage}.zipf_skew"),
                message: format!("must be a finite number, got {}", self.zipf_skew),
            });
        }
        in_range(stage, "zipf_skew", self.zipf_skew, 0.0, 5.0)?;
        fraction(stage, "malformed_rate", self.malformed_rate)?;
        fraction(stage, "error_rate", self.error_rate)?;
        in_range(
            stage,
            "event_time_step_us",
            self.event_time_step_us,
            0,
            1_000_000,
        )?;
        in_range(
            stage,
            "max_unacked_batches",
            self.max_unacked_batches,
            1,
            65535,
        )?;
        if self.common.delivery == Delivery::AtLeastOnce {
            // A resend regenerates the same batches: same records, same event times.
            let why = if !self.replay.is_empty() {
                Some(("replay", "a replay file is not supported with it"))
            } else if self.event_time != EventTime::Fixed {
                Some(("event_time", "event times must be `fixed`"))
            } else if self.common.lab_slot == LabSlot::Batcher {
                Some((
                    "lab_slot",
                    "lab slot `batcher` (lab 02's pipe) sends what it is fed once and keeps no \
                     batches to resend: run it at most once",
                ))
            } else if self.event_time_step_us == 0 {
                Some((
                    "event_time_step_us",
                    "event time must advance (> 0): windows close as it does",
                ))
            } else {
                None
            };
            if let Some((knob, message)) = why {
                return Err(PlanError::Knob {
                    knob: format!("{stage}.{knob}"),
                    message: format!(
                        "delivery `at_least_once` regenerates unacknowledged batches from the \
                         seed: {message}"
                    ),
                });
            }
        }
        if self.common.lab_slot == LabSlot::Batcher && !self.replay.is_empty() {
            return Err(PlanError::Knob {
                knob: format!("{stage}.lab_slot"),
                message: "lab slot `batcher` (lab 02's pipe) takes generated records, not a \
                          replay file"
                    .into(),
            });
        }
        if !(self.duration_seconds.is_finite() && self.duration_seconds >= 0.0) {
            return Err(PlanError::Knob {
                knob: format!("{stage}.duration_seconds"),
                message: format!(
                    "must be a number of seconds >= 0, got {}",
                    self.duration_seconds
                ),
            });
        }
        self.common.validate(stage)
    }
    fn common(&self) -> &CommonKnobs {
        &self.common
    }
}

impl Knobs for ParseKnobs {
    fn validate(&self, stage: &str) -> Result<(), PlanError> {
        in_range(stage, "workers", self.workers, 1, 64)?;
        self.common.validate(stage)
    }
    fn common(&self) -> &CommonKnobs {
        &self.common
    }
}

impl Knobs for AggregateKnobs {
    fn validate(&self, stage: &str) -> Result<(), PlanError> {
        in_range(stage, "shards", self.shards, 1, 1024)?;
        in_range(stage, "workers", self.workers, 1, 64)?;
        in_range(stage, "window_ms", self.window_ms, 1, 3_600_000)?;
        in_range(stage, "batch_size", self.batch_size, 1, 65536)?;
        in_range(stage, "max_open_windows", self.max_open_windows, 1, 1 << 20)?;
        in_range(
            stage,
            "idle_timeout_ms",
            self.idle_timeout_ms,
            1000,
            86_400_000,
        )?;
        self.common.validate(stage)
    }
    fn common(&self) -> &CommonKnobs {
        &self.common
    }
}

impl Knobs for SinkKnobs {
    fn validate(&self, stage: &str) -> Result<(), PlanError> {
        in_range(
            stage,
            "fsync_interval_ms",
            self.fsync_interval_ms,
            1,
            60_000,
        )?;
        in_range(stage, "segment_bytes", self.segment_bytes, 4096, 16 << 30)?;
        if self.mode == SinkMode::Log && self.dir.trim().is_empty() {
            return Err(PlanError::Knob {
                knob: format!("{stage}.dir"),
                message: "must name a directory when mode is `log`".into(),
            });
        }
        self.common.validate(stage)
    }
    fn common(&self) -> &CommonKnobs {
        &self.common
    }
}
