//! Fixtures of the root tests over veth (`tests/afxdp.rs`, `tests/interop.rs`): namespaces from `scripts/netns.sh`
//! removed on drop, children re-run from the test binary inside a namespace and killed on drop, captures.
//!
//! A child is the test binary itself, re-run under `ip netns exec` with `XTCP_AFXDP_CHILD` naming its role and
//! `--exact` naming the test function that plays it; every other test function returns at once in a child.
#![allow(dead_code)] // each test binary uses a part

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant as StdInstant};

use xtcp::engine::{Stack, StackConfig};
use xtcp::nic::afxdp::{self, BindMode, Steering, XskConfig, XskDevice};
use xtcp::time::Instant;

/// The variable that makes the test binary a child, and names its role.
pub const CHILD_ENV: &str = "XTCP_AFXDP_CHILD";

/// A set of namespaces from `scripts/netns.sh`, removed on drop.
pub struct Netns {
    pub name: String,
    pub vars: HashMap<String, String>,
}

impl Netns {
    /// `scripts/netns.sh up` for a name made of `tag` and this process's id, with `args` (`--middle`...).
    pub fn up(tag: &str) -> Netns {
        Netns::up_with(tag, &[])
    }

    /// As [`Netns::up`], with extra `scripts/netns.sh up` arguments.
    pub fn up_with(tag: &str, args: &[&str]) -> Netns {
        let name = format!("{tag}{}", std::process::id());
        // Made before `up` runs, so that a half-made set is removed too.
        let mut ns = Netns { name, vars: HashMap::new() };
        let out = run(Command::new("scripts/netns.sh").args(["up", &ns.name]).args(args));
        ns.vars = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        ns
    }

    pub fn var(&self, key: &str) -> &str {
        self.vars.get(key).unwrap_or_else(|| panic!("netns.sh printed no {key}"))
    }

