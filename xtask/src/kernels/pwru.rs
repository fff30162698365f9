//! pwru, the article's own tool, beside the course's tracer on the story (`--suite pwru`).
//!
//! In the guest (kprobes work on Debian's kernels), [`run_in_guest`] starts trixie's `pwru`
//! (`--output-tuple 'udp and port 4000'`, as the story filters) and the course's `tracer path`
//! (for its attach time), waits until both say they are attached, runs `lab repro` (which
//! prints the hop table of the course's tracer), stops both, and [`compare`]s what pwru
//! printed with the hop table:
//!
//! - every tuple of the story's five hops (STORY.md §5; the proxy's port `P` learnt from the
//!   hop table) appears in BOTH;
//! - both see the lost answer dropped: the tracer with NO_SOCKET in dind2, pwru in a drop
//!   function on the same tuple, with NO_SOCKET when pwru names a reason.
//!
//! Nothing here knows one kernel's symbols: a *drop function* is any kernel function whose
//! BTF prototype takes an `enum skb_drop_reason` (`kfree_skb_reason` up to 6.10,
//! `sk_skb_reason_drop` since 6.11), read from the guest kernel's own BTF.
//!
//! The host renders the result ([`render`]) and `--record` writes it into tracer/README.md
//! between [`BEGIN`] and [`END`] ([`record`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::SocketAddrV4;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::proc;

/// The filter both tools get: the story's (`pwru 'udp and port 4000'`).
pub const FILTER: &str = "udp and port 4000";

/// The story's addresses (STORY.md, crates/story): the client, dind2's address on the
/// bridge, the host's LAN address (where the client sends), the host's bridge address (the
/// proxy's source), dind1.
const CLIENT: &str = "172.17.0.2:34320";
const DIND2: &str = "172.18.0.3:34320";
const HOST_LAN: &str = "192.168.0.239:4000";
const HOST_BRIDGE: &str = "172.18.0.1";
const DIND1: &str = "172.18.0.2:4000";
/// The lab node where the answer is lost.
const LOSING_NODE: &str = "dind2";
const NO_SOCKET: &str = "NO_SOCKET";

/// The markers around the recorded comparison in tracer/README.md.
pub const BEGIN: &str =
    "<!-- pwru-comparison:begin (cargo xtask kernels --kernel 6.12 --suite pwru --record) -->";
pub const END: &str = "<!-- pwru-comparison:end -->";

/// `a:p > b:q` (the hop table) or `a:p->b:q` (pwru).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Tuple {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
}

impl std::fmt::Display for Tuple {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} > {}", self.src, self.dst)
    }
}

impl Tuple {
    fn new(src: &str, dst: &str) -> Option<Tuple> {
        Some(Tuple {
            src: src.parse().ok()?,
            dst: dst.parse().ok()?,
        })
    }
}

/// One row of the hop table that `lab repro` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub number: u32,
    /// The lab node (`dind2`), or the namespace's inode when the node is unknown.
    pub node: String,
    /// The network namespace's inode, e.g. 4026532453.
    pub netns: Option<u64>,
    pub tuple: Tuple,
    /// Tracepoint → how many times it fired in this hop (`kfree_skb@eth0 ×2`: 2).
    pub points: Vec<(String, u32)>,
    /// `✗ DROPPED: NO_SOCKET` → `NO_SOCKET`.
    pub dropped: Option<String>,
}

/// The hop table's rows in `lab repro`'s output (lines after the `HOP … TUPLE … SEEN AT`
/// heading that hold a number, a time, a node, a tuple and the points).
pub fn parse_hop_table(repro: &str) -> Vec<Hop> {
    let mut hops = Vec::new();
    let mut in_table = false;
    for line in repro.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() == Some(&"HOP") && line.contains("SEEN AT") {
            in_table = true;
            continue;
        }
        if !in_table {
            continue;
        }
        // `18  +0.560ms  dind2 (4026532453)  172.18.0.1:4000 > 172.18.0.3:34320  a@eth0 → b@eth0`
        let Some(number) = words.first().and_then(|w| w.parse::<u32>().ok()) else {
            // The lines under a hop (`└ ct: …`, `↳ nft …`) belong to it; anything else
            // ends the table.
            if matches!(words.first(), Some(w) if w.starts_with('└') || w.starts_with('↳')) {
                continue;
            }
            in_table = false;
            continue;
        };
        let Some(arrow) = words.iter().position(|w| *w == ">") else {
            continue;
        };
        if arrow < 3 || arrow + 2 > words.len() {
            continue;
        }
        let Some(tuple) = Tuple::new(words[arrow - 1], words[arrow + 1]) else {
            continue;
        };
        // `dind2 (4026532453)`, or the inode alone.
        let node_words = &words[2..arrow - 1];
        let inode = |w: &&str| w.trim_matches(|c| c == '(' || c == ')').parse::<u64>().ok();
        let netns = node_words.iter().find_map(inode);
        let node = node_words
            .first()
            .map(|n| n.trim_matches(|c| c == '(' || c == ')').to_string())
            .unwrap_or_default();
        let rest = words[arrow + 2..].join(" ");
        let (seen, dropped) = match rest.split_once("✗ DROPPED:") {
            Some((seen, reason)) => (seen.to_string(), Some(reason.trim().to_string())),
            None => (rest, None),
        };
        let points = seen
            .split('→')
            .map(str::trim)
            .filter(|p| !p.is_empty() && *p != "…")
            .map(|p| {
                let (point, times) = match p.rsplit_once(" ×") {
                    Some((point, n)) => (point, n.trim().parse().unwrap_or(1)),
                    None => (p, 1),
                };
                let name = point.split('@').next().unwrap_or(point);
                (name.to_string(), times)
            })
            .collect();
        hops.push(Hop {
            number,
            node,
            netns,
            tuple,
            points,
            dropped,
        });
    }
    hops
}

