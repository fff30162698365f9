//! `lab repro`, the fix: the same world and the same client, four times — with Docker
//! 20.10's proxy (the story: lost), the course's fixed proxy (exercise 8: `IP_PKTINFO`),
//! Docker 28's own fixed docker-proxy (moby/moby#48571), and hairpin NAT with no proxy at
//! all (`userland-proxy: false`). Each row is a fresh world, and each verdict is read
//! from the kernel: the source of the answer the client's socket received, dind2's
//! conntrack entry for the client, and dind2's `Udp NoPorts` counter (NO_SOCKET drops).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use story::{NatRules, Outcome, Story};

use crate::style::{bold, dim, green, red};

/// Long enough for an answer that comes (well under a millisecond here); the lost one
/// costs exactly this.
const TIMEOUT: Duration = Duration::from_secs(1);

/// What runs in `host` in one row.
enum Setup {
    /// Docker's own docker-proxy binary.
    DockerProxy(PathBuf),
    /// The course's proxy of exercise 3 (docker-proxy 20.10's behaviour, bug included).
    BuggyProxy,
    /// The course's fixed proxy of exercise 8.
    FixedProxy,
    /// Exercise 8's hairpin NAT rules, no proxy.
    HairpinNat,
}

struct Row {
    label: String,
    setup: Setup,
    /// Should the client get its answer?
    delivers: bool,
}

/// Step `number` of `repro`: before and after the fix, side by side.
pub fn run(number: u32) -> Result<()> {
    println!(
        "\n{} {}",
        bold(&format!("{number}.")),
        bold("The fix: the same client, the same world — four ways to publish port 4000")
    );
    let started = Instant::now();
    let mut rows = Vec::new();
    match story::docker_proxy_path() {
        Some(path) => rows.push(Row {
            label: format!("{} (the story)", docker_proxy_name(&path, "20.10")),
            setup: Setup::DockerProxy(path),
            delivers: false,
        }),
        None => rows.push(Row {
            label: "the course's proxy of exercise 3 (as docker-proxy 20.10)".into(),
            setup: Setup::BuggyProxy,
            delivers: false,
        }),
    }
    rows.push(Row {
        label: "the course's fixed proxy (IP_PKTINFO, exercise 8)".into(),
        setup: Setup::FixedProxy,
        delivers: true,
    });
    let docker_28 = story::docker_proxy_28_path();
    if let Some(path) = &docker_28 {
        rows.push(Row {
            label: format!("{} (moby/moby#48571)", docker_proxy_name(path, "28")),
            setup: Setup::DockerProxy(path.clone()),
            delivers: true,
        });
    }
    rows.push(Row {
        label: "hairpin NAT, no proxy (userland-proxy: false)".into(),
        setup: Setup::HairpinNat,
        delivers: true,
    });

    println!(
        "  {}",
        dim(&format!(
            "{:<50} {:<34} {:<14} {}",
            "in host", "the client", "dind2's entry", "NO_SOCKET drops in dind2"
        ))
    );
    let mut surprises = Vec::new();
    for row in &rows {
        let (outcome, replied, no_ports) = try_once(&row.setup)
            .with_context(|| format!("running the story with {}", row.label))?;
        let client = match &outcome {
            Outcome::Reply { from, .. } => green(&format!("{:<34}", format!("reply from {from}"))),
            Outcome::NoReply { waited } => {
                red(&format!("{:<34}", format!("no reply after {waited:.1?}")))
            }
        };
        let entry = if replied { "replied" } else { "[UNREPLIED]" };
        println!("  {:<50} {client} {entry:<14} {no_ports}", row.label);
        let expected_source: SocketAddr = format!("{}:{}", story::HOST_LAN, story::PORT).parse()?;
        let delivered = matches!(&outcome, Outcome::Reply { from, .. } if *from == expected_source);
        if delivered != row.delivers {
            surprises.push(row.label.clone());
        }
    }
    if docker_28.is_none() {
        println!(
            "  {}",
            dim("(Docker 28's docker-proxy is not in .course/tools/: `cargo xtask setup` fetches it from Debian sid's docker.io)")
        );
    }
    println!(
        "  {}",
        dim(&format!(
            "{} worlds in {:.1?}",
            rows.len(),
            started.elapsed()
        ))
    );
    if !surprises.is_empty() {
        bail!(
            "the fix did not behave as the course expects for: {}; please report it with the output of `cargo xtask doctor`",
            surprises.join(", ")
        );
    }
    println!(
        "\n  {}",
        bold("Answered from the address the client wrote to, the answer matches dind2's conntrack entry and comes home.")
    );
    Ok(())
}

