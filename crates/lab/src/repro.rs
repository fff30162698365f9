//! `lab repro` — the main job: the story, reproduced end to end and explained from
//! what the kernel reports.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use story::{Outcome, Story};

use crate::style::{bold, dim, green, red};

mod homework;
#[cfg(feature = "hop-table")]
mod hop_ct;
#[cfg_attr(not(feature = "hop-table"), allow(dead_code))]
mod journey;

/// How long the client waits, as in the story (it simply times out).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

pub fn run() -> Result<()> {
    println!(
        "{}",
        bold("Where did my UDP packet go? — the story, reproduced in network namespaces")
    );
    println!("{}", dim("Retold from \"SRE 日志:我的包去哪了?\" by Manjusaka. Nothing here touches your real network."));

    step(
        1,
        "Building the world: 6 namespaces, 5 cables, Docker 20.10's NAT rules",
    );
    let started = Instant::now();
    let story = Story::reference(true).context("building the world")?;
    println!("  built in {:.0?}\n", started.elapsed());
    for line in story::story_world().picture().lines() {
        println!("  {line}");
    }

    step(2, "Programs: the echo server in `server` (0.0.0.0:4000), the userland proxy in `host` (0.0.0.0:4000)");

    let hop_tracer = hops::start();
    let verdict_tracer = crate::repro_verdicts::start(&story);
    let bridge_capture = crate::repro_capture::start(&story);

    step(
        3,
        "The client (172.17.0.2:34320, inside dind2) sends \"hello\" to 192.168.0.239:4000",
    );
    let to: SocketAddr = format!("{}:{}", story::HOST_LAN, story::PORT).parse()?;
    let outcome = story.client_ask(to, b"hello", CLIENT_TIMEOUT)?;
    let logged = story.server_log(Duration::from_millis(500));
    match &outcome {
        Outcome::NoReply { waited } => {
            println!("  [client] {} after {waited:.1?}", red("no reply"))
        }
        Outcome::Reply { from, .. } => println!("  [client] {} from {from}", green("reply")),
    }
    if logged.is_none() {
        println!("  [server] never received anything");
    }
    // Take the tracer's events before the capture reads its frames: those reads are
    // kernel events too (skb copies), not part of the story.
    let hop_records = hops::finish(hop_tracer);
    crate::repro_verdicts::finish(verdict_tracer);
    crate::repro_capture::show(bridge_capture);

    hops::show(hop_records, &story);

    // From /proc, or over netlink on kernels built without /proc/net/nf_conntrack.
    let (table, source) = netlab::conntrack::read_any(story.world.node("dind2")?)?;
    let from = match source {
        netlab::conntrack::Source::ProcFs => "/proc/net/nf_conntrack inside dind2",
        netlab::conntrack::Source::Netlink => "read over netlink inside dind2",
        netlab::conntrack::Source::ConntrackTool => "`conntrack -L -o extended` inside dind2",
    };
    step(5, &format!("dind2's conntrack table ({from})"));
    for line in table.lines().filter(|l| l.contains("udp")) {
        println!("  {}", compact(line));
    }
    if let Some(explanation) = explain(&table) {
        println!("\n  {}", bold(&explanation));
    }

    step(
        6,
        "Control: the same client talks to dind1 directly (172.18.0.2:4000)",
    );
    let direct: SocketAddr = format!("{}:{}", story::DIND1, story::PORT).parse()?;
    // A fresh flow: the first one still occupies port 34320 in dind2's conntrack.
    let control = story.client_ask(direct, b"hello again", CLIENT_TIMEOUT)?;
    let _ = story.server_log(Duration::from_millis(500));
    match &control {
        Outcome::Reply { from, .. } => println!("  [client] {} from {from}", green("reply")),
        Outcome::NoReply { waited } => {
            println!("  [client] {} after {waited:.1?}", red("no reply"))
        }
    }

    crate::repro_fix::run(7)?;
    homework::run(8)?;

    println!();
    let reproduced = matches!(outcome, Outcome::NoReply { .. })
        && logged.is_some()
        && matches!(control, Outcome::Reply { .. });
    if reproduced {
        println!(
            "{} the server answered, the client never heard it — only on the proxy path.",
            green("Reproduced:")
        );
        println!("Next: `cargo xtask check 1` starts the course; `cargo xtask lab up` keeps this world running to explore.");
        Ok(())
    } else {
        anyhow::bail!("the story did not reproduce on this machine (client: {outcome:?}, control: {control:?}); please report it with the output of `cargo xtask doctor`")
    }
}

