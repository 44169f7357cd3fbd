//! A pcap tap: records the frames a device receives and transmits, as tcpdump and Wireshark read them.
//!
//! [`PcapTap`] implements [`FrameDevice`] around an inner device and writes every frame received from it and every
//! frame transmitted to it (by a receive handler or by the caller), stamped with the `now` of the call, to a
//! classic pcap stream: LINKTYPE_ETHERNET, microsecond timestamps, little-endian. Classic pcap has no direction
//! field; frames appear in the order the tap saw them.
//!
//! Where the tap sits decides what it sees: outside a [`super::fault::FaultInjector`] it records what the stack
//! received and sent; inside, what crossed the wire.
//!
//! Recording is bounded: once the next record would take the output past [`PcapConfig::bytes_max`], writing stops
//! for good (the file ends at a record boundary) and further frames are counted, not written. A write error is
//! counted and stops writing too; it never panics and never disturbs the traffic.
//!
//! The file header is pcap-file's [`PcapHeader`]; each record header (16 bytes) is written here. pcap-file 2.0's
//! `PcapWriter` gives no access to its writer until it is consumed, so it could neither be flushed mid-run nor
//! handed back after an error; the records are the same bytes it would write.

use std::io::{self, Write};

use pcap_file::pcap::PcapHeader;
use pcap_file::{DataLink, Endianness, TsResolution};

use super::{DeviceStats, FrameDevice, Transmit};
use crate::time::Instant;

/// Bytes of the pcap file header.
pub const FILE_HEADER_LEN: usize = 24;
/// Bytes of a pcap record header.
pub const RECORD_HEADER_LEN: usize = 16;

/// Which frames a [`PcapTap`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PcapMode {
    /// Received and transmitted frames.
    #[default]
    Both,
    /// Received frames only.
    RxOnly,
    /// Transmitted frames only.
    TxOnly,
}

/// The limits of a [`PcapTap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcapConfig {
    /// The most bytes written, file header included (the 24-byte file header is always written).
    pub bytes_max: u64,
    /// The most bytes kept of each frame; longer frames are recorded truncated with their full length noted, as
    /// `tcpdump -s` does. Also written as the file's snapshot length.
    pub snap_len: u32,
    /// Which frames to record.
    pub mode: PcapMode,
}

impl PcapConfig {
    /// 64 MiB, whole frames (65535 bytes), both directions.
    pub const DEFAULT: PcapConfig = PcapConfig { bytes_max: 64 << 20, snap_len: 65535, mode: PcapMode::Both };
}

impl Default for PcapConfig {
    fn default() -> PcapConfig {
        PcapConfig::DEFAULT
    }
}

/// Counters of a [`PcapTap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PcapStats {
    /// Frames written.
    pub frames_written: u64,
    /// Bytes written, file header included.
    pub bytes_written: u64,
    /// Frames not written because the byte limit was reached.
    pub frames_over_limit: u64,
    /// Frames not written because an earlier write failed.
    pub frames_after_error: u64,
    /// Write errors (at most one: the first stops writing).
    pub write_errors: u64,
}

/// The writing half, apart from the inner device so a handler's transmit half can borrow it.
#[derive(Debug)]
struct Recorder<W> {
    writer: W,
    config: PcapConfig,
    stats: PcapStats,
    full: bool,
    error: Option<io::Error>,
}

impl<W: Write> Recorder<W> {
    fn new(mut writer: W, config: PcapConfig) -> Recorder<W> {
        let header = PcapHeader {
            snaplen: config.snap_len,
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::MicroSecond,
            endianness: Endianness::Little,
            ..PcapHeader::default()
        };
        let mut stats = PcapStats::default();
        let error = match header.write_to(&mut writer) {
            Ok(_) => {
                stats.bytes_written = FILE_HEADER_LEN as u64;
                None
            }
            Err(pcap_file::PcapError::IoError(e)) => Some(e),
            Err(e) => Some(io::Error::other(e)),
        };
        stats.write_errors = u64::from(error.is_some());
        Recorder { writer, config, stats, full: false, error }
    }

