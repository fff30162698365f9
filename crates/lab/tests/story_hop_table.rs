//! The story's hop table says it (issue 10): `lab repro`, run for real as root, prints under
//! every hop the conntrack entry its skb carried (`└ ct:`) and, under the host's hop of the
//! client's datagram, the netfilter rules that decided its fate (`↳ nft`). These tests run the
//! built `lab` (with the `hop-table` feature) — the lab's own code, in fresh namespaces of its
//! own sandbox — and read the story out of the table it printed, as a learner would.
//!
//! Nothing about this kernel is written down here: the proxy's source port and the nodes'
//! netns inodes are learnt from the table itself; the addresses and ports are the story's
//! (`story` crate), which the lab chooses. Status bits are checked one by one (the bits a
//! kernel adds besides the ones the story is about do not matter), tuples exactly.
//!
//! Root only (eBPF, nftables tracing): without it the test prints `SKIPPED: …` and fails —
//! a skip is never a pass. `cargo xtask test` runs it as its own step.

netlab::sandbox!();

mod support;

use std::collections::HashMap;
use std::process::Command;

/// One conntrack entry of a `└ ct:` line, as `tracer::conntrack::Ct::compact` writes it
/// (`new orig A reply B [CONFIRMED,SRC_NAT] (SNAT)`), or `None` where the skb had none.
#[derive(Debug, Clone, PartialEq)]
struct Ct {
    state: String,
    orig: Option<String>,
    reply: Option<String>,
    status: Vec<String>,
    /// `SNAT`, `DNAT`, `SNAT+DNAT` or `no NAT`.
    nat: Option<String>,
}

impl Ct {
    fn has(&self, bit: &str) -> bool {
        self.status.iter().any(|s| s == bit)
    }
}

/// One row of the hop table with the lines printed under it.
#[derive(Debug)]
struct Hop {
    line: String,
    node: String,
    inode: u64,
    tuple: String,
    /// `✗ DROPPED: REASON` → `REASON`.
    dropped: Option<String>,
    /// The `└ ct:` line, verbatim (without its indentation).
    ct_line: Option<String>,
    /// The entries of that line in order (`none → new …`), `None` for "no entry".
    cts: Vec<Option<Ct>>,
    /// The `↳ nft` lines under the hop, without that prefix.
    verdicts: Vec<String>,
}

impl Hop {
    /// The entry the skb carried last in this hop.
    fn last_ct(&self) -> Option<&Ct> {
        self.cts.last().and_then(Option::as_ref)
    }
}

fn parse_ct(text: &str) -> Option<Ct> {
    if text == "none" {
        return None;
    }
    let (body, nat) = match text.rfind(" (") {
        Some(at) if text.ends_with(')') => (&text[..at], Some(text[at + 2..text.len() - 1].into())),
        _ => (text, None),
    };
    let mut words = body.split_whitespace();
    let mut ct = Ct {
        state: words.next().unwrap_or_default().into(),
        orig: None,
        reply: None,
        status: Vec::new(),
        nat,
    };
    while let Some(word) = words.next() {
        match word {
            "orig" => ct.orig = words.next().map(Into::into),
            "reply" => ct.reply = words.next().map(Into::into),
            bits if bits.starts_with('[') => {
                ct.status = bits
                    .trim_matches(['[', ']'])
                    .split(',')
                    .map(Into::into)
                    .collect();
            }
            _ => {} // `unconfirmed`: said again by the missing CONFIRMED bit
        }
    }
    Some(ct)
}

/// The hop table of `lab repro`'s output: the lines of its step 4 from the header
/// (`HOP  TIME  NODE (NETNS) …`) to the first blank line.
fn parse_table(stdout: &str) -> Vec<Hop> {
    let mut hops: Vec<Hop> = Vec::new();
    let lines = stdout
        .lines()
        .map(str::trim)
        .skip_while(|line| !line.starts_with("HOP "))
        .skip(1)
        .take_while(|line| !line.is_empty());
    for line in lines {
        if let Some(ct) = line.strip_prefix("└ ct: ") {
            let hop = hops.last_mut().expect("a ct line under a hop");
            assert!(hop.ct_line.is_none(), "two ct lines under {}", hop.line);
            hop.ct_line = Some(line.to_string());
            if ct != "none on the skb" {
                hop.cts = ct.split(" → ").map(parse_ct).collect();
            }
        } else if let Some(verdict) = line.strip_prefix("↳ nft ") {
            let hop = hops.last_mut().expect("a verdict under a hop");
            hop.verdicts.push(verdict.to_string());
        } else {
            // `  4  +0.090ms  dind2 (4026532453)  172.18.0.3:34320 > 192.168.0.239:4000  events…  ✗ DROPPED: R`:
            // columns are separated by two spaces or more, a tuple's words by one.
            let columns: Vec<&str> = line
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect();
            assert!(
                columns.len() >= 5 && columns[0].parse::<u32>().is_ok(),
                "not a hop line: {line:?}"
            );
            let (node, inode) = columns[2]
                .strip_suffix(')')
                .and_then(|c| c.split_once(" ("))
                .unwrap_or_else(|| panic!("no `node (inode)` in {line:?}"));
            hops.push(Hop {
                line: line.to_string(),
                node: node.to_string(),
                inode: inode
                    .parse()
                    .unwrap_or_else(|_| panic!("inode in {line:?}")),
                tuple: columns[3].to_string(),
                dropped: columns[5..]
                    .iter()
                    .find_map(|c| c.strip_prefix("✗ DROPPED: "))
                    .map(Into::into),
                ct_line: None,
                cts: Vec::new(),
                verdicts: Vec::new(),
            });
        }
    }
    hops
}

