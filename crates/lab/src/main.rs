//! `lab` — the story's world as a program (run it through `cargo xtask repro` and
//! `cargo xtask lab …`).
//!
//! - `repro`: build the world, send the client's datagram, show what happened.
//! - `up`: build the world with the story's programs running and keep it until Ctrl-C.
//! - `exec NODE -- CMD…`: run a command inside a node of the world `up` keeps running.
//! - `capture NODE IFACE FILE [FILTER]`: capture an interface of a node into a pcap file.
//! - `script`: print the world as the `ip`/`iptables` commands that build it by hand.
//! - `bench`: time building and tearing down the world.
//!
//! Everything runs inside the sandbox of `netlab` (a private network namespace, and a
//! user namespace without root): nothing can touch the machine's own network.

mod bench;
mod capture;
mod exec;
mod repro;
mod repro_capture;
mod repro_fix;
#[cfg_attr(not(feature = "hop-table"), allow(dead_code))]
mod repro_verdicts;
mod run;
mod style;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "lab",
    about = "The story's world: reproduce it, run it, explore it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Reproduce the story end to end: the server answers, the client never hears it.
    Repro,
    /// Bring the world up with the story's programs and keep it until Ctrl-C.
    Up,
    /// Run a command inside a node of the running world (`lab exec dind2 -- cat /proc/net/nf_conntrack`).
    Exec {
        /// Which lab to join when several are running: its pid (the newest otherwise).
        #[arg(long, value_name = "PID")]
        lab: Option<u32>,
        /// host, dind1, dind2, server, client or peer.
        node: String,
        /// The command and its arguments (after `--`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        command: Vec<String>,
    },
    /// Capture an interface of a node of the running world into a pcap file, until
    /// Ctrl-C (`lab capture host br-dind story.pcap udp port 4000`). Filter: primitives
    /// joined by `and` — ip, udp, tcp, icmp, arp, [src|dst] host A, [udp|tcp] [src|dst] port N.
    Capture {
        /// Which lab to join when several are running: its pid (the newest otherwise).
        #[arg(long, value_name = "PID")]
        lab: Option<u32>,
        /// host, dind1, dind2, server, client or peer.
        node: String,
        /// An interface of that node (`br-dind` in host, `eth0` in dind2, …).
        interface: String,
        /// The pcap file to write (open it in Wireshark, or `tshark -r FILE`).
        file: std::path::PathBuf,
        /// Keep only the frames that match (default: every frame).
        filter: Vec<String>,
        /// Stop after this many seconds (default: at Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// (internal) `capture`, already inside the node's namespace.
    #[command(hide = true)]
    CaptureHere {
        node: String,
        interface: String,
        file: std::path::PathBuf,
        filter: Vec<String>,
        #[arg(long)]
        seconds: Option<u64>,
    },
    /// Print the world as shell commands (`ip`) to build it by hand; `--nat` adds
    /// Docker's NAT rules (`iptables-restore`), exercise 3's answer.
    Script {
        /// Also print Docker's NAT rules (the answer to exercise 3: a spoiler before it).
        #[arg(long)]
        nat: bool,
    },
    /// Bring the world up, run a script's steps in its nodes (`host$ ip route`, `ask
    /// hello`, `capture …`, `stop`), print each with its output, tear it down.
    Run {
        /// The script: one step per line (see crates/lab/src/run.rs).
        script: std::path::PathBuf,
        /// The world: the story's, or after the fix (exercise 8).
        #[arg(long, value_enum, default_value = "story")]
        world: run::World,
    },
    /// Print the world as an SVG picture (the book's figure, drawn from the topology).
    Svg,
    /// Time the world coming up and going down.
    Bench {
        /// How many rounds.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
}

fn main() {
    let cli = Cli::parse();
    // `exec` joins the namespaces of another lab process; everything else builds its own
    // world, in a sandbox entered now, while this process still has a single thread.
    if !matches!(
        cli.command,
        Command::Exec { .. } | Command::Capture { .. } | Command::CaptureHere { .. }
    ) {
        netlab::sandbox::enter();
    }
    let result: Result<i32> = match cli.command {
        Command::Repro => repro::run().map(|()| 0),
        Command::Up => up::run(),
        Command::Exec { lab, node, command } => exec::run(&node, &command, lab),
        Command::Capture {
            lab,
            node,
            interface,
            file,
            filter,
            seconds,
        } => capture::run(lab, &node, &interface, &file, &filter, seconds),
        Command::CaptureHere {
            node,
            interface,
            file,
            filter,
            seconds,
        } => capture::run_here(&node, &interface, &file, &filter, seconds),
        Command::Script { nat } => {
            print!("{}", script(nat));
            Ok(0)
        }
        Command::Run { script, world } => run::run(&script, world),
        Command::Svg => {
            print!("{}", story::story_world().to_svg());
            Ok(0)
        }
        Command::Bench { rounds } => bench::run(rounds).map(|()| 0),
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(error) => {
            eprintln!("{} {error:#}", style::red("error:"));
            std::process::exit(1);
        }
    }
}

/// The whole world as a shell script: topology, then (with `nat`) each node's
/// iptables rules — exercise 3's answer, so only when asked.
fn script(with_nat: bool) -> String {
    let nat = story::reference_nat_rules();
    let mut text = story::story_world().to_shell();
    if !with_nat {
        text.push_str(
            "# Docker's NAT rules are exercise 3's answer: `cargo xtask lab script --nat` prints them.\n",
        );
        return text;
    }
    for (node, rules) in [
        ("host", &nat.host),
        ("dind1", &nat.dind1),
        ("dind2", &nat.dind2),
    ] {
        text.push_str(&format!(
            "ip netns exec {node} iptables-restore <<'EOF'\n{rules}EOF\n"
        ));
    }
    text
}