    fn record(&mut self, now: Instant, frame: &[u8]) {
        if self.error.is_some() {
            self.stats.frames_after_error += 1;
            return;
        }
        let kept = frame.len().min(self.config.snap_len as usize);
        let record_len = (RECORD_HEADER_LEN + kept) as u64;
        if self.full || self.stats.bytes_written + record_len > self.config.bytes_max {
            self.full = true;
            self.stats.frames_over_limit += 1;
            return;
        }
        let micros = now.total_micros();
        let ts_sec = u32::try_from(micros / 1_000_000).unwrap_or(u32::MAX);
        let ts_usec = (micros % 1_000_000) as u32;
        let orig_len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let mut header = [0u8; RECORD_HEADER_LEN];
        header[0..4].copy_from_slice(&ts_sec.to_le_bytes());
        header[4..8].copy_from_slice(&ts_usec.to_le_bytes());
        header[8..12].copy_from_slice(&(kept as u32).to_le_bytes());
        header[12..16].copy_from_slice(&orig_len.to_le_bytes());
        match self.writer.write_all(&header).and_then(|()| self.writer.write_all(&frame[..kept])) {
            Ok(()) => {
                self.stats.frames_written += 1;
                self.stats.bytes_written += record_len;
            }
            Err(e) => {
                self.stats.write_errors += 1;
                self.error = Some(e);
            }
        }
    }

    fn records_rx(&self) -> bool {
        self.config.mode != PcapMode::TxOnly
    }

    fn records_tx(&self) -> bool {
        self.config.mode != PcapMode::RxOnly
    }

    /// Transmits through `inner`, recording the frame as the inner device fills it: a refused frame is never filled,
    /// so it is not recorded.
    fn transmit(
        &mut self,
        inner: &mut dyn Transmit,
        now: Instant,
        len: usize,
        fill: &mut dyn FnMut(&mut [u8]),
    ) -> bool {
        if !self.records_tx() {
            return inner.transmit(now, len, fill);
        }
        inner.transmit(now, len, &mut |buf| {
            fill(buf);
            self.record(now, buf);
        })
    }
}

/// The transmit half a receive handler gets: the inner device's, recorded.
struct TapTx<'a, W> {
    inner: &'a mut dyn Transmit,
    recorder: &'a mut Recorder<W>,
}

impl<W: Write> Transmit for TapTx<'_, W> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.recorder.transmit(self.inner, now, len, fill)
    }
}

/// A [`FrameDevice`] wrapper that records the inner device's traffic to a pcap stream.
#[derive(Debug)]
pub struct PcapTap<D, W: Write> {
    inner: D,
    recorder: Recorder<W>,
}

impl<D: FrameDevice, W: Write> PcapTap<D, W> {
    /// Wraps `inner` and writes the pcap file header to `writer`. A failure is counted, like any write error.
    pub fn new(inner: D, writer: W, config: PcapConfig) -> PcapTap<D, W> {
        PcapTap { inner, recorder: Recorder::new(writer, config) }
    }

    /// The counters.
    pub fn stats(&self) -> PcapStats {
        self.recorder.stats
    }

    /// The write error that stopped recording, if one did.
    pub fn error(&self) -> Option<&io::Error> {
        self.recorder.error.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &PcapConfig {
        &self.recorder.config
    }

    /// The wrapped device.
    pub fn inner(&self) -> &D {
        &self.inner
    }

    /// The wrapped device, mutably.
    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    /// The output.
    pub fn writer(&self) -> &W {
        &self.recorder.writer
    }

    /// The output, mutably: to flush it mid-run. Writing to it directly would corrupt the capture.
    pub fn writer_mut(&mut self) -> &mut W {
        &mut self.recorder.writer
    }

    /// Unwraps the device and the output. Flush the output if it buffers.
    pub fn into_inner(self) -> (D, W) {
        (self.inner, self.recorder.writer)
    }
}

impl<D: FrameDevice, W: Write> Transmit for PcapTap<D, W> {
    fn transmit(&mut self, now: Instant, len: usize, fill: &mut dyn FnMut(&mut [u8])) -> bool {
        self.recorder.transmit(&mut self.inner, now, len, fill)
    }
}

impl<D: FrameDevice, W: Write> FrameDevice for PcapTap<D, W> {
    fn receive(&mut self, now: Instant, budget: usize, handler: &mut dyn FnMut(&[u8], &mut dyn Transmit)) -> usize {
        let recorder = &mut self.recorder;
        self.inner.receive(now, budget, &mut |frame, tx| {
            if recorder.records_rx() {
                recorder.record(now, frame);
            }
            handler(frame, &mut TapTx { inner: tx, recorder })
        })
    }