/// `lab repro`'s output, and its hops; the test fails (with the output) if the story did not
/// reproduce or printed no table.
fn run_repro() -> (String, Vec<Hop>) {
    // Real root, not root of a user namespace: eBPF and nftables tracing need it.
    if !nix::unistd::geteuid().is_root() || netlab::require_sandbox().user_namespace {
        netlab::skip!(
            "the story's hop table needs root (eBPF, nftables tracing): build as yourself with \
             `cargo test -p lab --features hop-table --test story_hop_table --no-run`, then run \
             the test binary it names with `sudo -E`"
        );
    }
    let mut command = Command::new(support::LAB);
    command.arg("repro").env("NO_COLOR", "1");
    let out = support::run(command);
    assert!(
        out.status.success(),
        "lab repro failed ({}):\n{}\n{}",
        out.status,
        out.stdout,
        out.stderr
    );
    let hops = parse_table(&out.stdout);
    assert!(
        hops.len() >= 10,
        "no hop table in lab repro's output:\n{}",
        out.stdout
    );
    (out.stdout, hops)
}

/// The story's addresses and ports as the hop table writes them: `a:p > b:q` for a row,
/// `a:p>b:q` inside a ct line.
/// The address of both the client (in dind2) and the server (in dind1): each container is
/// the first one on its own Docker bridge, 172.17.0.0/16, as in the story.
const CONTAINER: &str = "172.17.0.2";

fn row(src: &str, sport: u16, dst: &str, dport: u16) -> String {
    format!("{src}:{sport} > {dst}:{dport}")
}
fn ct_tuple(src: &str, sport: u16, dst: &str, dport: u16) -> String {
    format!("{src}:{sport}>{dst}:{dport}")
}