/// One line of `pwru --output-tuple`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PwruEvent {
    pub skb: String,
    pub function: String,
    /// What pwru prints after the function, if anything: `kfree_skb_reason(SKB_DROP_REASON_
    /// NO_SOCKET)` → `SKB_DROP_REASON_NO_SOCKET`; `kfree_skb_reason (7)` → `7`.
    pub reason: Option<String>,
    /// IPv4 tuples only (the story has no other); `None` for IPv6.
    pub tuple: Option<Tuple>,
    /// `netns=…` (with `--output-meta`): the namespace of the skb's device.
    pub netns: Option<u64>,
}

/// pwru's event lines: `0xffff… CPU [process(pid)] FUNCTION[(REASON)] [netns=… mark=… iface=…
/// proto=… mtu=… len=…] a:p->b:q(udp)` (the middle with `--output-meta`).
pub fn parse_pwru(output: &str) -> Vec<PwruEvent> {
    let mut events = Vec::new();
    for line in output.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 || !words[0].starts_with("0x") {
            continue;
        }
        // The process is `[name(pid)]`; a name may hold spaces, so look for its end.
        let Some(process_end) = words.iter().skip(2).position(|w| w.ends_with(")]")) else {
            continue;
        };
        let Some(function) = words.get(2 + process_end + 1) else {
            continue;
        };
        let (function, mut reason) = match function.split_once('(') {
            Some((f, r)) => (f.to_string(), Some(r.trim_end_matches(')').to_string())),
            None => (function.to_string(), None),
        };
        if let Some(next) = words.get(2 + process_end + 2) {
            if next.starts_with('(') && next.ends_with(')') && !next.contains("->") {
                reason = Some(next.trim_matches(|c| c == '(' || c == ')').to_string());
            }
        }
        let tuple = words.iter().rev().find(|w| w.contains("->")).and_then(|w| {
            let w = w.rsplit_once('(').map_or(*w, |(t, _)| t);
            let (src, dst) = w.split_once("->")?;
            Tuple::new(src, dst)
        });
        let netns = words
            .iter()
            .find_map(|w| w.strip_prefix("netns=")?.parse().ok());
        events.push(PwruEvent {
            skb: words[0].to_string(),
            function,
            reason,
            tuple,
            netns,
        });
    }
    events
}

/// The functions whose prototype takes an `enum skb_drop_reason`, from `bpftool btf dump
/// file /sys/kernel/btf/vmlinux` (raw format): the kernel's own drop functions.
pub fn drop_functions(btf_dump: &str) -> BTreeSet<String> {
    #[derive(Default)]
    struct Type {
        kind: String,
        name: String,
        type_id: Option<u32>,
        params: Vec<u32>,
    }
    let mut types: BTreeMap<u32, Type> = BTreeMap::new();
    let mut current: Option<u32> = None;
    let field = |words: &[&str], key: &str| {
        words
            .iter()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<u32>().ok())
    };
    for line in btf_dump.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(id) = words
            .first()
            .and_then(|w| w.strip_prefix('[')?.strip_suffix(']')?.parse::<u32>().ok())
        {
            let ty = Type {
                kind: words.get(1).unwrap_or(&"").to_string(),
                name: words.get(2).unwrap_or(&"").trim_matches('\'').to_string(),
                type_id: field(&words, "type_id=").or_else(|| field(&words, "ret_type_id=")),
                params: Vec::new(),
            };
            types.insert(id, ty);
            current = Some(id);
        } else if line.starts_with('\t') {
            // A member or parameter of the type above: `'reason' type_id=42`.
            if let (Some(id), Some(param)) = (current, field(&words, "type_id=")) {
                if let Some(ty) = types.get_mut(&id) {
                    if ty.kind == "FUNC_PROTO" {
                        ty.params.push(param);
                    }
                }
            }
        }
    }
    // Through typedefs and qualifiers to the enum itself.
    let is_drop_reason = |mut id: u32| {
        for _ in 0..16 {
            let Some(ty) = types.get(&id) else {
                return false;
            };
            match ty.kind.as_str() {
                "ENUM" | "ENUM64" => return ty.name == "skb_drop_reason",
                "TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG" => match ty.type_id {
                    Some(next) => id = next,
                    None => return false,
                },
                _ => return false,
            }
        }
        false
    };
    types
        .values()
        .filter(|ty| ty.kind == "FUNC")
        .filter(|f| {
            f.type_id
                .and_then(|proto| types.get(&proto))
                .is_some_and(|proto| proto.params.iter().any(|&p| is_drop_reason(p)))
        })
        .map(|f| f.name.clone())
        .collect()
}

/// How many functions pwru attaches to: the total of its progress bar (`354 / 1480 [->__]`)
/// between `Attaching kprobes` and `Listening for events` on stderr.
fn pwru_attached(stderr: &str) -> Option<u32> {
    let attaching = stderr.split("Attaching kprobes").nth(1)?;
    let attaching = attaching.split("Listening for events").next()?;
    let words: Vec<&str> = attaching
        .split(|c: char| c.is_whitespace() || c == '\r')
        .filter(|w| !w.is_empty())
        .collect();
    words
        .windows(3)
        .rev()
        .filter(|w| w[1] == "/" && w[0].parse::<u32>().is_ok())
        .find_map(|w| w[2].parse().ok())
}

/// `tracer: 57 events, 0 lost (ring buffer full), 41 tracepoints attached in 812.3 ms`.
fn tracer_summary(stderr: &str) -> Option<(u32, u32, f64)> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with("tracer:") && l.contains("attached in"))?;
    let number_before = |word: &str| -> Option<f64> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let at = words.iter().position(|w| w.trim_end_matches(',') == word)?;
        words.get(at.checked_sub(1)?)?.parse().ok()
    };
    let events = number_before("events").or_else(|| number_before("event"))?;
    let attached = number_before("tracepoints").or_else(|| number_before("tracepoint"))?;
    let ms = line
        .split("attached in ")
        .nth(1)?
        .trim()
        .trim_end_matches("ms")
        .trim()
        .parse()
        .ok()?;
    Some((events as u32, attached as u32, ms))
}

