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
        /// Also write every event as a packet of this pcapng file (open it in Wireshark): its
        /// first 96 bytes from the IP header, the hop (tracepoint, netns, interface, drop
        /// reason) as the packet's comment.
        #[arg(long, value_name = "FILE")]
        pcap: Option<PathBuf>,
        /// Also show which nftables rule decided each packet's fate (iptables-nft rules
        /// too), under its hop, in these namespaces only: lab node names or netns inodes,
        /// comma-separated, e.g. `host,dind2`. Adds a table `inet tracer-PID` there while
        /// running (`meta nftrace set 1`); the machine's root namespace only if named by inode.
        #[arg(long, value_delimiter = ',', value_name = "NODE|INODE")]
        verdicts: Option<Vec<String>>,
    },
    /// Measure attach time, packets/s with and without the tracer, and event throughput.
    Bench {
        /// Seconds per measurement.
        #[arg(long, default_value_t = 3.0)]
        seconds: f64,
        /// Also print every number as one JSON object, after the tables.
        #[arg(long)]
        json: bool,
    },
    /// What this kernel offers the tracer: BTF, the kfree_skb prototype, tp_btf attach (as
    /// root). One `key: ok|untested|missing: …` line each; exit code 1 if something is missing.
    Kernel,
}

#[derive(Args)]
struct Common {
    /// pcap-filter expression (tcpdump syntax), evaluated in the kernel, e.g. `udp and port 4000`,
    /// `host 10.0.0.1 and (tcp or icmp)`, `not port 53`, `net 172.18.0.0/16`, `portrange 1000-2000`.
    /// Supported: and/&&, or/|| (equal precedence, left to right, as in tcpdump), not/!, ( ),
    /// ip ip6 arp rarp tcp udp sctp icmp icmp6 igmp, [ip|ip6] proto N,
    /// [ip|ip6|arp] [src|dst] host ADDR, [src|dst] net ADDR/LEN (or ADDR mask M),
    /// [tcp|udp|sctp] [src|dst] port N, [src|dst] portrange N-M. Anything else is refused before loading.
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
    /// Ring buffer size in KiB, a power of two from 4 to 2097152 (default 4096). A tiny one
    /// shows lost events.
    #[arg(long, value_parser = ring_kib)]
    ring_kib: Option<u32>,
    /// Node names for netns inodes: a JSON file {"pid": N, "nodes": {"NAME": INODE, ...}}.
    #[arg(long)]
    netns_names: Option<PathBuf>,
}

/// The largest ring buffer: its size in bytes must fit the kernel's 32-bit field, and be
/// a power of two — 2^31 bytes, 2 GiB.
const MAX_RING_KIB: u64 = 1 << 21;

/// `--ring-kib`: a power of two from 4 (one page) to [`MAX_RING_KIB`], each mistake named.
fn ring_kib(text: &str) -> Result<u32, String> {
    let kib: u64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a whole number of KiB"))?;
    if kib == 0 {
        return Err(
            "0 KiB holds no event: give at least 4 (one page), or leave --ring-kib out for the default 4096"
                .into(),
        );
    }
    if kib > MAX_RING_KIB {
        return Err(format!(
            "{kib} KiB is too large: the largest ring buffer is {MAX_RING_KIB} KiB (2 GiB)"
        ));
    }
    if kib < 4 {
        return Err(format!(
            "{kib} KiB is too small: a ring buffer is at least 4 KiB (one page)"
        ));
    }
    if !kib.is_power_of_two() {
        let below = 1u64 << (63 - kib.leading_zeros());
        return Err(format!(
            "{kib} is not a power of two, which the kernel requires: try {below} or {}",
            below * 2
        ));
    }
    Ok(kib as u32)
}

/// `1 tracepoint`, `30 tracepoints`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Does network namespace `inode` exist? A namespace lives while a task is in it, a file
/// descriptor holds it (as the course's labs do), or a bind mount pins it (`ip netns add`
/// puts one in /run/netns/). When /proc cannot be read, say yes: better no warning than
/// a wrong one.
fn netns_exists(inode: u64) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let want = format!("net:[{inode}]");
    let links_to = |path: &std::path::Path| {
        std::fs::read_link(path).is_ok_and(|target| target.as_os_str() == want.as_str())
    };
    let pinned = std::fs::read_dir("/run/netns").is_ok_and(|dir| {
        dir.flatten()
            .any(|e| e.metadata().is_ok_and(|m| m.ino() == inode))
    });
    if pinned {
        return true;
    }
    let Ok(processes) = std::fs::read_dir("/proc") else {
        return true;
    };
    processes.flatten().any(|process| {
        let dir = process.path();
        let in_a_task = std::fs::read_dir(dir.join("task")).is_ok_and(|tasks| {
            tasks
                .flatten()
                .any(|task| links_to(&task.path().join("ns/net")))
        });
        in_a_task
            || std::fs::read_dir(dir.join("fd"))
                .is_ok_and(|fds| fds.flatten().any(|fd| links_to(&fd.path())))
    })
}