#[test]
fn the_story_s_hop_table_shows_conntrack_at_every_hop_and_the_docker_return() {
    let started = std::time::Instant::now();
    let (stdout, hops) = run_repro();
    let table = || {
        let lines: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.trim().starts_with("HOP "))
            .take_while(|l| !l.trim().is_empty())
            .collect();
        lines.join("\n")
    };
    let (port, client_port) = (story::PORT, story::CLIENT_PORT);
    let (lan, dind1, dind2, bridge, inner) = (
        story::HOST_LAN,
        story::DIND1,
        story::DIND2,
        story::HOST_BRIDGE_ADDRESS,
        CONTAINER,
    );
    let find = |node: &str, tuple: &str| -> Vec<&Hop> {
        hops.iter()
            .filter(|h| h.node == node && h.tuple == tuple)
            .collect()
    };

    // Each node is one namespace, named with its inode; two nodes never share one.
    let mut inodes: HashMap<&str, u64> = HashMap::new();
    for hop in &hops {
        let known = *inodes.entry(&hop.node).or_insert(hop.inode);
        assert_eq!(
            known,
            hop.inode,
            "{} has two inodes:\n{}",
            hop.node,
            table()
        );
    }
    let mut distinct: Vec<u64> = inodes.values().copied().collect();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), inodes.len(), "{inodes:?}");

    // 1. Every hop has its conntrack line.
    for hop in &hops {
        assert!(
            hop.ct_line.is_some(),
            "no `└ ct:` line under hop {:?}:\n{}",
            hop.line,
            table()
        );
    }

    // 2. The client's datagram in dind2, after MASQUERADE: its entry is set up for SNAT and
    //    waits for the answer from the address the client wrote to.
    let snatted = row(dind2, client_port, lan, port);
    let sent = find("dind2", &snatted);
    assert!(!sent.is_empty(), "no dind2 hop of {snatted}:\n{}", table());
    for hop in &sent {
        let ct = hop.last_ct().unwrap_or_else(|| {
            panic!(
                "the client's datagram carries no entry in dind2: {:?}",
                hop.ct_line
            )
        });
        assert_eq!(
            ct.orig,
            Some(ct_tuple(CONTAINER, client_port, lan, port)),
            "{:?}",
            hop.ct_line
        );
        assert_eq!(
            ct.reply,
            Some(ct_tuple(lan, port, dind2, client_port)),
            "{:?}",
            hop.ct_line
        );
        assert!(ct.has("SRC_NAT") && !ct.has("DST_NAT"), "{:?}", hop.ct_line);
        assert_eq!(ct.nat.as_deref(), Some("SNAT"), "{:?}", hop.ct_line);
    }

    // The proxy's datagram to dind1, from the host's port P (learnt here: the kernel chose it).
    let proxied = hops
        .iter()
        .find(|h| {
            h.node == "host"
                && h.tuple.starts_with(&format!("{bridge}:"))
                && h.tuple.ends_with(&format!(" > {dind1}:{port}"))
        })
        .unwrap_or_else(|| panic!("no hop of the proxy's datagram in the host:\n{}", table()));
    let proxy_port: u16 = proxied.tuple[bridge.len() + 1..]
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {:?}", proxied.tuple));
    let proxy_flow = ct_tuple(bridge, proxy_port, dind1, port);

    // 3. In dind1, after Docker's DNAT to the server: the entry has DST_NAT set up.
    let dnatted = find("dind1", &row(bridge, proxy_port, inner, port));
    assert!(
        !dnatted.is_empty(),
        "no dind1 hop of the DNATed datagram:\n{}",
        table()
    );
    for hop in &dnatted {
        let ct = hop
            .last_ct()
            .unwrap_or_else(|| panic!("no entry: {:?}", hop.ct_line));
        assert_eq!(ct.orig.as_ref(), Some(&proxy_flow), "{:?}", hop.ct_line);
        assert_eq!(
            ct.reply,
            Some(ct_tuple(inner, port, bridge, proxy_port)),
            "{:?}",
            hop.ct_line
        );
        assert!(ct.has("DST_NAT") && !ct.has("SRC_NAT"), "{:?}", hop.ct_line);
        assert_eq!(ct.nat.as_deref(), Some("DNAT"), "{:?}", hop.ct_line);
    }

    // 4. The server's answer to the proxy, in dind1 (before and after the reverse DNAT) and in
    //    the host: the reply direction of the proxy's entry, which has seen its reply.
    let answer_hops: Vec<&Hop> = [
        ("dind1", row(inner, port, bridge, proxy_port)),
        ("dind1", row(dind1, port, bridge, proxy_port)),
        ("host", row(dind1, port, bridge, proxy_port)),
    ]
    .iter()
    .flat_map(|(node, tuple)| {
        let found = find(node, tuple);
        assert!(!found.is_empty(), "no {node} hop of {tuple}:\n{}", table());
        found
    })
    .collect();
    for hop in answer_hops {
        let ct = hop
            .last_ct()
            .unwrap_or_else(|| panic!("no entry: {:?}", hop.ct_line));
        assert_eq!(ct.state, "reply", "{:?}", hop.ct_line);
        assert_eq!(ct.orig.as_ref(), Some(&proxy_flow), "{:?}", hop.ct_line);
        assert!(ct.has("SEEN_REPLY"), "{:?}", hop.ct_line);
    }

    // 5. The proxy's answer to the client reaches dind2 from 172.18.0.1:4000, not from the
    //    address the client wrote to: no socket wants it, the kernel drops it.
    let answer = row(bridge, port, dind2, client_port);
    //    In the host it is a flow of its own (the proxy's socket sends it), not a reply to the
    //    client's datagram: a new entry, with itself as ORIGINAL tuple.
    let leaving = find("host", &answer);
    assert!(!leaving.is_empty(), "no host hop of {answer}:\n{}", table());
    for hop in &leaving {
        let ct = hop
            .last_ct()
            .unwrap_or_else(|| panic!("no entry: {:?}", hop.ct_line));
        assert_eq!(ct.state, "new", "{:?}", hop.ct_line);
        let orig = ct_tuple(bridge, port, dind2, client_port);
        assert_eq!(ct.orig.as_ref(), Some(&orig), "{:?}", hop.ct_line);
        assert!(!ct.has("SEEN_REPLY"), "{:?}", hop.ct_line);
    }
    let lost = find("dind2", &answer);
    assert!(
        lost.iter()
            .any(|h| h.dropped.as_deref() == Some("NO_SOCKET")),
        "the answer is not dropped NO_SOCKET in dind2:\n{}",
        table()
    );
    //    The ICMP error dind2 sends about it (port unreachable: type 3 code 3) carries the entry
    //    the answer started: related to it, with the answer as ORIGINAL tuple, and no NAT.
    let icmp = find("dind2", &format!("{dind2} > {bridge} type 3 code 3"));
    assert!(!icmp.is_empty(), "no ICMP error in dind2:\n{}", table());
    for hop in &icmp {
        let ct = hop
            .last_ct()
            .unwrap_or_else(|| panic!("no entry: {:?}", hop.ct_line));
        assert_eq!(ct.state, "related_reply", "{:?}", hop.ct_line);
        assert_eq!(
            ct.orig,
            Some(ct_tuple(bridge, port, dind2, client_port)),
            "{:?}",
            hop.ct_line
        );
        assert_eq!(
            ct.reply,
            Some(ct_tuple(dind2, client_port, bridge, port)),
            "{:?}",
            hop.ct_line
        );
        assert!(
            !ct.has("SRC_NAT") && !ct.has("DST_NAT"),
            "{:?}",
            hop.ct_line
        );
        assert_eq!(ct.nat.as_deref(), Some("no NAT"), "{:?}", hop.ct_line);
    }

    // 6. Under the host's hop of the client's datagram: PREROUTING jumps to DOCKER (the
    //    destination is local), and DOCKER returns for packets from br-dind — so no DNAT.
    let arrivals = find("host", &snatted);
    assert_eq!(arrivals.len(), 1, "one host hop of {snatted}:\n{}", table());
    let verdicts = &arrivals[0].verdicts;
    let jump = verdicts
        .iter()
        .position(|v| v.starts_with("ip nat PREROUTING: ") && v.ends_with("→ jump DOCKER"));
    let ret = verdicts.iter().position(|v| {
        v.starts_with(&format!(
            "ip nat DOCKER: iifname \"{}\" ",
            story::HOST_BRIDGE
        )) && v.ends_with("→ return")
    });
    assert!(
        matches!((jump, ret), (Some(j), Some(r)) if j < r),
        "no `jump DOCKER` then DOCKER's `iifname \"br-dind\" … return` under {snatted} in the host:\n{}",
        table()
    );
    assert!(
        !verdicts.iter().any(|v| v.to_lowercase().contains("dnat")),
        "a DNAT verdict for {snatted} in the host:\n{}",
        table()
    );
    println!("{}\n(lab repro ran in {:.1?})", table(), started.elapsed());
}

