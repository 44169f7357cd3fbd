//! `xtcp echo` and `xtcp http`: one application served on either stack until Ctrl-C or SIGTERM.

use std::net::{Ipv4Addr, SocketAddrV4};

use xtcp::app::App;
use xtcp::engine::kernel::{run_kernel, KernelConfig, KernelStack};
use xtcp::engine::Stack;

use super::{stop_on_signals, NetArgs, StackKind};

/// Serves `app` on `port` with the stack `net` names, until a signal; returns a one-line error.
pub fn serve<A>(name: &str, net: &NetArgs, port: u16, app: &mut A) -> Result<(), String>
where
    A: App<Stack> + App<KernelStack>,
{
    match net.stack {
        StackKind::Xdp => serve_xdp(name, net, port, app),
        StackKind::Kernel => serve_kernel(name, net, port, app),
    }
}

#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn serve_xdp(name: &str, net: &NetArgs, port: u16, app: &mut dyn App<Stack>) -> Result<(), String> {
    use xtcp::engine::run::run_with;
    let mut x = super::xdp::open(name, net, &[port], None)?;
    let mut control = super::control_socket(name, net);
    let stop = stop_on_signals()?;
    let iface = net.iface.as_deref().unwrap_or_default();
    let more = if x.queues > 1 {
        format!(" — {iface} has {} rx queues, only this one is served", x.queues)
    } else {
        String::new()
    };
    println!(
        "xtcp {name}: serving {}:{port} on {iface} queue {} ({:?} mode){more}; Ctrl-C stops",
        x.ip, net.queue, x.mode
    );
    run_with(&mut x.stack, x.dev.as_mut(), app, &stop, net.run_options(), control.as_mut());
    let c = x.stack.counters();
    println!(
        "xtcp {name}: stopped: {} frames in, {} out, {} connections, {} drops",
        c.rx_frames,
        c.tx_frames,
        c.conns_opened,
        c.total_drops()
    );
    super::checksum_hint(name, c);
    drop(x.steering);
    Ok(())
}

#[cfg(not(all(feature = "afxdp", target_os = "linux")))]
fn serve_xdp(name: &str, _: &NetArgs, _: u16, _: &mut dyn App<Stack>) -> Result<(), String> {
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
    let mut stack = KernelStack::new(KernelConfig::new(ip)).map_err(|e| format!("creating the epoll instance: {e}"))?;
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

#[cfg(all(feature = "afxdp", target_os = "linux"))]
fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, String> {
    let ifindex = xtcp::nic::afxdp::interface_index(iface)
        .map_err(|_| format!("no interface named {iface:?} — `ip -br link` lists them"))?;
    let addrs = xtcp::nic::neigh::Neighbors::open()
        .and_then(|mut n| n.interface_addresses(ifindex))
        .map_err(|e| format!("reading {iface}'s addresses over netlink: {e}"))?;
    addrs.first().copied().ok_or_else(|| format!("{iface} has no IPv4 address — add one or give --ip"))
}

#[cfg(not(all(feature = "afxdp", target_os = "linux")))]
fn interface_ipv4(iface: &str) -> Result<Ipv4Addr, String> {
    Err(format!("give --ip instead of --iface {iface} (this build reads no interface addresses)"))
}
