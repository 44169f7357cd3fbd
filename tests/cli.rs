//! The `xtcp` command: its errors, and `xtcp echo` serving a kernel client over AF_XDP until SIGINT or SIGTERM.
#![cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(unused_imports))]

#[cfg(all(feature = "afxdp", target_os = "linux"))]
mod common_afxdp;

use std::collections::HashMap;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

#[cfg(all(feature = "afxdp", target_os = "linux"))]
use common_afxdp::ChildGuard;

const XTCP: &str = env!("CARGO_BIN_EXE_xtcp");

fn xtcp(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(XTCP).args(args).output().expect("xtcp runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_arguments_get_an_error_that_says_what_to_do() {
    let (code, _, err) = xtcp(&["demo"]);
    assert_eq!(code, 2);
    assert!(err.starts_with("error:") && err.contains("--sim"), "{err}");
    let (code, _, err) = xtcp(&["demo", "--sim", "--loss", "2000"]);
    assert_eq!(code, 2);
    assert!(err.lines().next().unwrap().contains("2000"), "{err}");
}

/// `args` are refused as a bad argument: exit code 2, one line on stderr naming `flag` and its allowed range, no
/// panic.
fn refused(args: &[&str], flag: &str, range: &str) {
    let (code, out, err) = xtcp(args);
    assert_eq!(code, 2, "{args:?}: {err}");
    assert!(out.is_empty(), "{args:?}: {out}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(err.contains(flag) && err.contains(range), "{args:?}: {err}");
}

#[test]
fn demo_times_out_of_range_are_refused_in_one_line() {
    let max = u64::MAX.to_string();
    refused(&["demo", "--sim", "--msl-secs", &max], "--msl-secs", "1..=900");
    refused(&["demo", "--sim", "--msl-secs", "0"], "--msl-secs", "1..=900");
    refused(&["demo", "--sim", "--latency-ms", &max], "--latency-ms", "0..=10000");
}

#[test]
fn numbers_out_of_range_are_refused_in_one_line_naming_the_range() {
    let max = u64::MAX.to_string();
    refused(&["http", "--body-bytes", &max], "--body-bytes", "0..=1073741824");
    refused(&["http", "--body-bytes", &(1 + (1u64 << 30)).to_string()], "--body-bytes", "0..=1073741824");
    refused(&["http", "--max-header-bytes", &max], "--max-header-bytes", "256..=1048576");
    refused(&["http", "--max-header-bytes", "0"], "--max-header-bytes", "256..=1048576");
    refused(&["http", "--max-requests-per-connection", "0"], "--max-requests-per-connection", "1..=4294967295");
    refused(&["http", "--port", "0"], "--port", "1..=65535");
    refused(&["http", "--idle-timeout", "25h"], "--idle-timeout", "longer than 86400s");
    refused(&["echo", "--port", "0"], "--port", "1..=65535");
    refused(&["echo", "--queue", &max], "--queue", "0..=4095");
    refused(&["echo", "--queue", "99999999999999999999999"], "--queue", "0..=4095");
    refused(&["echo", "--queue", "4096"], "--queue", "0..=4095");
    refused(&["echo", "--cores", "0"], "--cores", "1..=1024");
    refused(&["echo", "--busy-poll-us", &max], "--busy-poll-us", "0..=1000000000");
    let load = |flag: &str, value: &str, range: &str| {
        refused(&["load", "--target", "10.0.0.2:80", flag, value], flag, range);
    };
    load("--connections", "0", "1..=4194304");
    load("--connections", &max, "1..=4194304");
    load("--hold", "4194305", "0..=4194304");
    load("--pipeline", "0", "1..=1024");
    load("--pipeline", "1025", "1..=1024");
    load("--requests", "0", "1..=9223372036854775807");
    load("--requests", &max, "1..=9223372036854775807");
    load("--rate", "0", "1..=100000000");
    load("--rate", &max, "1..=100000000");
    load("--message-bytes", "0", "1..=1099511627776");
    load("--message-bytes", "2TiB", "1..=1099511627776");
    load("--duration", "0.5ms", "shorter than 1ms");
    load("--duration", "0", "shorter than 1ms");
    load("--timeout", "0.5ms", "shorter than 1ms");
    load("--timeout", "61s", "longer than 60s");
    // Inside the ranges, the values pass the parser: the run fails later, on the missing interface.
    let (code, _, err) = xtcp(&["http", "--body-bytes", "0", "--max-header-bytes", "1048576", "--port", "65535"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--iface"), "{err}");
}

#[test]
fn a_load_the_generator_refuses_is_one_line_naming_the_flag_and_its_bound() {
    let (code, _, err) = xtcp(&["load", "--target", "10.0.0.2:7", "--mode", "echo", "--message-bytes", "32MiB"]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(err, "xtcp load: error: --message-bytes must be at most 16777216 bytes, got 33554432 bytes\n");
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
fn serving_on_a_missing_interface_is_one_line_naming_it() {
    let (code, out, err) = xtcp(&["echo", "--iface", "nosuch0"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("xtcp echo: error: no interface named \"nosuch0\""), "{err}");
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn serving_on_an_address_the_interface_lacks_is_one_line_listing_its_own() {
    let (code, _, err) = xtcp(&["echo", "--iface", "lo", "--ip", "10.9.9.9"]);
    assert_eq!(code, 1);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("10.9.9.9 is not an address of lo") && err.contains("127.0.0.1"), "{err}");
}

/// Namespaces from scripts/netns.sh, removed on drop.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
struct Netns {
    name: String,
    vars: HashMap<String, String>,
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
impl Netns {
    fn up(tag: &str) -> Netns {
        let name = format!("{tag}{}", std::process::id());
        let out = Command::new("scripts/netns.sh").args(["up", &name]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Netns { name, vars }
    }

    fn var(&self, k: &str) -> &str {
        &self.vars[k]
    }
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("scripts/netns.sh").args(["down", &self.name]).status();
    }
}

/// How long a test waits for a child's next stdout line before it fails (the children are killed on drop).
#[cfg(all(feature = "afxdp", target_os = "linux"))]
const LINE_TIMEOUT: Duration = Duration::from_secs(25);

/// The child's next stdout line, whatever it says; fails the test after [`LINE_TIMEOUT`] or when the child closed
/// its stdout.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn next_line(child: &ChildGuard) -> String {
    child.expect_where("next line", LINE_TIMEOUT, |_| true)
}

/// `xtcp echo` on `port` in xtcp's namespace, killed on drop, its stdout read line by line; checks the serving line.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn echo_server(ns: &Netns, port: u16) -> ChildGuard {
    let server = Command::new("ip")
        .args(["netns", "exec", ns.var("NS_XTCP"), XTCP, "echo", "--iface", ns.var("IF_XTCP")])
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let server = ChildGuard::new(server);
    let first = next_line(&server);
    assert!(first.contains(&format!("serving {}:{port}", ns.var("IP_XTCP"))), "{first}");
    server
}

/// A kernel client in the other namespace, killed on drop: echoes 100 KiB through `port` (prints ECHOED), then keeps
/// its connection open until xtcp's FIN arrives (prints FIN) and — if `close_on_fin` — closes its side; else it holds
/// it, so xtcp waits out its shutdown grace in FIN_WAIT_2.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn holding_client(ns: &Netns, port: u16, close_on_fin: bool) -> ChildGuard {
    let script = format!(
        "import socket,time\ns=socket.create_connection(('{}',{port}),timeout=5)\nd=bytes(range(256))*400\n\
         s.sendall(d)\nr=b''\nwhile len(r)<len(d):\n    c=s.recv(65536)\n    assert c\n    r+=c\nassert r==d\n\
         print('ECHOED',flush=True)\ns.settimeout(20)\nprint('FIN' if s.recv(1)==b'' else 'DATA',flush=True)\n\
         time.sleep(0 if {} else 20)\ns.close()",
        ns.var("IP_XTCP"),
        if close_on_fin { "True" } else { "False" }
    );
    let client = Command::new("ip")
        .args(["netns", "exec", ns.var("NS_KERNEL"), "python3", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    ChildGuard::new(client)
}

/// The interface's details in xtcp's namespace (`prog/xdp` while an XDP program is attached).
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn xtcp_link(ns: &Netns) -> String {
    let out = Command::new("ip")
        .args(["-n", ns.var("NS_XTCP"), "-d", "link", "show", "dev", ns.var("IF_XTCP")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether the XDP program leaves the interface within `within` (its bpf_link closes with the process).
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn detached_within(ns: &Netns, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while xtcp_link(ns).contains("prog/xdp") {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().unwrap();
    assert!(ok.success(), "kill -{name}");
}

/// The child's exit status once it ends, or `None` if it runs past `within`.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn exit_within(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `xtcp echo` serves a kernel client; then `signal` (as Ctrl-C or a service manager sends) makes it send FIN on
/// the open connection, print its summary, exit 0 and leave no XDP program on the interface.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn echo_stops_cleanly_on(tag: &str, name: &str) {
    let ns = Netns::up(tag);
    let mut server = echo_server(&ns, 7777);
    assert!(xtcp_link(&ns).contains("prog/xdp"), "attached while serving");
    let mut client = holding_client(&ns, 7777, true);
    assert_eq!(next_line(&client), "ECHOED", "the client's echo");
    signal(&server.child, name);
    assert_eq!(next_line(&client), "FIN", "the client sees xtcp's FIN after {name}");
    let status = exit_within(&mut server.child, Duration::from_secs(10));
    let _ = exit_within(&mut client.child, Duration::from_secs(10));
    let rest = server.rest(Duration::from_secs(5));
    let status = status.unwrap_or_else(|| panic!("xtcp echo did not stop on {name}"));
    assert!(status.success(), "{name}: {status:?}");
    assert!(rest.iter().any(|l| l.contains("stopped:")), "{name}: no summary: {rest:?}");
    assert!(detached_within(&ns, Duration::from_secs(2)), "{name}: still attached: {}", xtcp_link(&ns));
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn echo_serves_a_kernel_client_and_ctrl_c_leaves_no_xdp_program() {
    echo_stops_cleanly_on("cli", "INT");
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn sigterm_stops_echo_as_ctrl_c_does() {
    echo_stops_cleanly_on("clt", "TERM");
}

/// A peer that never closes keeps xtcp in its 2 s shutdown grace; a second signal, of either kind, ends the process
/// at once (exit 130, no summary), and the XDP program still leaves with it.
#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn a_second_signal_exits_at_once() {
    let ns = Netns::up("cl2");
    for (port, first, second) in [(7001, "TERM", "TERM"), (7002, "INT", "TERM"), (7003, "TERM", "INT")] {
        let mut server = echo_server(&ns, port);
        let client = holding_client(&ns, port, false);
        assert_eq!(next_line(&client), "ECHOED");
        signal(&server.child, first);
        assert_eq!(next_line(&client), "FIN", "FIN after SIG{first}");
        // Draining now: the peer holds its side open, so the first signal alone would end the run in 2 s.
        signal(&server.child, second);
        let sent = Instant::now();
        let status = exit_within(&mut server.child, Duration::from_secs(5));
        let took = sent.elapsed();
        drop(client);
        let rest = server.rest(Duration::from_secs(5));
        let status = status.unwrap_or_else(|| panic!("SIG{first} then SIG{second}: xtcp echo did not exit"));
        assert!(took < Duration::from_millis(1000), "SIG{first} then SIG{second}: exit took {took:?}");
        assert_eq!(status.code(), Some(130), "SIG{first} then SIG{second}");
        assert!(!rest.iter().any(|l| l.contains("stopped:")), "the grace was not waited out: {rest:?}");
        assert!(detached_within(&ns, Duration::from_secs(2)), "still attached: {}", xtcp_link(&ns));
    }
}