/// Warn when no process holds network namespace `inode` right now: `--netns` with a
/// mistyped inode would otherwise wait in silence for events that can never come.
fn warn_unless_netns_exists(inode: u32) {
    if !netns_exists(inode as u64) {
        eprintln!(
            "tracer: warning: no process holds network namespace {inode} right now \
             (`ls -lL /proc/*/ns/net` lists those that exist): nothing will match unless it appears later"
        );
    }
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
    if let (Some(inode), None) = (c.netns, &c.node) {
        warn_unless_netns_exists(inode);
    }
    tracer::filter::restrict(&mut filter, netns, c.ifindex);
    let mut o = RunOptions::new(mode);
    o.filter = filter;
    o.json = c.json;
    o.ready_file = c.ready_file;
    o.duration = c.duration.map(Duration::from_secs_f64);
    o.count = c.count;
    o.ring_kib = c.ring_kib.unwrap_or(0); // 0: the default
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
            pcap,
            verdicts,
        } => {
            let mut o = options(Mode::Path, common)?;
            o.track_skb = track_skb;
            o.tracepoints = tracepoints;
            o.pcap = pcap;
            if let Some(names) = verdicts {
                let nodes = tracer::nodes::NodeNames::new(
                    Some(tracer::nodes::registry_dir()),
                    o.netns_names.as_deref(),
                )?;
                o.verdicts = tracer::nftrace::resolve(&names, &nodes)?;
            }
            o
        }
        Command::Kernel => {
            if !tracer::capabilities::print(true)? {
                std::process::exit(1);
            }
            return Ok(());
        }
        Command::Bench { seconds, json } => {
            tracer::collection::check_privileges()?;
            let options = tracer::bench::Options {
                per: Duration::from_secs_f64(seconds),
                json,
            };
            return tracer::bench::run(&options, &mut std::io::stdout());
        }
    };
    tracer::collection::check_privileges()?;
    let stop = run::stop_on_signals();
    let mut stdout = std::io::stdout().lock();
    let summary = run::run(&opts, &mut stdout, stop)?;
    eprintln!(
        "tracer: {}, {} lost (ring buffer full), {} attached in {:.1} ms",
        count(summary.events as usize, "event"),
        summary.lost,
        count(summary.attached, "tracepoint"),
        summary.attach_time.as_secs_f64() * 1000.0
    );
    if let Some(path) = &opts.pcap {
        eprintln!(
            "tracer: {} written to {}",
            count(summary.events as usize, "packet"),
            path.display()
        );
    }
    if summary.lost_verdicts > 0 {
        eprintln!(
            "tracer: nftables trace events were lost {} (the tracer's netlink socket was full): \
             narrow the traffic or the namespaces",
            count(summary.lost_verdicts as usize, "time")
        );
    }
    if summary.unmatched_verdicts > 0 {
        eprintln!(
            "tracer: {} matched no hop shown (their packets were not traced: filter, tracepoints)",
            count(summary.unmatched_verdicts as usize, "nftables verdict")
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sizes_are_refused_with_the_right_reason() {
        assert_eq!(ring_kib("4096"), Ok(4096));
        assert_eq!(ring_kib("4"), Ok(4));
        assert_eq!(ring_kib("2097152"), Ok(2_097_152));
        assert!(ring_kib("0").unwrap_err().contains("0 KiB holds no event"));
        for too_large in ["4194304", "4294967296", "99999999999999"] {
            let error = ring_kib(too_large).unwrap_err();
            assert!(error.contains("too large"), "{too_large}: {error}");
        }
        assert!(ring_kib("2").unwrap_err().contains("too small"));
        assert_eq!(
            ring_kib("3000").unwrap_err(),
            "3000 is not a power of two, which the kernel requires: try 2048 or 4096"
        );
        assert!(ring_kib("lots").unwrap_err().contains("not a whole number"));
    }

    #[test]
    fn counts_agree_with_their_noun() {
        assert_eq!(count(1, "tracepoint"), "1 tracepoint");
        assert_eq!(count(0, "event"), "0 events");
        assert_eq!(count(30, "tracepoint"), "30 tracepoints");
    }

    #[test]
    fn our_own_namespace_exists_and_a_made_up_one_does_not() {
        use std::os::unix::fs::MetadataExt as _;
        let ours = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        assert!(netns_exists(ours));
        // Namespace inodes live in the proc filesystem's own range (near 2^32); 1 is not one.
        assert!(!netns_exists(1));
    }

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