/// One of the story's five tuples, and who saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoryTuple {
    /// What the hop is, in the story's words.
    pub what: String,
    pub tuple: Tuple,
    /// pwru's events on this tuple, and its distinct functions.
    pub pwru_events: usize,
    pub pwru_functions: usize,
    /// The lab nodes of pwru's events on this tuple (their `netns=`, named from the hop
    /// table's namespaces), in order of first appearance.
    pub pwru_nodes: Vec<String>,
    /// The lab nodes of the tracer's hops with this tuple, in order.
    pub tracer_nodes: Vec<String>,
}

/// What one run of both tools showed, and the verdict.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Comparison {
    pub release: String,
    pub pwru_version: String,
    /// Seconds from pwru's start until it said it was attached (`--ready-file`).
    pub pwru_attach_seconds: f64,
    pub pwru_attached_functions: Option<u32>,
    /// Every event pwru printed during `lab repro`.
    pub pwru_all_events: usize,
    /// pwru's events in the story world's namespaces (those of the hop table), and their
    /// distinct functions.
    pub pwru_events: usize,
    pub pwru_functions: usize,
    /// Seconds from `tracer path`'s start until attached; its own count and attach time.
    pub tracer_ready_seconds: f64,
    pub tracer_attached: Option<u32>,
    pub tracer_attach_ms: Option<f64>,
    pub hops: usize,
    pub tracer_events: u32,
    pub tracer_points: usize,
    pub tuples: Vec<StoryTuple>,
    /// The drop of the lost answer: the tracer's hop and reason, pwru's function and reason.
    pub tracer_drop: Option<String>,
    pub pwru_drop: Option<String>,
    pub pwru_drop_reason: Option<String>,
    /// The kernel's drop functions (from BTF).
    pub drop_functions: Vec<String>,
    /// pwru's functions on the story's tuples, with their calls, most called first.
    pub pwru_top: Vec<(String, usize)>,
    /// The functions pwru saw on the story's tuples, counted by family (`nf_`, `ip_`, …).
    pub pwru_families: Vec<(String, usize)>,
    /// Tuples one tool saw and the other did not.
    pub only_pwru: Vec<Tuple>,
    pub only_tracer: Vec<Tuple>,
    /// What does not hold (empty: the comparison passes).
    pub failures: Vec<String>,
}

/// The family of a kernel function, for "what pwru shows that the tracer does not".
fn family(function: &str) -> &'static str {
    const FAMILIES: &[(&str, &[&str])] = &[
        (
            "netfilter",
            &[
                "nf_",
                "nft_",
                "ipt_",
                "__nf_",
                "xt_",
                "ipv4_conntrack",
                "ipv4_confirm",
            ],
        ),
        (
            "security",
            &["security_", "apparmor_", "selinux_", "bpf_lsm_"],
        ),
        ("xfrm", &["xfrm", "__xfrm", "validate_xmit_xfrm"]),
        (
            "IP",
            &[
                "ip_", "__ip_", "ip4_", "ipv4_", "inet_", "fib_", "__fib", "rt_", "dst_", "raw_",
            ],
        ),
        ("UDP", &["udp", "__udp", "skb_consume_udp"]),
        ("ICMP", &["icmp", "__icmp"]),
        ("neighbour", &["neigh_", "__neigh", "arp_"]),
        ("bridge", &["br_", "__br_"]),
        (
            "socket",
            &[
                "sock_",
                "__sock_",
                "sk_filter",
                "__consume_stateless_skb",
                "skb_free_datagram",
            ],
        ),
        ("AF_PACKET", &["packet_", "tpacket_"]),
        (
            "device",
            &[
                "dev_",
                "__dev_",
                "netif_",
                "__netif_",
                "netdev_",
                "veth_",
                "eth_",
                "enqueue_to_backlog",
                "validate_xmit",
                "passthru_",
                "sch_",
                "__qdisc",
                "qdisc_",
                "net_",
            ],
        ),
        (
            "skb memory",
            &[
                "skb_",
                "__skb",
                "pskb_",
                "kfree_skb",
                "consume_skb",
                "__kfree_skb",
                "sk_skb",
            ],
        ),
    ];
    FAMILIES
        .iter()
        .find(|(_, prefixes)| prefixes.iter().any(|p| function.starts_with(p)))
        .map_or("other", |(name, _)| name)
}

