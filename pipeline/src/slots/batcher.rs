//! Lab 02 (`course/labs/02-backpressure-and-batching`): the pipe between the source's
//! generator and the network. The generator hands over one record at a time; the network takes
//! frames, and every frame costs a header, a syscall and a wake-up at every stage after it,
//! whatever it carries. [`start`] builds the pipe: a channel from the generator's thread to a
//! batching thread, which puts records into frames of up to [`MAX_BATCH`] and hands them to
//! [`Frames::send`]. Edit [`student`].

use pipeline_plan::LabImpl;
use std::sync::mpsc;
use std::time::Duration;

#[cfg(feature = "lab-reference")]
#[path = "../../../course/labs/02-backpressure-and-batching/reference.rs"]
mod reference;

/// The most records one frame may carry.
pub const MAX_BATCH: usize = 256;

/// The most records the pipe may hold while the network takes none (the specification's
/// memory bound: a slow sink must slow the generator down, not grow the source).
pub const MAX_HELD: usize = 10_000;

/// How soon a record must be on its way when no other record follows it (a partial frame may
/// not wait for records that may never come).
pub const MAX_WAIT: Duration = Duration::from_millis(100);

/// Where the frames go (do not edit): the source's egress, or the conformance check's
/// recorder. Dropping it says the pipe has handed over everything.
pub struct Frames {
    send: Box<dyn FnMut(Vec<Vec<u8>>) -> bool + Send>,
    done: mpsc::Sender<bool>,
}

/// The other end of [`Frames`]: tells when the pipe has let go of it.
pub struct Finished(mpsc::Receiver<bool>);

/// How a pipe ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// It let go of its [`Frames`]; `panicked` if that was a panic unwinding.
    Done { panicked: bool },
    /// It still held its [`Frames`] when the wait ran out.
    StillRunning,
}

impl Frames {
    /// Frames handed to `send` (`false`: the network is gone).
    pub fn new(send: impl FnMut(Vec<Vec<u8>>) -> bool + Send + 'static) -> (Frames, Finished) {
        let (done, finished) = mpsc::channel();
        let frames = Frames {
            send: Box::new(send),
            done,
        };
        (frames, Finished(finished))
    }

    /// Send one frame of these records (1 to [`MAX_BATCH`] of them), blocking while the network
    /// is busy (backpressure). `false` once the network is gone: stop then.
    pub fn send(&mut self, records: Vec<Vec<u8>>) -> bool {
        (self.send)(records)
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        let _ = self.done.send(std::thread::panicking());
    }
}

impl Finished {
    /// Wait up to `limit` for the pipe to let go of its [`Frames`].
    pub fn wait(&self, limit: Duration) -> Ended {
        match self.0.recv_timeout(limit) {
            Ok(panicked) => Ended::Done { panicked },
            // Dropped without a word cannot happen (Drop always sends); treat it as done.
            Err(mpsc::RecvTimeoutError::Disconnected) => Ended::Done { panicked: false },
            Err(mpsc::RecvTimeoutError::Timeout) => Ended::StillRunning,
        }
    }
}

/// The generator's end of the pipe (built by the lab's code).
pub struct Feed(Box<dyn FnMut(Vec<u8>) -> bool + Send>);

impl Feed {
    /// A feed that hands each record to `push` (`false`: the pipe is closed).
    pub fn new(push: impl FnMut(Vec<u8>) -> bool + Send + 'static) -> Feed {
        Feed(Box::new(push))
    }

    /// Put one record in the pipe, blocking while it is full; `false` once it is closed.
    pub fn push(&mut self, record: Vec<u8>) -> bool {
        (self.0)(record)
    }
}

/// Called once by the source (do not edit): the pipe to `out`. The source pushes every record
/// into the returned [`Feed`] and drops it at the end of the stream; the pipe then sends what
/// it holds and drops `out`.
pub fn start(imp: LabImpl, out: Frames) -> Feed {
    match imp {
        LabImpl::Baseline => baseline(out),
        LabImpl::Student => student(out),
        LabImpl::Mutant(n) => mutants!(n, |m| m(out)),
        #[cfg(feature = "lab-reference")]
        LabImpl::Reference => reference::start(out),
        // Refused at start-up without the reference solutions (`Hooks::resolve`).
        #[cfg(not(feature = "lab-reference"))]
        LabImpl::Reference => baseline(out),
    }
}

// ===== BASELINE (do not edit) =====
#[inline(never)]
fn baseline(mut out: Frames) -> Feed {
    super::baseline_mark();
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for record in rx {
            if !out.send(vec![record]) {
                return;
            }
        }
    });
    Feed::new(move |record| tx.send(record).is_ok())
}

// The lab's mutants (the authoring check's wrong but fast STUDENT bodies), generated;
// the dispatch above finds `mutants!` through the `use` in that file.
include!("mutants/batcher.rs");

// ===== STUDENT (lab 02: frames of up to MAX_BATCH records, and a pipe that pushes back) =====
#[inline(never)]
fn student(mut out: Frames) -> Feed {
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        for record in rx {
            if !out.send(vec![record]) {
                return;
            }
        }
    });
    Feed::new(move |record| tx.send(record).is_ok())
}
