//! `tracer` — the thin command-line front of the library (see `lib.rs` for the parts).
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use tracer::output::Mode;
use tracer::run::{self, RunOptions};

/// The course's eBPF packet-drop and skb-path tracer (tp_btf; needs root to run).
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Every skb freed with a drop reason (tracepoint kfree_skb).
    Drops {
        #[command(flatten)]
        common: Common,
        /// Explain UDP NO_SOCKET drops from the namespace's conntrack table (the story's NAT case).
        #[arg(long)]
        explain: bool,
    },
    /// Follow skbs through every tracepoint that carries one, like pwru.
    Path {
        #[command(flatten)]
        common: Common,
        /// Once an skb matched the filter, keep following its address even after NAT changed it.
        #[arg(long)]
        track_skb: bool,
        /// Only these tracepoints (comma-separated), e.g. `net_dev_queue,kfree_skb`.
        #[arg(long, value_delimiter = ',')]
        tracepoints: Option<Vec<String>>,
    },
    /// Measure attach time, packets/s with and without the tracer, and event throughput.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
    },
}

#[derive(Args)]
struct Common {
    /// Filter, e.g. `udp and port 4000`, `src host 172.18.0.1 and dst port 34320`, `ip6 and udp`.
    /// Primitives: udp tcp icmp icmp6 ip ip6, [src|dst] host ADDR, [src|dst] port N; `and` only.
    #[arg(default_value = "", num_args = 0..)]
    filter: Vec<String>,
    /// Only skbs in this network namespace (inode, as in `ls -lL /proc/PID/ns/net`).
    #[arg(long)]
    netns: Option<u32>,
    /// Only skbs in the namespace of this lab node (e.g. `dind2`), by name: see --netns-names.
    #[arg(long, conflicts_with = "netns")]
    node: Option<String>,
    /// Only skbs on this interface index.
    #[arg(long)]
    ifindex: Option<u32>,
    /// One JSON object per line instead of columns.
    #[arg(long)]
    json: bool,
    /// Create this file once every program is attached.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// Stop after this many seconds.
    #[arg(long)]
    duration: Option<f64>,
    /// Stop after this many events.
    #[arg(long)]
    count: Option<u64>,
    /// Ring buffer size in KiB, a power of two (default 4096). A tiny one shows lost events.
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    ring_kib: u32,
    /// Node names for netns inodes: a JSON file {"pid": N, "nodes": {"NAME": INODE, ...}}.
    #[arg(long)]
    netns_names: Option<PathBuf>,
}

fn options(mode: Mode, c: Common) -> anyhow::Result<RunOptions> {
    let mut filter = tracer::filter::parse(&c.filter.join(" "))?;
    let netns = match &c.node {
        None => c.netns,
        Some(node) => {
            let names = tracer::nodes::NodeNames::new(
                Some(tracer::nodes::registry_dir()),
                c.netns_names.as_deref(),
            )?;
            match names.inode_of(node) {
                Some(ino) => Some(ino),
                None => {
                    let known = names.known_names();
                    let known = if known.is_empty() {
                        format!(
                            "no lab is registered in {}",
                            tracer::nodes::registry_dir().display()
                        )
                    } else {
                        format!("known: {}", known.join(", "))
                    };
                    anyhow::bail!(
                        "no running lab has a node {node:?} ({known}); start the lab first \
                         (`cargo run -p lab -- up`) or give --netns-names FILE"
                    )
                }
            }
        }
    };
    tracer::filter::restrict(&mut filter, netns, c.ifindex);
    let mut o = RunOptions::new(mode);
    o.filter = filter;
    o.json = c.json;
    o.ready_file = c.ready_file;
    o.duration = c.duration.map(Duration::from_secs_f64);
    o.count = c.count;
    o.ring_kib = c.ring_kib;
    o.netns_names = c.netns_names;
    Ok(o)
}

fn main_result() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Everything the user typed is checked BEFORE anything touches the kernel.
    let opts = match cli.command {
        Command::Drops { common, explain } => {
            let mut o = options(Mode::Drops, common)?;
            o.explain = explain;
            o
        }
        Command::Path {
            common,
            track_skb,
            tracepoints,
        } => {
            let mut o = options(Mode::Path, common)?;
            o.track_skb = track_skb;
            o.tracepoints = tracepoints;
            o
        }
        Command::Bench { seconds } => {
            tracer::collection::check_privileges()?;
            return tracer::bench::run(Duration::from_secs_f64(seconds), &mut std::io::stdout());
        }
    };
    tracer::collection::check_privileges()?;
    let stop = run::stop_on_signals();
    let mut stdout = std::io::stdout().lock();
    let summary = run::run(&opts, &mut stdout, stop)?;
    eprintln!(
        "tracer: {} events, {} lost (ring buffer full), {} tracepoints attached in {:.1} ms",
        summary.events,
        summary.lost,
        summary.attached,
        summary.attach_time.as_secs_f64() * 1000.0
    );
    Ok(())
}

fn main() -> ExitCode {
    match main_result() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tracer: {e:#}");
            ExitCode::FAILURE
        }
    }
}
