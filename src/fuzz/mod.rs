//! The fuzz harnesses, shared by the cargo-fuzz targets in `fuzz/` and by `tests/fuzz_regressions.rs`, so that a
//! crash the fuzzer finds replays under plain `cargo test` through the very same code.
//!
//! - [`wire()`]: arbitrary bytes through every parser of [`crate::wire`], and whatever parses emitted back and
//!   parsed again.
//! - [`stack()`]: a whole [`crate::engine::Stack`] under a simulated clock, driven by operations decoded from the
//!   bytes (frames raw or with valid headers patched in, time, application calls), with invariants checked after
//!   every step.
//! - [`seeds`]: the seed corpus of both, recorded from real exchanges between two stacks.
//! - [`linux`]: more seeds of both, from frames of the real Linux TCP stack captured in network namespaces.
//!
//! Not part of the API: hidden from the docs, and free to change with the harnesses.

pub mod linux;
pub mod seeds;
pub mod stack;
pub mod wire;

pub use stack::stack;
pub use wire::wire;

/// Reads fields from the fuzz input front to back; once the bytes run out every read is zero, so any input decodes.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    /// True once every byte was read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Up to `n` bytes: fewer when the input ends first.
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.bytes.split_at(n.min(self.bytes.len()));
        self.bytes = tail;
        head
    }

    /// One byte, zero past the end.
    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// A big-endian u16, zero-padded past the end.
    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let got = self.take(2);
        b[..got.len()].copy_from_slice(got);
        u16::from_be_bytes(b)
    }

    /// A big-endian u32, zero-padded past the end.
    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let got = self.take(4);
        b[..got.len()].copy_from_slice(got);
        u32::from_be_bytes(b)
    }
}