/// The parser, on a table as `lab repro` prints it (so a failure of the test above is about
/// the kernel's story, not about reading it).
#[test]
fn the_table_parser_reads_rows_ct_lines_and_verdicts() {
    let text = "  HOP      TIME  NODE (NETNS)         TUPLE                                  SEEN AT\n\
    \x20   6  +0.111ms  host (4026532246)    172.18.0.3:34320 > 192.168.0.239:4000  netif_rx@veth-dind2\n\
    \x20                └ ct: none → new orig 172.18.0.3:34320>192.168.0.239:4000 reply 192.168.0.239:4000>172.18.0.3:34320 [DST_NAT_DONE] unconfirmed (no NAT)\n\
    \x20         ↳ nft ip nat DOCKER: iifname \"br-dind\" counter return (rule handle 9) → return\n\
    \x20  18  +0.402ms  dind2 (4026532453)   172.18.0.1:4000 > 172.18.0.3:34320     netif_receive_skb@eth0 → kfree_skb@eth0  ✗ DROPPED: NO_SOCKET\n\
    \x20                └ ct: none on the skb\n\
    \n  In conntrack's own words\n";
    let hops = parse_table(text);
    assert_eq!(hops.len(), 2);
    assert_eq!((hops[0].node.as_str(), hops[0].inode), ("host", 4026532246));
    assert_eq!(hops[0].tuple, "172.18.0.3:34320 > 192.168.0.239:4000");
    assert_eq!(hops[0].cts.len(), 2);
    assert_eq!(hops[0].cts[0], None);
    let ct = hops[0].last_ct().unwrap();
    assert_eq!(ct.state, "new");
    assert_eq!(
        ct.reply.as_deref(),
        Some("192.168.0.239:4000>172.18.0.3:34320")
    );
    assert_eq!(ct.status, ["DST_NAT_DONE"]);
    assert_eq!(ct.nat.as_deref(), Some("no NAT"));
    assert_eq!(
        hops[0].verdicts,
        ["ip nat DOCKER: iifname \"br-dind\" counter return (rule handle 9) → return"]
    );
    assert_eq!(hops[1].dropped.as_deref(), Some("NO_SOCKET"));
    assert!(hops[1].cts.is_empty());
    assert_eq!(hops[1].ct_line.as_deref(), Some("└ ct: none on the skb"));
}
