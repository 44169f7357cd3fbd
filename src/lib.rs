//! xtcp: a kernel-bypass TCP/IP stack.
//!
//! The layers, from the wire up:
//! - [`wire`]: zero-copy views over frames (Ethernet, ARP, IPv4, TCP) and their parsed representations.
//! - [`tcp`]: the connection state machine of RFC 9293, sans-IO: segments and time in, segments and events out.
//! - [`timer`]: the hierarchical timing wheel that drives every connection timer of one core.
//! - [`nic`]: frame I/O behind one trait, [`nic::FrameDevice`], with a simulated link, fault and pcap wrappers.
//! - [`engine`]: one core's protocol host: connection table, listeners, timers, counters.
//!
//! Time is always a parameter ([`time::Instant`]) and randomness is always handed in, so every protocol decision
//! replays from a seed.
#![deny(unsafe_code)]
#![deny(missing_docs, missing_debug_implementations)]

pub mod app;
pub mod engine;
#[doc(hidden)]
pub mod fuzz;
pub mod nic;
pub mod tcp;
pub mod time;
pub mod timer;
pub mod wire;
