//! `xtcp echo` and `xtcp http`: one application served on either stack until Ctrl-C, SIGTERM or SIGHUP.

use std::net::{Ipv4Addr, SocketAddrV4};

use xtcp::app::App;
use xtcp::engine::kernel::{run_kernel, KernelStack};
use xtcp::engine::Stack;

use super::{stop_on_signals, NetArgs, StackKind};

/// Serves the application `make` builds (one per core) on `port` with the stack `net` names, until a signal;
/// returns a one-line error.
pub fn serve<A, F>(name: &str, net: &NetArgs, port: u16, make: F) -> Result<(), String>
where
    A: App<Stack> + App<KernelStack> + Send,
    F: Fn() -> A + Sync,
{
    match net.stack {
        StackKind::Xdp => serve_xdp(name, net, port, make),
        StackKind::Kernel => serve_kernel(name, net, port, &mut make()),
    }
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn serve_xdp<A, F>(name: &str, net: &NetArgs, port: u16, make: F) -> Result<(), String>
where
    A: App<Stack> + Send,
    F: Fn() -> A + Sync,
{
    use xtcp::engine::shard::{run_cores_with, CoreInfo, Hooks};
    let cfg = super::xdp::cores_config(name, net, &[port], None)?;
    let stop = stop_on_signals()?;
    let ip = cfg.stack.ip;
    let iface = cfg.ifname.clone();
    let ready = |infos: &[CoreInfo], cpus: usize| {
        println!("xtcp {name}: serving {ip}:{port} on {iface}, {}; Ctrl-C stops", super::xdp::describe(infos, cpus));
    };
    let hooks = Hooks { ready: Some(&ready), ..Hooks::default() };
    super::xdp::warn_unserved_queues(name, &cfg);
    let report = run_cores_with(&cfg, |_| make(), &hooks, &stop).map_err(|e| e.to_string())?;
    super::xdp::summary(name, &report);
    Ok(())
}

#[cfg(not(all(feature = "afxdp", target_os = "linux")))]
fn serve_xdp<A, F: Fn() -> A>(name: &str, _: &NetArgs, _: u16, _: F) -> Result<(), String> {
    Err(format!(
        "this xtcp was built without AF_XDP — rebuild with the afxdp feature, or run `xtcp {name} --stack kernel`"
    ))
}

fn serve_kernel(name: &str, net: &NetArgs, port: u16, app: &mut dyn App<KernelStack>) -> Result<(), String> {
    let ip = kernel_ip(net)?;
    // The application listens as it starts; find a taken port now, while it can still be said in one line.
    std::net::TcpListener::bind(SocketAddrV4::new(ip, port)).map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => {
            format!("port {port} is taken on {ip} — stop whoever holds it or choose another --port")
        }
        std::io::ErrorKind::PermissionDenied => {
            format!("port {port} is below 1024 — run as root or choose --port 1024 or above")
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!("{ip} is not an address of this host — choose one `ip -br addr` lists")
        }
        _ => format!("binding {ip}:{port}: {e}"),
    })?;
    let mut stack = KernelStack::new(net.kernel_config(ip)).map_err(|e| format!("starting --stack kernel: {e}"))?;
    let stop = stop_on_signals()?;
    println!("xtcp {name}: serving {ip}:{port} with the kernel's TCP (--stack kernel); Ctrl-C stops");
    let stats = run_kernel(&mut stack, app, &stop, net.run_options());
    let c = stack.counters();
    println!(
        "xtcp {name}: stopped: {} connections accepted, {} resets, {} loop turns",
        c.accepted, c.resets, stats.turns
    );
    Ok(())
}

/// The kernel stack's local address: `--ip`, else the first address of `--iface`, else any.
pub fn kernel_ip(net: &NetArgs) -> Result<Ipv4Addr, String> {
    if let Some(ip) = net.ip {
        return Ok(ip);
    }
    let Some(iface) = net.iface.as_deref() else { return Ok(Ipv4Addr::UNSPECIFIED) };
    interface_ipv4(iface)
}

fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, String> {
    let addrs = interface_addresses(iface)?;
    addrs.first().copied().ok_or_else(|| format!("{iface} has no IPv4 address — add one or give --ip"))
}

/// `iface`'s IPv4 addresses in the kernel's order (the primary first, then the aliases as added).
#[cfg(all(feature = "afxdp", target_os = "linux"))]
pub fn interface_addresses(iface: &str) -> Result<Vec<Ipv4Addr>, String> {
    let ifindex = xtcp::nic::afxdp::interface_index(iface)
        .map_err(|_| format!("no interface named {iface:?} — `ip -br link` lists them"))?;
    xtcp::nic::neigh::Neighbors::open()
        .and_then(|mut n| n.interface_addresses(ifindex))
        .map_err(|e| format!("reading {iface}'s addresses over netlink: {e}"))
}

/// `iface`'s IPv4 addresses: this build reads none.
#[cfg(not(all(feature = "afxdp", target_os = "linux")))]
pub fn interface_addresses(iface: &str) -> Result<Vec<Ipv4Addr>, String> {
    Err(format!("give addresses with --ip instead of --iface {iface} (this build reads no interface addresses)"))
}
