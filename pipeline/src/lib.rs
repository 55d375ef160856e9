//! The observatory's streaming pipeline: `source -> parse -> aggregate -> sink`, one role per
//! process, connected over TCP with length-delimited, batched frames and bounded queues.
//!
//! Layout: the data model ([`event`], [`generate`], [`parse`], [`window`], [`seglog`]) is pure
//! and unit-tested; [`codec`] is the wire format.

pub mod alloc;
pub mod codec;
pub mod event;
pub mod generate;
pub mod parse;
pub mod seglog;
pub mod window;