    /// `ip -d link show` of xtcp's interface, from inside its namespace.
    pub fn xtcp_link(&self) -> String {
        let out =
            run(Command::new("ip").args(["-n", self.var("NS_XTCP"), "-d", "link", "show", "dev", self.var("IF_XTCP")]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A command run inside the namespace `ns_var` names (`NS_KERNEL`, `NS_XTCP`, `NS_MIDDLE`).
    pub fn in_ns(&self, ns_var: &str, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.var(ns_var), program]);
        cmd
    }

    /// A command run inside the kernel peer's namespace.
    pub fn in_kernel_ns(&self, program: &str) -> Command {
        self.in_ns("NS_KERNEL", program)
    }

    /// This test binary, re-run inside xtcp's namespace as the child `test_name` doing `role`.
    pub fn spawn_child(&self, test_name: &str, role: &str) -> ChildGuard {
        self.spawn_child_in("NS_XTCP", test_name, role, &[])
    }

    /// This test binary, re-run inside the namespace `ns_var` names as the child `test_name` doing `role`, with
    /// extra environment `env`. It also gets `XTCP_IF`, `XTCP_IP`, `XTCP_PEER_IP` and `XTCP_PEER_MAC` (xtcp's
    /// interface and address, and the kernel peer's).
    pub fn spawn_child_in(&self, ns_var: &str, test_name: &str, role: &str, env: &[(&str, String)]) -> ChildGuard {
        self.spawn_child_on(ns_var, None, test_name, role, env)
    }

    /// As [`Netns::spawn_child_in`], pinned to CPU `cpu` (with `taskset`) when one is given.
    pub fn spawn_child_on(
        &self,
        ns_var: &str,
        cpu: Option<usize>,
        test_name: &str,
        role: &str,
        env: &[(&str, String)],
    ) -> ChildGuard {
        let exe = std::env::current_exe().expect("test binary path");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", self.var(ns_var)]);
        if let Some(cpu) = cpu {
            cmd.args(["taskset", "-c", &cpu.to_string()]);
        }
        cmd.arg(exe)
            .args(["--exact", test_name, "--include-ignored", "--nocapture", "--test-threads=1", "--quiet"])
            .env(CHILD_ENV, role)
            .env("XTCP_IF", self.var("IF_XTCP"))
            .env("XTCP_IP", self.var("IP_XTCP"))
            .env("XTCP_PEER_IP", self.var("IP_KERNEL"))
            .env("XTCP_PEER_MAC", self.var("MAC_KERNEL"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        ChildGuard::spawn(cmd)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("scripts/netns.sh").args(["down", &self.name]).status();
    }
}

/// A child process, killed on drop, whose stdout lines arrive on a channel.
pub struct ChildGuard {
    pub child: Child,
    lines: Receiver<String>,
}

impl ChildGuard {
    /// Starts `cmd` with stdout piped (stderr inherited).
    pub fn spawn(mut cmd: Command) -> ChildGuard {
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        ChildGuard::new(child)
    }

    pub fn new(mut child: Child) -> ChildGuard {
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("child: {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        ChildGuard { child, lines }
    }

    /// Waits for a stdout line starting with `prefix`; returns the line.
    pub fn expect_line(&self, prefix: &str, timeout: Duration) -> String {
        self.expect_where(&format!("a line starting with {prefix:?}"), timeout, |l| l.starts_with(prefix))
    }

    /// Waits for a stdout line for which `pred` holds; returns it.
    pub fn expect_where(&self, what: &str, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> String {
        let deadline = StdInstant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(StdInstant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no {what} from the child within {timeout:?}: {e}"),
            }
        }
    }

    /// The stdout lines still to come, until the child closes its stdout or `timeout` passes.
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        let deadline = StdInstant::now() + timeout;
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(deadline.saturating_duration_since(StdInstant::now())) {
            rest.push(line);
        }
        rest
    }

    /// Waits for the child to end; kills it and panics after `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = StdInstant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the child") {
                return status;
            }
            if StdInstant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not finish within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tcpdump` on one interface of one namespace, writing its text to a file; stopped on drop.
pub struct Tcpdump {
    child: Child,
    out: PathBuf,
}

impl Tcpdump {
    /// Starts `tcpdump -n -l` with `filter` on `ifname` inside `ns`, and waits until it listens.
    pub fn start(ns: &str, ifname: &str, filter: &str, out: PathBuf) -> Tcpdump {
        let file = std::fs::File::create(&out).expect("create the capture text file");
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "tcpdump", "-n", "-l", "--immediate-mode", "-i", ifname])
            .args(filter.split_whitespace())
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tcpdump");
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        while !said.contains("listening on") {
            let n = stderr.read_line(&mut said).expect("tcpdump's stderr");
            assert!(n > 0, "tcpdump did not start: {said}");
        }
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
        });
        Tcpdump { child, out }
    }

    /// The whole lines captured so far (tcpdump writes each as it sees its packet: `-l`, `--immediate-mode`).
    pub fn lines(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.out).expect("read the capture");
        // A line still being written is left for the next read.
        let whole = text.rfind('\n').map_or("", |end| &text[..end]);
        whole.lines().map(str::to_owned).collect()
    }

    /// Waits until `done` holds for the lines captured so far (polled every 20 ms, for at most `timeout`), then
    /// stops the capture (SIGINT, so it flushes) and returns its lines. After `timeout` it stops anyway: the caller's
    /// assertions then say what is missing.
    pub fn stop_when(mut self, timeout: Duration, mut done: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let deadline = StdInstant::now() + timeout;
        while !done(&self.lines()) && StdInstant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.out).expect("read the capture").lines().map(str::to_owned).collect()
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory under the system's temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("xtcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("make the scratch directory");
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The command's stdout, trimmed, once it succeeded.
pub fn run_text(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).trim().to_owned()
}

pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

pub fn child_env(key: &str) -> String {
    std::env::var(key).unwrap_or_else(|_| panic!("{key} not set for the child"))
}

pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = StdInstant::now() + timeout;
    while StdInstant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cond()
}

/// An XDP program on the link shows as `prog/xdp id N` (native) in `ip -d link show`.
pub fn has_xdp(link: &str) -> bool {
    link.contains("prog/xdp") || link.contains(" xdp ") || link.contains("xdpgeneric")
}

/// The value of `name=` in a line of `key=value` words.
pub fn field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
}

/// In a child: xtcp on the interface `XTCP_IF` at `XTCP_IP` — the steering program for `ports` and the ephemeral
/// range, one AF_XDP socket on queue 0, and a stack that leaves ARP to the kernel.
pub fn open_xtcp(ports: &[u16], seed: u64) -> (Stack, XskDevice, Steering) {
    let ifname = child_env("XTCP_IF");
    let ip: Ipv4Addr = child_env("XTCP_IP").parse().unwrap();
    let mac = afxdp::interface_mac(&ifname).expect("interface MAC");
    let mut cfg = StackConfig::new(mac, ip, seed);
    cfg.arp = false; // the kernel keeps ARP for the address it shares with us
    let ephemeral = cfg.ephemeral_ports.clone();
    let mut steering =
        Steering::load_and_attach(&ifname, &[ip], ports.iter().copied()).expect("attach the steering program");
    steering.allow_ports(ephemeral).expect("steer the ephemeral ports");
    let xsk_cfg = XskConfig { mode: BindMode::Auto, ..XskConfig::DEFAULT };
    let dev = XskDevice::open(&ifname, &xsk_cfg, &steering).expect("open the AF_XDP socket");
    let stack = Stack::new(cfg, Instant::from_micros(0));
    (stack, dev, steering)
}

/// A kernel echo server on `listener` (std::net, a thread per connection, TCP_NODELAY): says `READY kernel echo`,
/// then echoes every connection until its peer closes, until the process is killed.
pub fn serve_kernel_echo(listener: TcpListener) {
    println!("READY kernel echo");
    for stream in listener.incoming() {
        let Ok(mut s) = stream else { continue };
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut buf = [0u8; 65536];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    }
}
