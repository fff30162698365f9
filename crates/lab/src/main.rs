//! `lab` — the story's world as a program (run it through `cargo xtask repro` and
//! `cargo xtask lab …`).
//!
//! - `repro`: build the world, send the client's datagram, show what happened.
//! - `up`: build the world with the story's programs running and keep it until Ctrl-C.
//! - `exec NODE -- CMD…`: run a command inside a node of the world `up` keeps running.
//! - `script`: print the world as the `ip`/`iptables` commands that build it by hand.
//! - `bench`: time building and tearing down the world.
//!
//! Everything runs inside the sandbox of `netlab` (a private network namespace, and a
//! user namespace without root): nothing can touch the machine's own network.

mod bench;
mod exec;
mod repro;
mod repro_fix;
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
    /// Print the world as shell commands (`ip`, `iptables-restore`) to build it by hand.
    Script,
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
    if !matches!(cli.command, Command::Exec { .. }) {
        netlab::sandbox::enter();
    }
    let result: Result<i32> = match cli.command {
        Command::Repro => repro::run().map(|()| 0),
        Command::Up => up::run(),
        Command::Exec { lab, node, command } => exec::run(&node, &command, lab),
        Command::Script => {
            print!("{}", script());
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

/// The whole world as a shell script: topology, then each node's iptables rules.
fn script() -> String {
    let nat = story::reference_nat_rules();
    let mut text = story::story_world().to_shell();
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
