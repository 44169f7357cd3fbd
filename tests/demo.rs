//! `xtcp demo --sim` tells one connection's life as the seed note does, and its pcap is one tcpdump reads.

use std::time::Duration;

use xtcp::app::demo::{run, DemoOptions};

fn demo(pcap: &std::path::Path, loss_per_mille: u32) -> String {
    let opts = DemoOptions {
        pcap: Some(pcap.to_path_buf()),
        loss_per_mille,
        seed: 3,
        latency: Duration::from_millis(1),
        msl: Duration::from_secs(30),
        message: "hi".into(),
    };
    let mut out = Vec::new();
    run(&opts, &mut out).expect("the demo finishes");
    String::from_utf8(out).unwrap()
}

fn flags(narration: &str) -> Vec<String> {
    narration
        .lines()
        .filter_map(|l| l.split("Flags [").nth(1))
        .map(|rest| rest.split(']').next().unwrap().to_string())
        .collect()
}

#[test]
fn demo_narrates_handshake_data_and_teardown_in_order() {
    let dir = std::env::temp_dir().join(format!("xtcp-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("a.pcap");
    let text = demo(&pcap, 0);
    // The seed note's segments: S, S., . then data both ways, then F., ., F., .
    assert_eq!(flags(&text), ["S", "S.", ".", "P.", "P.", "F.", ".", "F.", "."], "{text}");
    let states: Vec<&str> = text.lines().filter(|l| l.contains(" -> ")).map(|l| l.split_once(' ').unwrap().1).collect();
    for (side, path) in [
        ("client", ["CLOSED -> SYN_SENT", "SYN_SENT -> ESTABLISHED", "ESTABLISHED -> FIN_WAIT_1"].as_slice()),
        ("client", &["FIN_WAIT_1 -> FIN_WAIT_2", "FIN_WAIT_2 -> TIME_WAIT", "TIME_WAIT -> CLOSED"]),
        ("server", &["LISTEN -> SYN_RECEIVED", "SYN_RECEIVED -> ESTABLISHED", "ESTABLISHED -> CLOSE_WAIT"]),
        ("server", &["CLOSE_WAIT -> LAST_ACK", "LAST_ACK -> CLOSED"]),
    ] {
        let mine: Vec<&str> =
            states.iter().filter_map(|l| l.strip_prefix(side).and_then(|r| r.strip_prefix(": "))).collect();
        let at = mine.iter().position(|s| s.starts_with(path[0])).unwrap_or_else(|| panic!("{side} {path:?}\n{text}"));
        for (i, step) in path.iter().enumerate() {
            assert!(mine.get(at + i).is_some_and(|s| s.starts_with(step)), "{side}: expected {step}\n{text}");
        }
    }
    // TIME_WAIT lasts 2·MSL: the client's last state change is a minute after the rest.
    let last = text.lines().rev().find(|l| l.contains("TIME_WAIT -> CLOSED")).unwrap();
    let t: f64 = last.split_whitespace().next().unwrap().parse().unwrap();
    assert!((60.0..60.1).contains(&t), "{last}");
    // The pcap holds the client's frames: all nine segments cross the client.
    let mut reader = pcap_file::pcap::PcapReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
    let mut frames = 0;
    while let Some(p) = reader.next_packet() {
        p.unwrap();
        frames += 1;
    }
    assert_eq!(frames, 9);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_with_loss_still_finishes_and_retransmits() {
    let dir = std::env::temp_dir().join(format!("xtcp-demo-loss-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = demo(&dir.join("b.pcap"), 300);
    let f = flags(&text);
    assert!(f.len() > 9, "with 30% loss some segment went twice: {f:?}");
    assert!(text.contains("TIME_WAIT -> CLOSED"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs tcpdump: run scripts/test.sh"]
fn tcpdump_reads_the_demo_pcap() {
    let dir = std::env::temp_dir().join(format!("xtcp-demo-tcpdump-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("c.pcap");
    demo(&pcap, 0);
    let out = std::process::Command::new("tcpdump").arg("-nr").arg(&pcap).output().expect("tcpdump runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let seen: Vec<&str> =
        text.lines().filter_map(|l| l.split("Flags [").nth(1)).map(|r| r.split(']').next().unwrap()).collect();
    assert_eq!(seen, ["S", "S.", ".", "P.", "P.", "F.", ".", "F.", "."], "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