/// Exercise 8's hairpin NAT (the reference answer), for the three docker networks of the
/// story: the fix without a proxy.
pub(crate) fn hairpin_rules() -> NatRules {
    NatRules::from_fn(|network| {
        let published: Vec<solution_fix::Publish> = network
            .published
            .iter()
            .map(|&(protocol, host_port, container)| solution_fix::Publish {
                protocol,
                host_port,
                container,
            })
            .collect();
        solution_fix::hairpin_nat_rules(network.bridge, network.subnet, &published)
    })
}

/// One fresh world with `setup` in host; the client asks once. Returns what the client
/// got, whether dind2's entry for the client saw an answer, and dind2's `Udp NoPorts`.
fn try_once(setup: &Setup) -> Result<(Outcome, bool, u64)> {
    let nat = match setup {
        Setup::HairpinNat => hairpin_rules(),
        _ => story::reference_nat_rules(),
    };
    let story = match setup {
        // The story as the lab always builds it: Docker 20.10's NAT, the buggy proxy.
        Setup::BuggyProxy => Story::reference(false)?,
        Setup::DockerProxy(path) => {
            let mut story = Story::up(&nat, false)?;
            story.start_docker_proxy(path)?;
            story
        }
        Setup::FixedProxy => {
            let mut story = Story::up(&nat, false)?;
            story.start_proxy(solution_fix::run_fixed_udp_proxy)?;
            story
        }
        Setup::HairpinNat => Story::up(&nat, false)?,
    };
    let to: SocketAddr = format!("{}:{}", story::HOST_LAN, story::PORT).parse()?;
    let outcome = story.client_ask(to, b"hello", TIMEOUT)?;
    let table = story.world.conntrack("dind2")?;
    let replied = table
        .lines()
        .find(|l| l.contains("src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000"))
        .is_some_and(|l| !l.contains("[UNREPLIED]"));
    let snmp = story.world.node("dind2")?.read_proc_net("snmp")?;
    Ok((outcome, replied, udp_no_ports(&snmp).unwrap_or(0)))
}

/// `Udp NoPorts` from a `/proc/net/snmp` text.
fn udp_no_ports(snmp: &str) -> Option<u64> {
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next()?, udp.next()?);
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "NoPorts")
        .and_then(|(_, value)| value.parse().ok())
}

/// `docker-proxy 28.5.2`, from `docker-proxy -v` when the binary says (28 does; 20.10
/// has no `-v`), else `docker-proxy <fallback>`.
fn docker_proxy_name(path: &std::path::Path, fallback: &str) -> String {
    let version = std::process::Command::new(path)
        .arg("-v")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            let version = text.split("version ").nth(1)?.split(['+', '\n']).next()?;
            Some(version.trim().to_string())
        });
    format!("docker-proxy {}", version.as_deref().unwrap_or(fallback))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_ports_is_read_from_the_udp_lines() {
        let snmp = "Udp: InDatagrams NoPorts InErrors OutDatagrams\nUdp: 3 1 0 2\nUdpLite: InDatagrams NoPorts\nUdpLite: 0 0\n";
        assert_eq!(udp_no_ports(snmp), Some(1));
        assert_eq!(udp_no_ports("Ip: Forwarding\nIp: 1\n"), None);
    }
}
