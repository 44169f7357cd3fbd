//! The fuzz targets' regressions and seed corpus under plain `cargo test`, through the same harnesses the targets
//! run (`xtcp::fuzz`): the committed seeds of `fuzz/corpus/`, the seeds recorded afresh from real exchanges, and
//! every input the fuzzer found a crash with, kept under `tests/fuzz_inputs/`.

use std::fs;
use std::path::{Path, PathBuf};

use xtcp::fuzz::seeds::{stack_seeds, wire_seeds};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<(PathBuf, Vec<u8>)> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            let bytes = fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn committed_wire_seeds_round_trip() {
    let files = corpus("wire");
    assert!(files.len() >= 8, "wire seeds: {}", files.len());
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        xtcp::fuzz::wire(&bytes);
    }
}

#[test]
fn committed_stack_seeds_keep_the_invariants() {
    let files = corpus("stack");
    assert!(files.len() >= 5, "stack seeds: {}", files.len());
    for (path, bytes) in files {
        eprintln!("{}", path.display());
        xtcp::fuzz::stack(&bytes);
    }
}

/// Records the seeds afresh (the recorder asserts each exchange did what it should: data delivered, closes
/// heard), replays them, and with `XTCP_WRITE_FUZZ_SEEDS=1` writes them over `fuzz/corpus/`.
#[test]
fn recorded_seeds_replay() {
    let write = std::env::var_os("XTCP_WRITE_FUZZ_SEEDS").is_some();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    let stack = stack_seeds();
    for (name, input) in &stack {
        xtcp::fuzz::stack(input);
        if write {
            fs::write(root.join("stack").join(format!("seed-{name}")), input).expect("write seed");
        }
    }
    let wire = wire_seeds();
    assert!(wire.len() >= 8, "frame kinds seen: {:?}", wire.iter().map(|(n, _)| n).collect::<Vec<_>>());
    for (name, frame) in &wire {
        xtcp::fuzz::wire(frame);
        if write {
            fs::write(root.join("wire").join(format!("seed-{name}")), frame).expect("write seed");
        }
    }
}

/// A SYN-ACK retransmission that the device refused (its ring full: two ARP requests took it) left the half-open
/// connection with no retransmission timer: it held its table slot and backlog place for good. Fixed in
/// `Connection::on_retransmit_timeout`, which now restarts the timer itself (RFC 6298 (5.6)).
#[test]
fn refused_syn_ack_resend_keeps_the_timer() {
    xtcp::fuzz::stack(include_bytes!("fuzz_inputs/stack-syn-ack-refused-no-timer"));
}
