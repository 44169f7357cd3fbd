//! `xtcp stat`: what running xtcp processes are doing — connections per state like `ss -tan`, per-core counters
//! and drops by reason — read from each core's control socket.

use std::path::PathBuf;
use std::time::Duration;

use xtcp::engine::control::{self, DEFAULT_ROOT};

/// The `xtcp stat` arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct StatArgs {
    /// List every connection (State, Recv-Q, Send-Q, Local, Peer), as `ss -tan` does.
    #[arg(long, short = 'c')]
    pub connections: bool,
    /// Only the xtcp process with this pid [default: every running one].
    #[arg(long)]
    pub pid: Option<u32>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Where running xtcp processes put their control sockets.
    #[arg(long, default_value = DEFAULT_ROOT, value_name = "DIR")]
    pub root: PathBuf,
}

/// Queries every core of every running xtcp (or of `--pid`) and prints the merged view.
pub fn run(args: &StatArgs) -> Result<(), String> {
    let instances: Vec<_> =
        control::discover(&args.root).into_iter().filter(|i| args.pid.is_none_or(|p| p == i.pid)).collect();
    if instances.is_empty() {
        return Err(match args.pid {
            Some(pid) => {
                format!("no running xtcp with pid {pid} under {} — `xtcp stat` lists all", args.root.display())
            }
            None => format!(
                "no running xtcp found under {} — start `xtcp echo`, `http` or `load` first",
                args.root.display()
            ),
        });
    }
    let mut snapshots = Vec::new();
    for instance in &instances {
        for (_, path) in &instance.cores {
            match control::query(path, args.connections, Duration::from_secs(2)) {
                Ok(s) => snapshots.push(s),
                Err(e) => eprintln!("xtcp stat: {} did not answer: {e}", path.display()),
            }
        }
    }
    if snapshots.is_empty() {
        return Err("no xtcp core answered — is the process stuck or exiting?".into());
    }
    if args.json {
        println!("{}", control::render_json(&snapshots));
    } else {
        print!("{}", control::render(&snapshots, args.connections));
    }
    Ok(())
}