    fn flush(&mut self, now: Instant) {
        self.inner.flush(now);
    }

    fn max_frame_len(&self) -> usize {
        self.inner.max_frame_len()
    }

    fn poll_at(&self) -> Option<Instant> {
        self.inner.poll_at()
    }

    fn wait(&mut self, timeout: core::time::Duration) {
        self.inner.wait(timeout)
    }
    fn device_stats(&self, out: &mut DeviceStats) {
        self.inner.device_stats(out);
    }
}

#[cfg(test)]
mod tests {
    use core::time::Duration;

    use pcap_file::pcap::PcapReader;

    use super::*;
    use crate::nic::sim::testing::{check, drain, frame, send};
    use crate::nic::sim::{LinkConfig, SimLink, SimPort};

    fn link() -> (SimPort, SimPort) {
        SimLink::pair(LinkConfig { latency: Duration::from_micros(50), ..LinkConfig::DEFAULT })
    }

    /// Reads a capture back with pcap-file: (timestamp in µs, original length, bytes kept).
    fn read_back(bytes: &[u8]) -> Vec<(u64, u32, Vec<u8>)> {
        let mut reader = PcapReader::new(bytes).unwrap();
        let header = reader.header();
        assert_eq!(header.datalink, DataLink::ETHERNET);
        assert_eq!(header.ts_resolution, TsResolution::MicroSecond);
        let mut out = Vec::new();
        // Raw records: pcap-file 2.0 rejects an original length above the snapshot length in its checked reader.
        while let Some(raw) = reader.next_raw_packet() {
            let raw = raw.unwrap();
            let micros = u64::from(raw.ts_sec) * 1_000_000 + u64::from(raw.ts_frac);
            assert_eq!(raw.incl_len as usize, raw.data.len());
            out.push((micros, raw.orig_len, raw.data.into_owned()));
        }
        out
    }

    #[test]
    fn capture_reads_back_with_the_same_frames_and_timestamps() {
        let (a, mut b) = link();
        let mut tap = PcapTap::new(a, Vec::new(), PcapConfig::default());
        let t1 = Instant::from_micros(3_000_017);
        assert!(send(&mut tap, t1, 1, 60));
        // B echoes frame 1 back as frame 2; A's handler answers with frame 3.
        let t2 = Instant::from_micros(3_000_067);
        b.receive(t2, 8, &mut |_, tx| assert!(send(tx, t2, 2, 100)));
        let t3 = Instant::from_micros(3_000_117);
        let n = tap.receive(t3, 8, &mut |f, tx| {
            assert_eq!(check(f), Some(2));
            assert!(send(tx, t3, 3, 1514));
        });
        assert_eq!(n, 1);
        // A refused frame was never sent, so it is not recorded.
        assert!(!tap.transmit(t3, 1515, &mut |_| unreachable!()));
        assert_eq!(drain(&mut b, Instant::from_secs(4)).iter().map(|f| check(f)).collect::<Vec<_>>(), [Some(3)]);

        let stats = tap.stats();
        assert_eq!(stats.frames_written, 3);
        assert_eq!(stats.bytes_written, (24 + 3 * 16 + 60 + 100 + 1514) as u64);
        let (_, bytes) = tap.into_inner();
        assert_eq!(bytes.len() as u64, stats.bytes_written);
        let expected =
            vec![(3_000_017, 60, frame(1, 60)), (3_000_117, 100, frame(2, 100)), (3_000_117, 1514, frame(3, 1514))];
        assert_eq!(read_back(&bytes), expected);
        // pcap-file's checked reader agrees.
        let mut reader = PcapReader::new(&bytes[..]).unwrap();
        let first = reader.next_packet().unwrap().unwrap();
        assert_eq!(first.timestamp, Duration::from_micros(3_000_017));
        assert_eq!(&first.data[..], &frame(1, 60)[..]);
    }