/// The hop table: every place the story's datagrams were seen in the kernel, from the
/// course's eBPF tracer (exercise 7's answer). Needs root, and a lab built with the
/// `hop-table` feature (`cargo xtask repro` turns it on when it can).
mod hops {
    #[cfg(feature = "hop-table")]
    pub type Tracer = solution_skb_path::PathTracer;
    #[cfg(not(feature = "hop-table"))]
    pub type Tracer = ();
    #[cfg(feature = "hop-table")]
    pub type Records = anyhow::Result<Vec<solution_skb_path::Record>>;
    #[cfg(not(feature = "hop-table"))]
    pub type Records = ();

    /// Start tracing before the client sends, if this process can.
    pub fn start() -> Option<Tracer> {
        #[cfg(feature = "hop-table")]
        // The story's datagrams, and the ICMP errors about them sent to the proxy's address
        // (their conntrack entry names the datagram that caused them: see `hop_ct`).
        match solution_skb_path::PathTracer::start(&format!(
            "(udp and port {}) or (icmp and host {})",
            story::PORT,
            story::HOST_BRIDGE_ADDRESS
        )) {
            Ok(tracer) => return Some(tracer),
            Err(error) => println!("  (no hop table: {error:#})"),
        }
        None
    }

    /// Stop tracing, with every event reported until then.
    pub fn finish(tracer: Option<Tracer>) -> Option<Records> {
        #[cfg(feature = "hop-table")]
        if let Some(mut tracer) = tracer {
            use std::time::Duration;
            return Some(tracer.records(Duration::from_millis(300), Duration::from_secs(10)));
        }
        let _ = tracer;
        None
    }

    /// Print the hop table of what the tracer saw.
    pub fn show(records: Option<Records>, story: &story::Story) {
        super::step(
            4,
            "The skb, hop by hop (eBPF on every tracepoint that carries an skb)",
        );
        #[cfg(feature = "hop-table")]
        if let Some(records) = records {
            let node_of = |netns: u32| {
                story
                    .world
                    .node_by_inode(netns.into())
                    .map(|n| n.name.clone())
            };
            match records {
                Ok(records) => {
                    let records: Vec<_> = records
                        .into_iter()
                        .filter(|r| node_of(r.netns).is_some())
                        .collect();
                    let table = solution_skb_path::hops(&records);
                    let text = solution_skb_path::format_hop_table(&table, node_of);
                    let ct_readable = super::hop_ct::readable();
                    let text = match &ct_readable {
                        Ok(()) => super::hop_ct::annotate(&text, &table, &records),
                        Err(_) => text,
                    };
                    // Under each hop, the netfilter rules that decided there (the host's).
                    let rows: Vec<_> = table
                        .iter()
                        .map(|h| (h.netns, h.tuple.clone(), h.first_ns))
                        .collect();
                    let text = crate::repro_verdicts::annotate(&text, &rows);
                    // The book's figure of this table (`cargo xtask book --refresh`).
                    if let Some(path) = std::env::var_os("LAB_JOURNEY_SVG") {
                        let steps: Vec<super::journey::Step> = table
                            .iter()
                            .filter(|hop| !hop.tuple.contains(" type ")) // not the ICMP errors
                            .map(|hop| super::journey::Step {
                                node: node_of(hop.netns).unwrap_or_default(),
                                tuple: hop.tuple.clone(),
                                dropped: hop.drop_reason.clone(),
                            })
                            .collect();
                        if let Err(error) = std::fs::write(&path, super::journey::svg(&steps)) {
                            println!("  (cannot write the journey's picture: {error})");
                        }
                    }
                    for line in text.lines() {
                        println!("  {line}");
                    }
                    if let Err(why) = &ct_readable {
                        println!("  (no conntrack per hop on this kernel: {why})");
                    }
                    let answer = format!(
                        "{}:{}>{}:{}",
                        story::HOST_BRIDGE_ADDRESS,
                        story::PORT,
                        story::DIND2,
                        story::CLIENT_PORT
                    );
                    if let Some(words) =
                        super::hop_ct::story(&table, &records, node_of, "dind2", &answer)
                    {
                        println!();
                        for line in words.lines() {
                            println!("  {}", super::bold(line));
                        }
                    }
                }
                Err(error) => println!("  (the tracer failed: {error:#})"),
            }
            return;
        }
        let _ = (records, story);
        println!(
            "  (skipped: the hop table needs root and the eBPF toolchain. Build as yourself, run as root:\n   \
             cargo build -p lab --features hop-table && sudo -E target/debug/lab repro)"
        );
    }
}

