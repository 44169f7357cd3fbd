//! The `xtcp` commands end to end, as users run them (root, veth): `xtcp http` under wrk and curl, `xtcp load`
//! against a kernel HTTP server and against `xtcp http` on both stacks and from several source addresses, `xtcp
//! stat` while connections are open and in TIME_WAIT, the pcap read back by tcpdump, a SYN sent in IPv4 fragments —
//! and the one-line errors of bad arguments (no root needed).

#![cfg(all(feature = "afxdp", target_os = "linux"))]

mod common_afxdp;

use std::net::TcpListener;
use std::process::{Command, Output};
use std::time::Duration;

use common_afxdp::{run, run_text, wait_until, ChildGuard, Netns, TempDir};

const XTCP: &str = env!("CARGO_BIN_EXE_xtcp");

/// `xtcp ARGS` in the namespace `ns_var` names, its stdout read line by line; killed on drop.
fn xtcp_in(ns: &Netns, ns_var: &str, args: &[&str]) -> ChildGuard {
    let mut cmd = ns.in_ns(ns_var, XTCP);
    cmd.args(args);
    ChildGuard::spawn(cmd)
}

/// Starts `xtcp SERVE-ARGS --iface IF_XTCP` in xtcp's namespace and waits until it serves.
fn serve(ns: &Netns, args: &[&str]) -> ChildGuard {
    let mut all = args.to_vec();
    all.extend(["--iface", ns.var("IF_XTCP")]);
    let server = xtcp_in(ns, "NS_XTCP", &all);
    server.expect_where("the serving line", Duration::from_secs(20), |l| l.contains(": serving "));
    server
}

