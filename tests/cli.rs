//! The `xtcp` command: its errors, and `xtcp echo` serving a kernel client over AF_XDP.
#![cfg_attr(not(all(feature = "afxdp", target_os = "linux")), allow(unused_imports))]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

#[cfg(all(feature = "afxdp", target_os = "linux"))]
#[test]
#[ignore = "needs root: run scripts/test.sh"]
fn echo_serves_a_kernel_client_and_ctrl_c_leaves_no_xdp_program() {
    let ns = Netns::up("cli");
    let mut server = Command::new("ip")
        .args(["netns", "exec", ns.var("NS_XTCP"), XTCP, "echo", "--iface", ns.var("IF_XTCP"), "--port", "7777"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().expect("a line").unwrap();
    assert!(first.contains(&format!("serving {}:7777", ns.var("IP_XTCP"))), "{first}");
    let link = |ns: &Netns| {
        let out = Command::new("ip")
            .args(["-n", ns.var("NS_XTCP"), "-d", "link", "show", "dev", ns.var("IF_XTCP")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(link(&ns).contains("prog/xdp"), "attached while serving");
    let script = format!(
        "import socket\ns=socket.create_connection(('{}',7777),timeout=5)\nd=bytes(range(256))*400\ns.sendall(d)\n\
         r=b''\nwhile len(r)<len(d):\n    c=s.recv(65536)\n    assert c\n    r+=c\nassert r==d\ns.close()\nprint('OK')",
        ns.var("IP_XTCP")
    );
    let client =
        Command::new("ip").args(["netns", "exec", ns.var("NS_KERNEL"), "python3", "-c", &script]).output().unwrap();
    let client_out = String::from_utf8_lossy(&client.stdout);
    let _ = Command::new("kill").args(["-INT", &server.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = server.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "xtcp echo did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(client_out.contains("OK"), "client: {client_out} {}", String::from_utf8_lossy(&client.stderr));
    assert!(status.success(), "{status:?}");
    assert!(rest.iter().any(|l| l.contains("stopped:")), "{rest:?}");
    assert!(!link(&ns).contains("prog/xdp"), "no XDP program after the command exits: {}", link(&ns));
}