    #[test]
    fn byte_limit_stops_writing_at_a_record_boundary() {
        let (a, mut b) = link();
        // The header and two 60-byte frames fit; the third does not, and nothing after it is written.
        let config = PcapConfig { bytes_max: 24 + 2 * 76 + 75, ..PcapConfig::DEFAULT };
        let mut tap = PcapTap::new(a, Vec::new(), config);
        for seq in 0..3 {
            assert!(send(&mut tap, Instant::ZERO, seq, 60));
        }
        assert!(send(&mut tap, Instant::ZERO, 3, 12));
        assert_eq!(drain(&mut b, Instant::from_secs(1)).len(), 4, "traffic is not disturbed");
        let stats = tap.stats();
        assert_eq!((stats.frames_written, stats.frames_over_limit), (2, 2));
        let (_, bytes) = tap.into_inner();
        assert_eq!(bytes.len(), 24 + 2 * 76);
        let seqs: Vec<_> = read_back(&bytes).iter().map(|(_, _, f)| check(f).unwrap()).collect();
        assert_eq!(seqs, [0, 1]);
    }

    #[test]
    fn snap_len_truncates_and_keeps_the_original_length() {
        let (a, _b) = link();
        let config = PcapConfig { snap_len: 34, ..PcapConfig::DEFAULT };
        let mut tap = PcapTap::new(a, Vec::new(), config);
        send(&mut tap, Instant::from_micros(5), 9, 100);
        send(&mut tap, Instant::from_micros(6), 10, 20);
        let (_, bytes) = tap.into_inner();
        assert_eq!(PcapReader::new(&bytes[..]).unwrap().header().snaplen, 34);
        let records = read_back(&bytes);
        assert_eq!(records[0], (5, 100, frame(9, 100)[..34].to_vec()));
        assert_eq!(records[1], (6, 20, frame(10, 20)));
    }

    #[test]
    fn mode_selects_the_direction_recorded() {
        for (mode, expected) in [(PcapMode::RxOnly, [2]), (PcapMode::TxOnly, [1])] {
            let (a, mut b) = link();
            let mut tap = PcapTap::new(a, Vec::new(), PcapConfig { mode, ..PcapConfig::DEFAULT });
            send(&mut tap, Instant::ZERO, 1, 60);
            send(&mut b, Instant::ZERO, 2, 60);
            assert_eq!(drain(&mut tap, Instant::from_secs(1)).len(), 1);
            let (_, bytes) = tap.into_inner();
            let seqs: Vec<_> = read_back(&bytes).iter().map(|(_, _, f)| check(f).unwrap()).collect();
            assert_eq!(seqs, expected);
        }
    }

    /// Accepts `room` bytes, then fails.
    struct Failing {
        room: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::Error::new(io::ErrorKind::StorageFull, "disk full"));
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_errors_are_counted_and_stop_writing() {
        let (a, mut b) = link();
        let mut tap = PcapTap::new(a, Failing { room: 24 + 16 + 60 + 10 }, PcapConfig::default());
        for seq in 0..4 {
            assert!(send(&mut tap, Instant::ZERO, seq, 60));
        }
        assert_eq!(drain(&mut b, Instant::from_secs(1)).len(), 4, "traffic is not disturbed");
        let stats = tap.stats();
        assert_eq!((stats.frames_written, stats.write_errors, stats.frames_after_error), (1, 1, 2));
        assert_eq!(tap.error().unwrap().kind(), io::ErrorKind::StorageFull);

        // A failing file header is counted the same way.
        let (a, _b) = link();
        let mut tap = PcapTap::new(a, Failing { room: 3 }, PcapConfig::default());
        assert!(send(&mut tap, Instant::ZERO, 0, 60));
        let stats = tap.stats();
        assert_eq!((stats.bytes_written, stats.write_errors, stats.frames_after_error), (0, 1, 1));
    }
}