/// Stops a server with SIGINT, as Ctrl-C does, and checks it exits cleanly.
fn interrupt(mut server: ChildGuard) {
    let _ = Command::new("kill").args(["-INT", &server.child.id().to_string()]).status();
    assert!(server.wait(Duration::from_secs(15)).success());
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// `xtcp load ... --json` from the kernel's namespace; returns the report.
fn load(ns: &Netns, stack: &str, args: &[&str]) -> serde_json::Value {
    let out = run(ns
        .in_kernel_ns(XTCP)
        .args(["load", "--stack", stack, "--iface", ns.var("IF_KERNEL"), "--json", "--warmup", "0s"])
        .args(args));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("a JSON report: {e}: {}", text(&out)))
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn wrk_and_curl_get_answers_from_xtcp_http() {
    let ns = Netns::up("phttp");
    let dir = TempDir::new("phttp");
    std::fs::create_dir_all(dir.path("site/img")).unwrap();
    std::fs::write(dir.path("site/index.html"), b"<h1>xtcp</h1>\n").unwrap();
    std::fs::write(dir.path("site/img/dot.svg"), b"<svg/>").unwrap();
    let site = dir.path("site");
    let server = serve(&ns, &["http", "--port", "8080", "--dir", site.to_str().unwrap()]);
    let url = |path: &str| format!("http://{}:8080{path}", ns.var("IP_XTCP"));
    let page = run_text(ns.in_kernel_ns("curl").args(["-sS", "--max-time", "5", &url("/")]));
    assert_eq!(page, "<h1>xtcp</h1>");
    let codes = run_text(ns.in_kernel_ns("curl").args([
        "-s",
        "--max-time",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{content_type}\\n",
        &url("/img/dot.svg"),
        &url("/missing"),
        &url("/img/../../etc/passwd"),
    ]));
    assert_eq!(codes.lines().collect::<Vec<_>>(), ["200 image/svg+xml", "404 text/plain", "404 text/plain"]);
    let post =
        run_text(ns.in_kernel_ns("curl").args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-d", "x=1", &url("/")]));
    assert_eq!(post, "405");
    let wrk = run_text(ns.in_kernel_ns("wrk").args(["-t1", "-c8", "-d2s", "--latency", &url("/")]));
    let rate: f64 = wrk
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output:\n{wrk}"));
    assert!(rate > 100.0, "wrk: {wrk}");
    assert!(!wrk.contains("Non-2xx") && !wrk.contains("Socket errors"), "wrk saw errors:\n{wrk}");
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_load_measures_a_kernel_http_server_and_xtcp_http_on_both_stacks() {
    let ns = Netns::up("pload");
    let dir = TempDir::new("pload");
    std::fs::write(dir.path("hello.txt"), vec![b'h'; 600]).unwrap();
    // A kernel HTTP/1.0 server (one connection per request) in xtcp's namespace, loaded by xtcp over AF_XDP from
    // the other: this kernel is now the peer, so it too must send whole checksums over veth.
    run(ns.in_ns("NS_XTCP", "ethtool").args(["-K", ns.var("IF_XTCP"), "tx", "off", "tso", "off", "gso", "off"]));
    let mut python = ns.in_ns("NS_XTCP", "python3");
    python.args(["-m", "http.server", "8000", "--bind", ns.var("IP_XTCP"), "--directory", dir.0.to_str().unwrap()]);
    let python = ChildGuard::spawn(python);
    let ip = ns.var("IP_XTCP").to_owned();
    assert!(wait_until(Duration::from_secs(10), || {
        ns.in_kernel_ns("curl")
            .args(["-s", "-o", "/dev/null", &format!("http://{ip}:8000/hello.txt")])
            .status()
            .unwrap()
            .success()
    }));
    let target = format!("{ip}:8000");
    let r = load(
        &ns,
        "xdp",
        &[
            "--target",
            &target,
            "--mode",
            "http",
            "--path",
            "/hello.txt",
            "--new-connection-per-request",
            "--connections",
            "4",
            "--requests",
            "200",
        ],
    );
    assert_eq!(r["completed"], 200, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["connections_opened"].as_u64().unwrap() >= 200, "{r}");
    assert!(r["latency"]["p50_us"].as_u64().unwrap() > 0, "{r}");
    drop(python);

    // xtcp http, loaded by xtcp over AF_XDP and then by the same generator on the kernel's TCP; CUBIC everywhere.
    let server = serve(&ns, &["http", "--port", "8081", "--body-bytes", "600", "--congestion", "cubic"]);
    let target = format!("{ip}:8081");
    for stack in ["xdp", "kernel"] {
        let r = load(
            &ns,
            stack,
            &[
                "--target",
                &target,
                "--mode",
                "http",
                "--connections",
                "8",
                "--pipeline",
                "2",
                "--requests",
                "5000",
                "--congestion",
                "cubic",
            ],
        );
        assert_eq!(r["completed"], 5000, "{stack}: {r}");
        assert_eq!(r["failed"], 0, "{stack}: {r}");
        assert!(r["bytes_received"].as_u64().unwrap() >= 5000 * 600, "{stack}: {r}");
    }
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_load_from_two_aliases_holds_more_connections_than_one_address_has_ports_on_both_stacks() {
    // 160 connections held at once to one server, with 100 source ports per address: only two addresses hold them.
    const CONNECTIONS: u64 = 160;
    let ns = Netns::up_with("psrc", &["--aliases", "2"]);
    let aliases: Vec<String> = ns.var("ALIASES_KERNEL").split(',').map(str::to_owned).collect();
    assert_eq!(aliases.len(), 2);
    run(ns.in_kernel_ns("sysctl").args(["-qw", "net.ipv4.ip_local_port_range=40000 40099"]));
    let server = serve(&ns, &["echo", "--port", "7009"]);
    let target = format!("{}:7009", ns.var("IP_XTCP"));
    let args = |stack: &str, sources: &[String]| {
        let mut a: Vec<String> = ["--target", &target, "--connections", &CONNECTIONS.to_string()]
            .into_iter()
            .chain(["--requests", "1600", "--message-bytes", "100"])
            .map(str::to_owned)
            .collect();
        for source in sources {
            a.extend(["--source".to_owned(), source.clone()]);
        }
        if stack == "xdp" {
            a.extend(["--ephemeral-ports".to_owned(), "61000-61099".to_owned()]);
        }
        a
    };
    for stack in ["xdp", "kernel"] {
        // One address alone holds no more connections than it has ports: the other opens fail. (The primary
        // address: a kernel source keeps its ports in TIME_WAIT after the run, so each run gets fresh ones.)
        let one = args(stack, &[ns.var("IP_KERNEL").to_owned()]);
        let r = load(&ns, stack, &one.iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(r["connections_opened"], 100, "{stack}, one source: {r}");
        assert!(r["errors"]["connect"].as_u64().unwrap() > 0, "{stack}, one source: {r}");
        let two = args(stack, &aliases);
        let r = load(&ns, stack, &two.iter().map(String::as_str).collect::<Vec<_>>());
        // Every echo came back byte for byte (a wrong byte counts as a bad response), and no open failed.
        assert_eq!(r["completed"], 1600, "{stack}: {r}");
        assert_eq!(r["failed"], 0, "{stack}: {r}");
        for kind in ["refused", "reset", "timeout", "bad_response", "connect", "closed"] {
            assert_eq!(r["errors"][kind], 0, "{stack}: {kind}: {r}");
        }
        assert_eq!(r["connections_opened"], CONNECTIONS, "{stack}: {r}");
        assert_eq!(r["bytes_received"], 1600 * 100, "{stack}: {r}");
    }
    // --sources 3: the interface's first three addresses (its own and both aliases) hold 250 connections.
    let r = load(
        &ns,
        "xdp",
        &["--target", &target, "--connections", "250", "--requests", "2500", "--ephemeral-ports", "61000-61099"],
    );
    assert!(r["errors"]["connect"].as_u64().unwrap() > 0, "one address: {r}");
    let r = load(
        &ns,
        "xdp",
        &[
            "--target",
            &target,
            "--connections",
            "250",
            "--requests",
            "2500",
            "--ephemeral-ports",
            "61000-61099",
            "--sources",
            "3",
        ],
    );
    assert_eq!(
        (&r["completed"], &r["failed"], &r["connections_opened"]),
        (&2500.into(), &0.into(), &250.into()),
        "{r}"
    );
    assert_eq!(r["errors"]["connect"], 0, "{r}");
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_load_on_two_cores_uses_its_port_slice_on_every_source_address() {
    // 200 ports cut into two slices of 100, one per core: one address holds 200 connections, three hold 250.
    let ns = Netns::up_with("psrcmc", &["--queues", "2", "--aliases", "2"]);
    let server = serve(&ns, &["echo", "--port", "7010"]);
    let target = format!("{}:7010", ns.var("IP_XTCP"));
    let run = |sources: &str| {
        load(
            &ns,
            "xdp",
            &[
                "--cores",
                "2",
                "--target",
                &target,
                "--connections",
                "250",
                "--requests",
                "2500",
                "--ephemeral-ports",
                "61000-61199",
                "--sources",
                sources,
            ],
        )
    };
    let r = run("1");
    assert_eq!(r["connections_opened"], 200, "one address: {r}");
    assert!(r["errors"]["connect"].as_u64().unwrap() > 0, "one address: {r}");
    let r = run("3");
    assert_eq!(
        (&r["completed"], &r["failed"], &r["connections_opened"]),
        (&2500.into(), &0.into(), &250.into()),
        "{r}"
    );
    assert_eq!(r["errors"]["connect"], 0, "{r}");
    assert_eq!(r["errors"]["bad_response"], 0, "{r}");
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_stat_lists_established_and_time_wait_connections() {
    let ns = Netns::up("pstat");
    let server = serve(&ns, &["http", "--port", "8082"]);
    let pid = server.child.id();
    // `ip netns exec` runs xtcp as its child: the control socket is under the pid of the process that serves.
    let ip = ns.var("IP_XTCP").to_owned();
    // Three connections held open (ESTABLISHED), and one request with `Connection: close`: xtcp closes first and
    // holds TIME_WAIT.
    let script = format!(
        "import socket,sys,time\nheld=[socket.create_connection(('{ip}',8082),timeout=5) for _ in range(3)]\n\
         c=socket.create_connection(('{ip}',8082),timeout=5)\n\
         c.sendall(b'GET / HTTP/1.1\\r\\nHost: x\\r\\nConnection: close\\r\\n\\r\\n')\n\
         r=b''\nwhile True:\n    d=c.recv(65536)\n    if not d: break\n    r+=d\nc.close()\n\
         assert r.startswith(b'HTTP/1.1 200'), r\nprint('READY',flush=True)\nsys.stdin.read()\n"
    );
    let mut client = ns.in_kernel_ns("python3");
    client.args(["-c", &script]).stdin(std::process::Stdio::piped());
    let client = ChildGuard::spawn(client);
    client.expect_line("READY", Duration::from_secs(10));
    let stat = |args: &[&str]| {
        let out = Command::new(XTCP).arg("stat").args(args).output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let serving_pid = xtcp_pid_under(pid);
    let mut table = String::new();
    assert!(
        wait_until(Duration::from_secs(5), || {
            table = stat(&["--pid", &serving_pid.to_string(), "--connections"]);
            table.matches("ESTAB").count() >= 3 && table.contains("TIME-WAIT")
        }),
        "stat:\n{table}"
    );
    let json: serde_json::Value = serde_json::from_str(&stat(&["--pid", &serving_pid.to_string(), "--json"])).unwrap();
    let text = json.to_string();
    assert!(text.contains("TIME_WAIT") && text.contains("ESTABLISHED"), "{text}");
    // Every core carries the AF_XDP socket's drops by reason, ours and the kernel's XDP_STATISTICS (present only
    // when the getsockopt worked), and the socket's statistics: frames came in, and copy mode kicked to send.
    let cores = json.as_array().unwrap();
    for core in cores {
        for name in DEVICE_DROPS {
            assert!(core["device_drops"][name].as_u64().is_some(), "{name}: {core}");
        }
    }
    let sum = |section: &str, name: &str| cores.iter().map(|c| c[section][name].as_u64().unwrap()).sum::<u64>();
    assert!(sum("counters", "rx_frames") > 0, "{text}");
    assert!(sum("device", "tx_kicks") > 0, "{text}");
    // The receive frames lent to the kernel: a power of two from 512 up to all 2048 (every one while the loop sleeps
    // between these few requests).
    for core in cores {
        let level = core["device"]["fill_level"].as_u64().unwrap_or_else(|| panic!("no fill_level: {core}"));
        assert!(level.is_power_of_two() && (512..=2048).contains(&level), "fill_level {level}: {core}");
    }
    // The table prints them per core under the stack's drops by reason.
    let table = stat(&["--pid", &serving_pid.to_string()]);
    let device_drops: Vec<&str> =
        table.lines().skip_while(|l| !l.starts_with("DEVICE_DROP")).skip(1).take_while(|l| !l.is_empty()).collect();
    for name in DEVICE_DROPS {
        let row = device_drops.iter().find(|l| l.split_whitespace().next() == Some(name));
        let counts: Vec<&str> = row.unwrap_or_else(|| panic!("no {name} row:\n{table}")).split_whitespace().collect();
        assert_eq!(counts.len(), 2 + cores.len(), "name, total, one per core: {table}");
        assert!(counts[1..].iter().all(|c| c.parse::<u64>().is_ok()), "{table}");
    }
    drop(client);
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn a_second_load_process_reopens_the_tuples_the_first_left_in_time_wait() {
    let ns = Netns::up("preopen");
    let server = serve(&ns, &["http", "--port", "8083", "--body-bytes", "64"]);
    let serving_pid = xtcp_pid_under(server.child.id()).to_string();
    let target = format!("{}:8083", ns.var("IP_XTCP"));
    // 128 source ports for 400 connections a run: the first run wraps around them (xtcp http closes first and
    // holds each in TIME_WAIT), and the second, a new process, meets all of them there. Its SYNs must carry a later
    // timestamp than the first process's last ones for the server to reopen the tuples; a SYN it refuses gets an
    // ACK and costs a one-second SYN timeout, which would make 400 requests take minutes, not the 60 s allowed.
    let run_load = || {
        let out = run(ns.in_kernel_ns("timeout").args([
            "60",
            XTCP,
            "load",
            "--stack",
            "xdp",
            "--iface",
            ns.var("IF_KERNEL"),
            "--json",
            "--warmup",
            "0s",
            "--target",
            &target,
            "--mode",
            "http",
            "--new-connection-per-request",
            "--connections",
            "4",
            "--requests",
            "400",
            "--ephemeral-ports",
            "40000-40127",
        ]));
        let r: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("a JSON report: {e}: {}", text(&out)));
        assert_eq!(r["completed"], 400, "{r}");
        assert_eq!(r["failed"], 0, "{r}");
    };
    run_load();
    run_load();
    let out = Command::new(XTCP).args(["stat", "--pid", &serving_pid, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cores: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let counter =
        |name: &str| cores.as_array().unwrap().iter().map(|c| c["counters"][name].as_u64().unwrap()).sum::<u64>();
    // 800 connections on 128 tuples: all but the first 128 reopened one in TIME_WAIT, and no SYN was refused.
    assert!(counter("time_wait_reopened") >= 600, "{cores}");
    assert_eq!(counter("time_wait_refused"), 0, "{cores}");
    interrupt(server);
}

/// The drops by reason an AF_XDP core reports in `xtcp stat`.
const DEVICE_DROPS: [&str; 9] = [
    "tx_ring_full",
    "tx_pool_empty",
    "tx_too_long",
    "fill_ring_full",
    "xdp_rx_ring_full",
    "xdp_rx_fill_ring_empty_descs",
    "xdp_rx_dropped",
    "xdp_rx_invalid_descs",
    "xdp_tx_invalid_descs",
];

/// The pid of the xtcp process that `ip netns exec` (pid `parent`) runs: itself after exec, or its child.
/// A peer that fragments: `xtcp echo` (the product's path, reassembly inside the hand-off) answers a SYN that came
/// in two IPv4 fragments, built and sent from the kernel's namespace on a raw socket, and `xtcp stat` counts the
/// reassembly.
/// A kernel echo server on ADDR PORT, one message per connection; says LISTENING once it listens.
const KERNEL_ECHO_SERVER: &str = "
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print('LISTENING', flush=True)
while True:
    c, _ = s.accept()
    c.sendall(c.recv(100))
    c.close()
";

/// Five kernel connections to ADDR PORT, each sending a message and reading its echo; prints the source ports.
const KERNEL_ECHO_CLIENT: &str = "
import socket, sys
ports = []
for i in range(5):
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    ports.append(c.getsockname()[1])
    c.sendall(b'kernel %d' % i)
    assert c.recv(100) == b'kernel %d' % i
    c.close()
print('OK', *ports)
";

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn with_the_kernels_port_range_widened_load_refuses_and_echo_leaves_the_kernel_every_other_port() {
    let ns = Netns::up("pwide");
    // The kernel may take any source port from 1024 up: none is left for xtcp's own connections.
    run(ns.in_ns("NS_XTCP", "sysctl").args(["-qw", "net.ipv4.ip_local_port_range=1024 65535"]));
    let (ip, peer) = (ns.var("IP_XTCP").to_owned(), ns.var("IP_KERNEL").to_owned());
    let target = format!("{peer}:7");
    let mut load = ns.in_ns("NS_XTCP", XTCP);
    let out = load.args(["load", "--iface", ns.var("IF_XTCP"), "--target", &target]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.contains("ip_local_port_range (1024-65535) leaves no ports"), "{err}");
    assert!(err.contains("sysctl -w net.ipv4.ip_local_port_range=\"32768 60999\""), "{err}");

    // A server opens no connection: it takes its listening port and nothing else.
    let server = serve(&ns, &["echo", "--port", "7014"]);
    let echo = run_text(ns.in_kernel_ns("python3").args(["-c", KERNEL_ECHO_CLIENT, &ip, "7014"]));
    assert!(echo.starts_with("OK "), "xtcp echo: {echo}");
    // The kernel on xtcp's side still has its own connections on the shared address: accepted on another port,
    // and opened from source ports anywhere in 1024-65535 (before, all of them were steered to xtcp, which reset
    // them).
    let mut listener = ns.in_ns("NS_XTCP", "python3");
    listener.args(["-c", KERNEL_ECHO_SERVER, &ip, "8014"]);
    let listener = ChildGuard::spawn(listener);
    listener.expect_line("LISTENING", Duration::from_secs(10));
    let accepted = run_text(ns.in_kernel_ns("python3").args(["-c", KERNEL_ECHO_CLIENT, &ip, "8014"]));
    assert!(accepted.starts_with("OK "), "the kernel's server: {accepted}");
    let mut remote = ns.in_kernel_ns("python3");
    remote.args(["-c", KERNEL_ECHO_SERVER, &peer, "8015"]);
    let remote = ChildGuard::spawn(remote);
    remote.expect_line("LISTENING", Duration::from_secs(10));
    let opened = run_text(ns.in_ns("NS_XTCP", "python3").args(["-c", KERNEL_ECHO_CLIENT, &peer, "8015"]));
    assert!(opened.starts_with("OK "), "the kernel's client: {opened}");
    drop((listener, remote));
    interrupt(server);
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn xtcp_echo_answers_a_syn_sent_in_two_ipv4_fragments() {
    let ns = Netns::up("pfrag");
    let server = serve(&ns, &["echo", "--port", "7011"]);
    let (src, dst) = (ns.var("IP_KERNEL"), ns.var("IP_XTCP"));
    // A SYN (ISN 1000, MSS 1460, 8 bytes of data) cut after 24 bytes: header and option, then the data.
    let script = r#"
import socket, struct, sys, time
src, dst, dport, sport = sys.argv[1], sys.argv[2], int(sys.argv[3]), 40999
def csum(b):
    if len(b) % 2: b += b'\0'
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
seg = struct.pack('!HHIIBBHHH', sport, dport, 1000, 0, 6 << 4, 0x02, 65535, 0, 0) + struct.pack('!BBH', 2, 4, 1460)
seg += b'fragment'
pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack('!BBH', 0, 6, len(seg))
seg = seg[:16] + struct.pack('!H', csum(pseudo + seg)) + seg[18:]
def ip(field, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0x4242, field, 64, 6, 0,
                    socket.inet_aton(src), socket.inet_aton(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
rx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
rx.settimeout(1)
tx = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
tx.sendto(ip(0x2000, seg[:24]), (dst, 0))  # more fragments, offset 0
tx.sendto(ip(24 // 8, seg[24:]), (dst, 0))  # the last, offset 24
deadline = time.time() + 5
while time.time() < deadline:
    try:
        p = rx.recv(65535)
    except socket.timeout:
        continue
    ihl = (p[0] & 15) * 4
    s, d = struct.unpack('!HH', p[ihl:ihl + 4])
    if socket.inet_ntoa(p[12:16]) == dst and (s, d) == (dport, sport) and p[ihl + 13] & 0x12 == 0x12:
        print('SYN-ACK ack', struct.unpack('!I', p[ihl + 8:ihl + 12])[0])
        sys.exit(0)
print('no SYN-ACK')
"#;
    let answer = run_text(ns.in_kernel_ns("python3").args(["-c", script, src, dst, "7011"]));
    assert_eq!(answer, "SYN-ACK ack 1001", "the SYN acknowledged, its data not (no TFO), as Linux answers it");
    let serving_pid = xtcp_pid_under(server.child.id()).to_string();
    let out = Command::new(XTCP).args(["stat", "--pid", &serving_pid, "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    let cores = json.as_array().unwrap();
    let sum = |section: &str, name: &str| cores.iter().map(|c| c[section][name].as_u64().unwrap_or(0)).sum::<u64>();
    assert_eq!((sum("device", "frags_in"), sum("device", "reasm_ok")), (2, 1), "{json}");
    assert!(sum("counters", "tcp_in") >= 1, "{json}");
    interrupt(server);
}

fn xtcp_pid_under(parent: u32) -> u32 {
    let comm = |pid: u32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if comm(parent).trim() == "xtcp" {
        return parent;
    }
    let children = std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).unwrap_or_default();
    children.split_whitespace().filter_map(|p| p.parse().ok()).find(|&p| comm(p).trim() == "xtcp").unwrap_or(parent)
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn the_pcap_of_xtcp_echo_is_read_back_by_tcpdump() {
    let ns = Netns::up("ppcap");
    let dir = TempDir::new("ppcap");
    let pcap = dir.path("echo.pcap");
    let server = serve(&ns, &["echo", "--port", "7008", "--pcap", pcap.to_str().unwrap()]);
    let script = format!(
        "import socket\ns=socket.create_connection(('{}',7008),timeout=5)\ns.sendall(b'pcap me')\n\
         assert s.recv(100)==b'pcap me'\ns.close()\nprint('OK')",
        ns.var("IP_XTCP")
    );
    assert_eq!(run_text(ns.in_kernel_ns("python3").args(["-c", &script])), "OK");
    std::thread::sleep(Duration::from_millis(300));
    interrupt(server);
    let dump = run_text(Command::new("tcpdump").args(["-nr", pcap.to_str().unwrap()]));
    let port = format!("{}.7008", ns.var("IP_XTCP"));
    let flags: Vec<&str> = dump
        .lines()
        .filter(|l| l.contains(&port))
        .filter_map(|l| l.split("Flags [").nth(1)?.split(']').next())
        .collect();
    assert!(flags.starts_with(&["S", "S.", "."]), "{dump}");
    assert!(flags.iter().filter(|f| f.contains('F')).count() >= 2, "{dump}");
    assert!(dump.contains("length 7"), "the 7 payload bytes each way: {dump}");
}

#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn one_way_bulk_reaches_discard_servers_whole_and_the_reflector_counts_a_stream() {
    let ns = Netns::up("pbulk");
    let ip = ns.var("IP_XTCP").to_owned();
    // xtcp's discard server, sent 64 MiB by xtcp over AF_XDP and by the kernel's TCP: each transfer completes only
    // once the server, having read it all, closes in turn.
    let server = serve(&ns, &["echo", "--discard", "--port", "7009"]);
    let target = format!("{ip}:7009");
    let send =
        ["--target", &target, "--mode", "send", "--message-bytes", "64MiB", "--requests", "1", "--timeout", "60s"];
    for stack in ["xdp", "kernel"] {
        let r = load(&ns, stack, &send);
        assert_eq!((r["completed"].as_u64(), r["failed"].as_u64()), (Some(1), Some(0)), "{stack}: {r}");
        assert_eq!(r["bytes_sent"], 64u64 << 20, "{stack}: {r}");
        assert_eq!(r["bytes_received"], 0, "{stack}: {r}");
    }
    interrupt(server);

    // A kernel discard server that counts what it read, sent 64 MiB by xtcp.
    run(ns.in_ns("NS_XTCP", "ethtool").args(["-K", ns.var("IF_XTCP"), "tx", "off", "tso", "off", "gso", "off"]));
    let script = format!(
        "import socket\nl=socket.create_server(('{ip}',7010))\nprint('listening',flush=True)\nc,_=l.accept()\n\
         n=0\nwhile True:\n    b=c.recv(1<<20)\n    if not b: break\n    n+=len(b)\nc.close()\nprint('read',n,flush=True)"
    );
    let mut py = ns.in_ns("NS_XTCP", "python3");
    py.args(["-c", &script]);
    let python = ChildGuard::spawn(py);
    python.expect_line("listening", Duration::from_secs(10));
    let target = format!("{ip}:7010");
    let r = load(
        &ns,
        "xdp",
        &["--target", &target, "--mode", "send", "--message-bytes", "64MiB", "--requests", "1", "--timeout", "60s"],
    );
    assert_eq!((r["completed"].as_u64(), r["failed"].as_u64()), (Some(1), Some(0)), "{r}");
    assert_eq!(python.expect_line("read", Duration::from_secs(10)), format!("read {}", 64u64 << 20));

    // The raw ceiling: the reflector bounces pings and counts a one-way stream of full frames.
    let mut reflector = serve(&ns, &["reflect", "--port", "9000"]);
    let reflect = |how: &[&str]| {
        let out = run(ns
            .in_kernel_ns(XTCP)
            .args(["reflect", "--iface", ns.var("IF_KERNEL"), "--port", "9001", "--ping", &format!("{ip}:9000")])
            .args(["--duration", "1s", "--json"])
            .args(how));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)))
    };
    // (Rates are not asserted: this test shares two CPUs with the others, and a starved reflector is slow, not
    // wrong.)
    let ping = reflect(&["--in-flight", "4"]);
    assert!(ping["frames"].as_u64().unwrap() > 0, "{ping}");
    assert!(ping["p50_us"].as_u64().unwrap() > 0, "{ping}");
    let stream = reflect(&["--stream", "--frame-bytes", "1514"]);
    let (arrived, sent) = (stream["frames"].as_u64().unwrap(), stream["sent"].as_u64().unwrap());
    assert!(arrived > 0 && arrived <= sent, "{stream}");
    assert!(stream["gbit_per_sec"].as_f64().unwrap() > 0.0, "{stream}");
    let _ = Command::new("kill").args(["-INT", &reflector.child.id().to_string()]).status();
    let counted = reflector.expect_line("xtcp reflect:", Duration::from_secs(10));
    let streamed = counted.split(", ").nth(1).and_then(|p| p.split(' ').next()).and_then(|n| n.parse::<u64>().ok());
    assert!(streamed.is_some_and(|n| n >= arrived), "{counted}");
    assert!(reflector.wait(Duration::from_secs(15)).success());
}

/// Runs `xtcp ARGS` and returns (exit code, stderr).
fn xtcp(args: &[&str]) -> (i32, String) {
    let out = Command::new(XTCP).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn bad_arguments_get_one_line_saying_what_to_do() {
    let one_line = |args: &[&str], code: i32, says: &str| {
        let (got, err) = xtcp(args);
        assert_eq!(got, code, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?} should say {says:?}: {err}");
    };
    one_line(&["load", "--target", "nowhere"], 2, "--target");
    one_line(&["load", "--target", "10.0.0.1:80", "--duration", "5y"], 2, "unknown unit");
    one_line(&["load", "--target", "10.0.0.1:80", "--mode", "smtp"], 2, "smtp");
    one_line(&["load", "--target", "10.0.0.1:80", "--ephemeral-ports", "80-90"], 2, "LO-HI");
    one_line(&["load", "--target", "10.0.0.1:80", "--sources", "0"], 2, "--sources");
    one_line(&["load", "--target", "10.0.0.1:80", "--stack", "kernel", "--source", "10.0.0.9"], 1, "need --iface");
    let lo_source = ["load", "--target", "127.0.0.1:9", "--stack", "kernel", "--iface", "lo", "--source", "192.0.2.1"];
    one_line(&lo_source, 1, "--source 192.0.2.1 is not an address of lo");
    one_line(
        &["load", "--target", "127.0.0.1:9", "--stack", "kernel", "--iface", "lo", "--sources", "9"],
        1,
        "aliases",
    );
    let kernel_ports = ["load", "--target", "127.0.0.1:9", "--stack", "kernel", "--ephemeral-ports", "61000-61099"];
    one_line(&kernel_ports, 1, "--ephemeral-ports is for --stack xdp");
    one_line(&["echo", "--port", "seven"], 2, "seven");
    one_line(&["echo"], 1, "needs --iface");
    one_line(&["http", "--iface", "nosuch0"], 1, "no interface named \"nosuch0\"");
    one_line(&["stat", "--pid", "999999999", "--root", "/nonexistent-xtcp"], 1, "no running xtcp with pid 999999999");
    one_line(&["http", "--stack", "kernel", "--dir", "/nonexistent-xtcp-dir"], 1, "--dir /nonexistent-xtcp-dir");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    one_line(&["echo", "--stack", "kernel", "--ip", "127.0.0.1", "--port", &port], 1, "is taken");
}