/// The verdict: every story tuple in both tools, the answer dropped in both.
pub fn compare(
    hops: &[Hop],
    events: &[PwruEvent],
    drop_functions: &BTreeSet<String>,
) -> Comparison {
    // pwru runs through all of `lab repro` (the story, then a control run and the homework
    // in fresh worlds, whose namespaces the hop table does not name); the hop table covers
    // the story's world. Compare within its namespaces (every event if pwru names none).
    let story_netns: BTreeSet<u64> = hops.iter().filter_map(|h| h.netns).collect();
    let all_events = events;
    let events: Vec<PwruEvent> = all_events
        .iter()
        .filter(|e| story_netns.is_empty() || e.netns.is_none_or(|n| story_netns.contains(&n)))
        .cloned()
        .collect();
    let events = events.as_slice();
    let mut c = Comparison {
        hops: hops.len(),
        pwru_all_events: all_events.len(),
        pwru_events: events.len(),
        pwru_functions: events
            .iter()
            .map(|e| &e.function)
            .collect::<BTreeSet<_>>()
            .len(),
        tracer_events: hops.iter().flat_map(|h| &h.points).map(|(_, n)| n).sum(),
        tracer_points: hops
            .iter()
            .flat_map(|h| &h.points)
            .map(|(p, _)| p)
            .collect::<BTreeSet<_>>()
            .len(),
        drop_functions: drop_functions.iter().cloned().collect(),
        ..Default::default()
    };
    if hops.is_empty() {
        c.failures
            .push("the hop table of `lab repro` is empty or missing".into());
    }
    if events.is_empty() {
        c.failures.push("pwru printed no event".into());
    }
    if drop_functions.is_empty() {
        c.failures
            .push("the kernel's BTF has no function taking an enum skb_drop_reason".into());
    }
    // The proxy's port P: the hop from the host's bridge address to dind1's port 4000.
    let dind1: SocketAddrV4 = DIND1.parse().expect("a valid address");
    let proxy_port = hops
        .iter()
        .map(|h| h.tuple)
        .find(|t| t.dst == dind1 && t.src.ip().to_string() == HOST_BRIDGE)
        .map(|t| t.src.port());
    let Some(p) = proxy_port else {
        c.failures.push(format!(
            "the hop table has no datagram {HOST_BRIDGE}:P > {DIND1}: which port did the proxy use?"
        ));
        return c;
    };
    let proxy = format!("{HOST_BRIDGE}:{p}");
    // pwru's `netns=` named as the hop table names it.
    let nodes: BTreeMap<u64, String> = hops
        .iter()
        .filter_map(|h| Some((h.netns?, h.node.clone())))
        .collect();
    let node_of = |netns: u64| {
        nodes
            .get(&netns)
            .cloned()
            .unwrap_or_else(|| netns.to_string())
    };
    let answer_to_dind2 = format!("{HOST_BRIDGE}:4000");
    let story = [
        ("the client's datagram", CLIENT, HOST_LAN),
        ("after MASQUERADE in dind2", DIND2, HOST_LAN),
        ("the proxy relays it to dind1", proxy.as_str(), DIND1),
        (
            "the server's answer, back to the proxy",
            DIND1,
            proxy.as_str(),
        ),
        (
            "the proxy's answer to dind2: lost",
            answer_to_dind2.as_str(),
            DIND2,
        ),
    ];
    for (what, src, dst) in story {
        let tuple = Tuple::new(src, dst).expect("the story's addresses parse");
        let on: Vec<&PwruEvent> = events.iter().filter(|e| e.tuple == Some(tuple)).collect();
        let nodes: Vec<String> = hops
            .iter()
            .filter(|h| h.tuple == tuple)
            .map(|h| h.node.clone())
            .collect();
        if on.is_empty() {
            c.failures
                .push(format!("pwru did not see {tuple} ({what})"));
        }
        if nodes.is_empty() {
            c.failures
                .push(format!("the tracer did not see {tuple} ({what})"));
        }
        let mut pwru_nodes: Vec<String> = Vec::new();
        for node in on.iter().filter_map(|e| e.netns).map(&node_of) {
            if pwru_nodes.last() != Some(&node) {
                pwru_nodes.push(node);
            }
        }
        c.tuples.push(StoryTuple {
            what: what.to_string(),
            tuple,
            pwru_nodes,
            pwru_events: on.len(),
            pwru_functions: on
                .iter()
                .map(|e| &e.function)
                .collect::<BTreeSet<_>>()
                .len(),
            tracer_nodes: nodes,
        });
    }
    let lost = c.tuples[4].tuple;
    // The tracer: NO_SOCKET in dind2 on the lost answer.
    let tracer_drop = hops.iter().find(|h| h.tuple == lost && h.dropped.is_some());
    match tracer_drop {
        Some(h) => {
            let reason = h.dropped.clone().unwrap_or_default();
            c.tracer_drop = Some(format!("hop {} in {}: {reason}", h.number, h.node));
            if h.node != LOSING_NODE || reason != NO_SOCKET {
                c.failures.push(format!(
                    "the tracer saw {lost} dropped in {} with {reason}, not in {LOSING_NODE} with {NO_SOCKET}",
                    h.node
                ));
            }
        }
        None => c
            .failures
            .push(format!("the tracer's hop table shows no drop of {lost}")),
    }
    // pwru: one of the kernel's drop functions on the same tuple, in the same namespace as
    // the tracer's drop when pwru names namespaces (a capture's copy is freed elsewhere,
    // through functions that take a reason too: `skb_release_data(skb, SKB_CONSUMED)`).
    let where_dropped = tracer_drop.and_then(|h| h.netns);
    match events.iter().find(|e| {
        e.tuple == Some(lost)
            && drop_functions.contains(&e.function)
            && (e.netns.is_none() || where_dropped.is_none() || e.netns == where_dropped)
    }) {
        Some(e) => {
            let node = e.netns.map(&node_of);
            c.pwru_drop = Some(match &node {
                Some(node) => format!("{} in {node}", e.function),
                None => e.function.clone(),
            });
            c.pwru_drop_reason = e.reason.clone();
            if let Some(reason) = &e.reason {
                let short = reason.strip_prefix("SKB_DROP_REASON_").unwrap_or(reason);
                if short != NO_SOCKET {
                    c.failures.push(format!(
                        "pwru saw {lost} dropped in {} with {reason}, not {NO_SOCKET}",
                        e.function
                    ));
                }
            }
            if node.as_ref().is_some_and(|n| n != LOSING_NODE) {
                c.failures.push(format!(
                    "pwru saw {lost} dropped in {}, not in {LOSING_NODE}",
                    node.unwrap_or_default()
                ));
            }
        }
        None => c.failures.push(format!(
            "pwru saw no drop of {lost} (none of the kernel's drop functions: {})",
            drop_functions
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
    // What each shows that the other does not.
    let story_tuples: BTreeSet<Tuple> = c.tuples.iter().map(|t| t.tuple).collect();
    let mut calls: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| e.tuple.is_some_and(|t| story_tuples.contains(&t)))
    {
        *calls.entry(e.function.as_str()).or_default() += 1;
    }
    let mut top: Vec<(String, usize)> = calls.iter().map(|(f, n)| (f.to_string(), *n)).collect();
    top.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    c.pwru_top = top;
    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    for f in calls.keys() {
        *families.entry(family(f)).or_default() += 1;
    }
    let mut families: Vec<(String, usize)> = families
        .into_iter()
        .map(|(f, n)| (f.to_string(), n))
        .collect();
    families.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    c.pwru_families = families;
    let pwru_tuples: BTreeSet<Tuple> = events.iter().filter_map(|e| e.tuple).collect();
    let tracer_tuples: BTreeSet<Tuple> = hops.iter().map(|h| h.tuple).collect();
    c.only_pwru = pwru_tuples.difference(&tracer_tuples).copied().collect();
    c.only_tracer = tracer_tuples.difference(&pwru_tuples).copied().collect();
    c
}

/// The comparison as a Markdown table (and text for the terminal).
pub fn render(c: &Comparison) -> String {
    let mut out = String::new();
    let verdict = if c.failures.is_empty() {
        "every story tuple in both, the lost answer dropped in both".to_string()
    } else {
        format!("FAILED: {}", c.failures.join("; "))
    };
    out.push_str(&format!(
        "Linux {}, {} beside the course's tracer on `lab repro` (filter `{FILTER}`): {verdict}.\n\n",
        c.release, c.pwru_version
    ));
    out.push_str("| | pwru | the course's tracer |\n|---|---|---|\n");
    let functions = c
        .pwru_attached_functions
        .map_or("functions".to_string(), |n| format!("{n} functions"));
    let tracer_attach = match (c.tracer_attached, c.tracer_attach_ms) {
        (Some(n), Some(ms)) => format!(
            "{n} tracepoints (`tp_btf`), attached in {:.1} s",
            ms / 1000.0
        ),
        _ => "tracepoints (`tp_btf`)".to_string(),
    };
    out.push_str(&format!(
        "| attach (started → ready: `--ready-file`) | {functions} (kprobes), ready after {:.1} s | `tracer path`: {tracer_attach}, ready after {:.1} s |\n",
        c.pwru_attach_seconds, c.tracer_ready_seconds
    ));
    out.push_str(&format!(
        "| events in the story's namespaces | {} events ({} in all of `lab repro`), {} distinct functions | {} hops of the hop table, {} events at {} distinct tracepoints |\n",
        c.pwru_events, c.pwru_all_events, c.pwru_functions, c.hops, c.tracer_events, c.tracer_points
    ));
    for (i, t) in c.tuples.iter().enumerate() {
        let nodes = if t.tracer_nodes.is_empty() {
            "✗ not seen".to_string()
        } else {
            format!(
                "{} hop(s): {}",
                t.tracer_nodes.len(),
                t.tracer_nodes.join(", ")
            )
        };
        let pwru = if t.pwru_events == 0 {
            "✗ not seen".to_string()
        } else if t.pwru_nodes.is_empty() {
            format!("{} events, {} functions", t.pwru_events, t.pwru_functions)
        } else {
            format!(
                "{} events, {} functions: {}",
                t.pwru_events,
                t.pwru_functions,
                t.pwru_nodes.join(" → ")
            )
        };
        out.push_str(&format!(
            "| {}. `{}` ({}) | {pwru} | {nodes} |\n",
            i + 1,
            t.tuple,
            t.what
        ));
    }
    let pwru_drop = match (&c.pwru_drop, &c.pwru_drop_reason) {
        (Some(f), Some(r)) => format!("`{f}` ({r})"),
        (Some(f), None) => format!("`{f}` (pwru prints no reason for it)"),
        _ => "✗ none".to_string(),
    };
    out.push_str(&format!(
        "| the lost answer dropped | {pwru_drop} | {} |\n",
        c.tracer_drop.as_deref().unwrap_or("✗ none")
    ));
    let netfilter: Vec<String> = c
        .pwru_top
        .iter()
        .filter(|(f, _)| family(f) == "netfilter")
        .map(|(f, n)| format!("`{f}` ×{n}"))
        .collect();
    let families: Vec<String> = c
        .pwru_families
        .iter()
        .map(|(f, n)| match f.as_str() {
            "netfilter" => format!("netfilter {n}: {}", netfilter.join(", ")),
            _ => format!("{f} {n}"),
        })
        .collect();
    let top: Vec<String> = c
        .pwru_top
        .iter()
        .take(6)
        .map(|(f, n)| format!("`{f}` ×{n}"))
        .collect();
    out.push_str(&format!(
        "| only pwru shows | every function the skb passes: {} functions on the story's tuples ({}); most called: {} | |\n",
        c.pwru_top.len(),
        families.join(", "),
        top.join(", ")
    ));
    let reason = if c.pwru_drop_reason.is_none() && c.pwru_drop.is_some() {
        "; the drop's reason, which pwru does not print here"
    } else {
        ""
    };
    out.push_str(&format!(
        "| only the tracer shows | | the lab node (network namespace) of every hop{reason} |\n"
    ));
    let list = |t: &[Tuple]| {
        if t.is_empty() {
            "none".to_string()
        } else {
            t.iter()
                .map(|t| format!("`{t}`"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!(
        "| tuples only this tool saw (pwru also sees `lab repro`'s control run) | {} | {} |\n",
        list(&c.only_pwru),
        list(&c.only_tracer)
    ));
    out
}

/// Replaces what is between [`BEGIN`] and [`END`] in `readme` with `table`.
pub fn record(readme: &str, table: &str) -> Result<String> {
    let (Some(begin), Some(end)) = (readme.find(BEGIN), readme.find(END)) else {
        bail!("tracer/README.md has no {BEGIN} … {END} markers: put them where the table goes");
    };
    if end < begin {
        bail!("tracer/README.md's pwru markers are in the wrong order");
    }
    Ok(format!(
        "{}{BEGIN}\n{}{}",
        &readme[..begin],
        table.trim_end().to_string() + "\n",
        &readme[end..]
    ))
}

/// What the guest runs: pwru, the tracer and `lab repro`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Programs {
    pub pwru: PathBuf,
    /// The package's version (the binary does not know its own).
    pub pwru_version: String,
    pub tracer: PathBuf,
    pub lab: PathBuf,
}

/// Starts `cmd` with stdout and stderr in `dir/<name>.out` / `.err`.
fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(File::create(dir.join(format!("{name}.out")))?)
        .stderr(File::create(dir.join(format!("{name}.err")))?);
    cmd.spawn()
        .with_context(|| format!("cannot start {:?}", cmd.get_program()))
}

/// Waits until `ready` exists (the program is attached) or it exited or `limit` passed.
fn wait_ready(child: &mut Child, ready: &Path, limit: Duration, what: &str) -> Result<f64> {
    let started = Instant::now();
    while !ready.exists() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before it was attached");
        }
        if started.elapsed() > limit {
            bail!("{what} was not attached after {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// SIGINT (both tools print their summary then), then wait up to `limit`, then SIGKILL.
fn stop(child: &mut Child, limit: Duration) -> Result<()> {
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGINT);
    let started = Instant::now();
    while child.try_wait()?.is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// In the guest: runs both tools around `lab repro`, leaves their outputs in `dir`, and
/// returns the comparison (also written to `dir/pwru.json` for the host).
pub fn run_in_guest(
    programs: &Programs,
    cwd: &Path,
    dir: &Path,
    limit: Duration,
) -> Result<Comparison> {
    let dump = Command::new("bpftool")
        .args(["btf", "dump", "file", "/sys/kernel/btf/vmlinux"])
        .stdin(Stdio::null())
        .output()
        .context(
            "cannot run bpftool (package bpftool): it reads the kernel's drop functions from BTF",
        )?;
    if !dump.status.success() {
        bail!(
            "bpftool btf dump failed: {}",
            String::from_utf8_lossy(&dump.stderr)
        );
    }
    let drops = drop_functions(&String::from_utf8_lossy(&dump.stdout));
    let version = programs.pwru_version.clone();
    let release = proc::output_of("uname", &["-r"])
        .unwrap_or_default()
        .trim()
        .to_string();

    let pwru_ready = dir.join("pwru.ready");
    let _ = std::fs::remove_file(&pwru_ready);
    let mut pwru_cmd = Command::new(&programs.pwru);
    pwru_cmd
        .arg("--output-tuple")
        .arg("--output-meta")
        .arg("--ready-file")
        .arg(&pwru_ready)
        .arg(FILTER);
    let mut pwru = spawn(pwru_cmd, dir, "pwru")?;
    let pwru_attach = wait_ready(&mut pwru, &pwru_ready, limit, "pwru");
    let tracer_ready = dir.join("tracer.ready");
    let _ = std::fs::remove_file(&tracer_ready);
    let mut tracer_cmd = Command::new(&programs.tracer);
    tracer_cmd
        .arg("path")
        .arg("--ready-file")
        .arg(&tracer_ready)
        .arg(FILTER);
    let tracer = pwru_attach
        .as_ref()
        .ok()
        .map(|_| spawn(tracer_cmd, dir, "tracer-path"))
        .transpose();
    let result = (|| -> Result<Comparison> {
        let pwru_attach = pwru_attach?;
        let mut tracer = tracer?.context("the tracer did not start")?;
        let tracer_attach = wait_ready(&mut tracer, &tracer_ready, limit, "tracer path");
        let mut repro = Command::new(&programs.lab);
        repro.arg("repro").current_dir(cwd);
        let run = proc::run_captured(repro, limit);
        // The last events still travel through the tools' ring buffers.
        std::thread::sleep(Duration::from_secs(2));
        stop(&mut tracer, limit)?;
        let run = run?;
        std::fs::write(dir.join("repro.out"), &run.output)?;
        let tracer_attach = tracer_attach?;
        if !run.success() {
            bail!(
                "lab repro failed (exit {:?}): see repro.out",
                run.status.and_then(|s| s.code())
            );
        }
        let hops = parse_hop_table(&run.output);
        let pwru_out = std::fs::read_to_string(dir.join("pwru.out")).unwrap_or_default();
        // pwru has not stopped yet: its output so far is complete (it writes per event).
        let mut c = compare(&hops, &parse_pwru(&pwru_out), &drops);
        c.release = release.clone();
        c.pwru_version = version.clone();
        c.pwru_attach_seconds = pwru_attach;
        c.tracer_ready_seconds = tracer_attach;
        let tracer_err = std::fs::read_to_string(dir.join("tracer-path.err")).unwrap_or_default();
        if let Some((_, attached, ms)) = tracer_summary(&tracer_err) {
            c.tracer_attached = Some(attached);
            c.tracer_attach_ms = Some(ms);
        }
        Ok(c)
    })();
    stop(&mut pwru, limit)?;
    let mut c = result?;
    let pwru_err = std::fs::read_to_string(dir.join("pwru.err")).unwrap_or_default();
    c.pwru_attached_functions = pwru_attached(&pwru_err);
    // pwru flushes its last lines when it stops: count again.
    let pwru_out = std::fs::read_to_string(dir.join("pwru.out")).unwrap_or_default();
    let hops = parse_hop_table(&std::fs::read_to_string(dir.join("repro.out"))?);
    let again = compare(&hops, &parse_pwru(&pwru_out), &drops);
    c = Comparison {
        release: c.release,
        pwru_version: c.pwru_version,
        pwru_attach_seconds: c.pwru_attach_seconds,
        pwru_attached_functions: c.pwru_attached_functions,
        tracer_ready_seconds: c.tracer_ready_seconds,
        tracer_attached: c.tracer_attached,
        tracer_attach_ms: c.tracer_attach_ms,
        ..again
    };
    std::fs::write(dir.join("pwru.json"), serde_json::to_string_pretty(&c)?)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOP_TABLE: &str = "\
4. The skb, hop by hop (eBPF on every tracepoint that carries an skb)
  HOP      TIME  NODE (NETNS)         TUPLE                                  SEEN AT
    1  +0.000ms  client (4026532600)  172.17.0.2:34320 > 192.168.0.239:4000  net_dev_queue@eth0 → net_dev_start_xmit@eth0
    2  +0.146ms  dind2 (4026532453)   172.18.0.3:34320 > 192.168.0.239:4000  netif_rx_entry@veth-c → net_dev_queue@eth0
                 └ ct: none → new orig 172.18.0.3:34320>192.168.0.239:4000 reply 192.168.0.239:4000>172.18.0.3:34320 [DST_NAT_DONE] unconfirmed (no NAT)
          ↳ nft ip nat DOCKER: iifname \"br-dind\" counter return (rule handle 9) → return
    7  +0.303ms  host (4026532246)    172.18.0.1:37047 > 172.18.0.2:4000     consume_skb@br-dind
                 └ ct: none on the skb
    9  +0.401ms  host (4026532246)    172.18.0.2:4000 > 172.18.0.1:37047     netif_receive_skb@br-dind ×2
   18  +0.560ms  dind2 (4026532453)   172.18.0.1:4000 > 172.18.0.3:34320     netif_rx_entry@eth0 → icmp_send@eth0 → kfree_skb@eth0  ✗ DROPPED: NO_SOCKET

5. dind2's conntrack table
  src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED]
";

    #[test]
    fn the_hop_table_gives_node_tuple_points_and_drop() {
        let hops = parse_hop_table(HOP_TABLE);
        assert_eq!(hops.len(), 5, "{hops:#?}");
        assert_eq!(hops[0].node, "client");
        assert_eq!(
            hops[2].tuple,
            Tuple::new("172.18.0.1:37047", "172.18.0.2:4000").unwrap()
        );
        assert_eq!(hops[3].points, vec![("netif_receive_skb".to_string(), 2)]);
        let last = &hops[4];
        assert_eq!((last.number, last.node.as_str()), (18, "dind2"));
        assert_eq!(last.dropped.as_deref(), Some("NO_SOCKET"));
        assert_eq!(last.points.len(), 3);
        assert_eq!(last.points[2].0, "kfree_skb");
    }

    const PWRU: &str = "\
               SKB    CPU          PROCESS                     FUNC
0xffff88800b1c2e00      1 [<empty>(0)]       netif_receive_skb 172.18.0.1:4000->172.18.0.3:34320(udp)
0xffff88800b1c2e00      1 [<empty>(0)]          __udp4_lib_rcv 172.18.0.1:4000->172.18.0.3:34320(udp)
0xffff88800b1c2e00      1 [<empty>(0)] kfree_skb_reason(SKB_DROP_REASON_NO_SOCKET) 172.18.0.1:4000->172.18.0.3:34320(udp)
0xffff88800b1c2f00      0 [my proc(42)]  kfree_skb_reason (77) 10.0.0.1:1->10.0.0.2:2(udp)
0xffff88800b1c3000      0 [lab(7)]       ip_rcv [::1]:1->[::1]:2(udp)
";

    #[test]
    fn pwru_lines_give_function_reason_and_tuple() {
        let events = parse_pwru(PWRU);
        assert_eq!(events.len(), 5, "{events:#?}");
        assert_eq!(events[1].function, "__udp4_lib_rcv");
        assert_eq!(
            events[1].tuple,
            Tuple::new("172.18.0.1:4000", "172.18.0.3:34320")
        );
        assert_eq!(events[2].function, "kfree_skb_reason");
        assert_eq!(
            events[2].reason.as_deref(),
            Some("SKB_DROP_REASON_NO_SOCKET")
        );
        assert_eq!(
            events[3].reason.as_deref(),
            Some("77"),
            "a process name with a space"
        );
        assert_eq!(events[4].tuple, None, "IPv6 is not the story's");
    }

    const BTF: &str = "\
[1] INT 'int' size=4 bits_offset=0 nr_bits=32 encoding=SIGNED
[2] ENUM 'skb_drop_reason' encoding=UNSIGNED size=4 vlen=2
\t'SKB_NOT_DROPPED_YET' val=0
\t'SKB_DROP_REASON_NO_SOCKET' val=3
[3] STRUCT 'sk_buff' size=232 vlen=1
\t'len' type_id=1 bits_offset=0
[4] PTR '(anon)' type_id=3
[5] FUNC_PROTO '(anon)' ret_type_id=0 vlen=2
\t'skb' type_id=4
\t'reason' type_id=2
[6] FUNC 'drop_it' type_id=5 linkage=static
[7] FUNC_PROTO '(anon)' ret_type_id=2 vlen=1
\t'skb' type_id=4
[8] FUNC 'returns_a_reason' type_id=7 linkage=static
[9] CONST '(anon)' type_id=2
[10] FUNC_PROTO '(anon)' ret_type_id=1 vlen=2
\t'skb' type_id=4
\t'why' type_id=9
[11] FUNC 'drop_it_too' type_id=10 linkage=static
[12] FUNC 'keep_it' type_id=7 linkage=static
";

    #[test]
    fn drop_functions_are_those_taking_an_skb_drop_reason() {
        let found: Vec<String> = drop_functions(BTF).into_iter().collect();
        assert_eq!(found, ["drop_it", "drop_it_too"]);
    }

    fn story_events(drop: &str) -> String {
        let mut out = String::new();
        for tuple in [
            "172.17.0.2:34320->192.168.0.239:4000",
            "172.18.0.3:34320->192.168.0.239:4000",
            "172.18.0.1:37047->172.18.0.2:4000",
            "172.18.0.2:4000->172.18.0.1:37047",
            "172.18.0.1:4000->172.18.0.3:34320",
        ] {
            out.push_str(&format!(
                "0xffff1 0 [<empty>(0)] nf_hook_slow {tuple}(udp)\n"
            ));
        }
        out.push_str(&format!(
            "0xffff1 0 [<empty>(0)] {drop} 172.18.0.1:4000->172.18.0.3:34320(udp)\n"
        ));
        out
    }

    const STORY_HOPS: &str = "\
  HOP  TIME  NODE (NETNS)  TUPLE  SEEN AT
    1  +0.000ms  client (1)  172.17.0.2:34320 > 192.168.0.239:4000  net_dev_queue@eth0
    2  +0.100ms  dind2 (2)   172.18.0.3:34320 > 192.168.0.239:4000  net_dev_queue@eth0
    3  +0.200ms  host (3)    172.18.0.1:37047 > 172.18.0.2:4000     net_dev_queue@br-dind
    4  +0.300ms  host (3)    172.18.0.2:4000 > 172.18.0.1:37047     netif_receive_skb@br-dind
    5  +0.400ms  dind2 (2)   172.18.0.1:4000 > 172.18.0.3:34320     kfree_skb@eth0  ✗ DROPPED: NO_SOCKET
";

    #[test]
    fn the_story_passes_when_both_see_every_tuple_and_the_drop() {
        let drops: BTreeSet<String> = ["sk_skb_reason_drop".to_string()].into();
        let c = compare(
            &parse_hop_table(STORY_HOPS),
            &parse_pwru(&story_events("sk_skb_reason_drop")),
            &drops,
        );
        assert!(c.failures.is_empty(), "{:?}", c.failures);
        assert_eq!(
            c.tuples[2].tuple.src.port(),
            37047,
            "P learnt from the hop table"
        );
        assert_eq!(c.pwru_drop.as_deref(), Some("sk_skb_reason_drop"));
        assert!(render(&c).contains("pwru prints no reason"));
    }

    #[test]
    fn a_missing_drop_or_another_reason_fails() {
        let drops: BTreeSet<String> = ["kfree_skb_reason".to_string()].into();
        let hops = parse_hop_table(STORY_HOPS);
        let c = compare(&hops, &parse_pwru(&story_events("consume_skb")), &drops);
        assert!(
            c.failures.iter().any(|f| f.contains("pwru saw no drop")),
            "{:?}",
            c.failures
        );
        let other = story_events("kfree_skb_reason(SKB_DROP_REASON_NETFILTER_DROP)");
        let c = compare(&hops, &parse_pwru(&other), &drops);
        assert!(
            c.failures.iter().any(|f| f.contains("not NO_SOCKET")),
            "{:?}",
            c.failures
        );
        let without_tuple_3: String = story_events("kfree_skb_reason")
            .lines()
            .filter(|l| !l.contains("172.18.0.1:37047->"))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = compare(&hops, &parse_pwru(&without_tuple_3), &drops);
        assert!(
            c.failures
                .iter()
                .any(|f| f.contains("pwru did not see 172.18.0.1:37047")),
            "{:?}",
            c.failures
        );
    }

    #[test]
    fn pwru_drop_is_taken_in_the_namespace_where_the_tracer_saw_it() {
        // The story's hops with their namespaces: dind2 is 2, the host 3.
        let hops = parse_hop_table(STORY_HOPS);
        assert_eq!(hops[4].netns, Some(2));
        let drops: BTreeSet<String> = [
            "sk_skb_reason_drop".to_string(),
            "skb_release_data".to_string(),
        ]
        .into();
        let lost = "172.18.0.1:4000->172.18.0.3:34320(udp)";
        let mut out = story_events("skb_push");
        // A capture's copy freed on the host first, then the real drop in dind2.
        out.push_str(&format!(
            "0xffff2 0 [lab(7)] skb_release_data netns=3 mark=0x0 iface=5(br-dind) proto=0x0800 mtu=1500 len=33 {lost}\n\
             0xffff1 0 [lab(7)] sk_skb_reason_drop netns=2 mark=0x0 iface=2(eth0) proto=0x0800 mtu=1500 len=33 {lost}\n"
        ));
        let events = parse_pwru(&out);
        assert_eq!(events.last().unwrap().netns, Some(2));
        let c = compare(&hops, &events, &drops);
        assert!(c.failures.is_empty(), "{:?}", c.failures);
        assert_eq!(c.pwru_drop.as_deref(), Some("sk_skb_reason_drop in dind2"));
        assert_eq!(c.tuples[4].pwru_nodes, ["host", "dind2"]);
    }

    #[test]
    fn pwru_events_outside_the_story_world_do_not_count() {
        let drops: BTreeSet<String> = ["sk_skb_reason_drop".to_string()].into();
        let hops = parse_hop_table(STORY_HOPS);
        // Tuple 3 seen only in a namespace of another world (netns 99): not the story's.
        let out: String = story_events("sk_skb_reason_drop")
            .lines()
            .map(|l| {
                if l.contains("172.18.0.1:37047->") {
                    l.replace(" 172.18.0.1:37047->", " netns=99 172.18.0.1:37047->")
                } else {
                    l.to_string()
                }
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c = compare(&hops, &parse_pwru(&out), &drops);
        assert!(
            c.failures
                .iter()
                .any(|f| f.contains("pwru did not see 172.18.0.1:37047")),
            "{:?}",
            c.failures
        );
        assert_eq!((c.pwru_all_events, c.pwru_events), (6, 5));
    }

    #[test]
    fn the_summaries_of_both_tools_are_read() {
        assert_eq!(
            pwru_attached(
                "2026/11/30 11:44:49 Attaching kprobes (via kprobe-multi)...\n\
                 354 / 1480 [-->____] 23.92% ? p/s\r354 / 1480 [-->___] 23.92% ? p/s\n\
                 2026/11/30 11:44:51 Listening for events..\n\
                 2026/11/30 11:46:30 Detaching kprobes...\n1 / 5 [->__] 20.00%\r5 / 5 [==] 100%\n"
            ),
            Some(1480)
        );
        assert_eq!(
            tracer_summary("note: x\ntracer: 57 events, 0 lost (ring buffer full), 41 tracepoints attached in 812.3 ms\n"),
            Some((57, 41, 812.3))
        );
    }

    #[test]
    fn recording_replaces_only_between_the_markers() {
        let readme = format!("a\n{BEGIN}\nold\n{END}\nb\n");
        let new = record(&readme, "new table\n").unwrap();
        assert_eq!(new, format!("a\n{BEGIN}\nnew table\n{END}\nb\n"));
        assert!(record("no markers", "x").is_err());
    }
}
