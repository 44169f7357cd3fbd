//! The `xtcp` command.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// xtcp: a kernel-bypass TCP/IP stack.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Watch one connection's life: handshake, data, teardown and TIME_WAIT, segment by segment.
    Demo {
        /// Run over the in-memory simulated link (the only mode until the AF_XDP data path lands).
        #[arg(long, required = true)]
        sim: bool,
        /// Write the client's frames to this pcap file (tcpdump -nr FILE reads it).
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Frames lost on each side's transmit path, per mille (0-1000).
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
        loss: u32,
        /// Seed for the stacks and the faults: the same seed replays the same run.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// One-way link latency in milliseconds.
        #[arg(long, default_value_t = 1)]
        latency_ms: u64,
        /// Maximum segment lifetime in seconds; TIME_WAIT lasts twice this.
        #[arg(long, default_value_t = 30)]
        msl_secs: u64,
        /// What the client says.
        #[arg(long, default_value = "hello, xtcp")]
        message: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Demo { sim: _, pcap, loss, seed, latency_ms, msl_secs, message } => {
            let opts = xtcp::app::demo::DemoOptions {
                pcap,
                loss_per_mille: loss,
                seed,
                latency: Duration::from_millis(latency_ms),
                msl: Duration::from_secs(msl_secs),
                message,
            };
            match xtcp::app::demo::run(&opts, &mut std::io::stdout().lock()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("xtcp demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