fn step(number: u32, title: &str) {
    println!("\n{} {}", bold(&format!("{number}.")), bold(title));
}

/// Drop the columns that do not matter here (`ipv4 2 udp 17 27` → `udp`).
fn compact(line: &str) -> String {
    line.split_whitespace()
        .filter(|w| w.contains('=') || w.starts_with('['))
        .filter(|w| !w.starts_with("mark=") && !w.starts_with("zone=") && !w.starts_with("use="))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Read the story out of a conntrack table, parsed into typed entries by exercise 6's
/// reference answer: the client's flow waits for an answer from one address; the answer
/// that actually came is claimed by no flow but the one it started itself.
fn explain(table: &str) -> Option<String> {
    use solution_conntrack::{claimant, parse_table, Direction, Protocol, L4};
    let entries = parse_table(table).ok()?;
    // The client's flow: UDP from its port to the published port.
    let client = L4::Ports {
        sport: story::CLIENT_PORT,
        dport: story::PORT,
    };
    let request = entries
        .iter()
        .find(|e| e.protocol == Protocol::Udp && e.original.l4 == client)?;
    let expected = request.reply;
    // The answer that came: same destination and ports as the expected one, another
    // source. Conntrack claims it for no flow but the one it started itself.
    let arrived = entries
        .iter()
        .map(|e| e.original)
        .find(|t| t.dst == expected.dst && t.l4 == expected.l4 && t.src != expected.src)?;
    let claim = claimant(&entries, &Protocol::Udp, &arrived)?;
    if claim.direction != Direction::Original || claim.entry == request {
        return None;
    }
    let L4::Ports { sport, dport } = expected.l4 else {
        return None;
    };
    Some(format!(
        "dind2 expected the answer from {}:{sport}; it came from {}:{sport}. No conntrack match, so no reverse NAT,\n  \
         so no socket for {}:{dport}: the kernel drops it (NO_SOCKET) and answers with ICMP port unreachable.",
        expected.src, arrived.src, expected.dst
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2\n\
ipv4     2 udp      17 27 src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED] src=172.18.0.3 dst=172.18.0.1 sport=34320 dport=4000 mark=0 zone=0 use=2\n";

    #[test]
    fn the_explanation_names_the_expected_and_the_actual_source() {
        let text = explain(TABLE).unwrap();
        assert!(
            text.contains(
                "expected the answer from 192.168.0.239:4000; it came from 172.18.0.1:4000"
            ),
            "{text}"
        );
        assert!(text.contains("no socket for 172.18.0.3:34320"), "{text}");
    }

    #[test]
    fn compact_keeps_the_tuples_and_flags() {
        let line = compact(TABLE.lines().next().unwrap());
        assert_eq!(line, "src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320");
    }
}
