//! # Exercise 7 — follow the skb
//!
//! The drop tracer of exercise 5 says *where* the answer died. To see *how it got there*,
//! the article's author ran `pwru` on every kernel function that touches the packet, and read
//! how its addresses changed on the way: the five tuples of the story. The course's tracer
//! does the same with tracepoints: `tracer path` attaches one `tp_btf` program to each of the
//! ~30 tracepoints that carry a `struct sk_buff *` and reports every skb that matches a filter
//! (`udp and port 4000`), at every tracepoint, with its namespace, device and tuple.
//!
//! That is a long, interleaved stream. Your job is to turn it into the story's **hop table**:
//! [`hops`] groups the events per skb, starts a new hop whenever the (namespace, tuple) of an
//! skb changes, orders the hops in time, and marks the hop where an skb was dropped.
//!
//! The plumbing is given: [`PathTracer`] loads the tracer and decodes events into
//! [`Record`]s; [`format_hop_table`] prints the table.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use tracer::btf;
use tracer::collection::{self, KernelInfo, Tracer};
use tracer::kallsyms::Kallsyms;
pub use tracer::output::Record;
use tracer::output::{Clock, Decoder};

/// A stretch of one skb's life during which neither its namespace nor its tuple changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hop {
    /// The skb's kernel address (`Record::skb`), the same at every event of the hop.
    pub skb: String,
    /// The network namespace inode (`Record::netns`).
    pub netns: u32,
    /// `src:sport > dst:dport` (`Record::tuple()`).
    pub tuple: String,
    /// Time of the hop's first event (`Record::time_ns`, ns since the Unix epoch).
    pub first_ns: u64,
    /// The events of the hop, in order, as `tracepoint@interface` (`kfree_skb@eth0`), or just
    /// `tracepoint` when the skb is on no device (`Record::ifname` empty).
    pub events: Vec<String>,
    /// Set when the hop ends in a drop: the reason's short name (`NO_SOCKET`,
    /// `Record::short_reason()`).
    pub drop_reason: Option<String>,
}

/// Builds the hop table from `records` (any order).
///
/// - Events are taken in time order (`time_ns`; keep the given order for equal times).
/// - Each skb (`Record::skb`) has at most one *open* hop. An event extends its skb's open hop
///   if the namespace and the tuple are the same; otherwise it starts a new hop, which becomes
///   the skb's open hop.
/// - `kfree_skb` ends the skb's life with a drop: record the reason on its hop, and close it.
///   `consume_skb` ends it normally: close it. (The kernel reuses skb addresses: an event for
///   the same address after that belongs to a new skb, so it starts a new hop.)
/// - The hops are returned ordered by their first event.
pub fn hops(records: &[Record]) -> Vec<Hop> {
    // Time order. A stable sort keeps events with equal timestamps in the order given.
    let mut records: Vec<&Record> = records.iter().collect();
    records.sort_by_key(|r| r.time_ns);

    let mut hops: Vec<Hop> = Vec::new();
    // skb address → index of its open hop in `hops`.
    let mut open: HashMap<&str, usize> = HashMap::new();
    for r in records {
        let tuple = r.tuple();
        // Extend the open hop when nothing changed; otherwise this event starts a hop.
        let index = match open.get(r.skb.as_str()) {
            Some(&i) if hops[i].netns == r.netns && hops[i].tuple == tuple => i,
            _ => {
                hops.push(Hop {
                    skb: r.skb.clone(),
                    netns: r.netns,
                    tuple,
                    first_ns: r.time_ns,
                    ..Hop::default()
                });
                open.insert(r.skb.as_str(), hops.len() - 1);
                hops.len() - 1
            }
        };
        let hop = &mut hops[index];
        hop.events.push(if r.ifname.is_empty() {
            r.event.clone()
        } else {
            format!("{}@{}", r.event, r.ifname)
        });
        // The end of the skb's life: a drop (with its reason), or a normal free.
        match r.event.as_str() {
            "kfree_skb" => {
                hop.drop_reason = r.short_reason().map(str::to_string);
                open.remove(r.skb.as_str());
            }
            "consume_skb" => {
                open.remove(r.skb.as_str());
            }
            _ => {}
        }
    }
    // Hops were created in time order of their first event already; sorting is a no-op kept
    // for clarity (and stable, so equal times keep their order).
    hops.sort_by_key(|h| h.first_ns);
    hops
}

/// The hop table as aligned text: one line per hop, with the node name `node(netns)` gives
/// (or the bare inode), the time since the first hop, the tuple, and the events.
pub fn format_hop_table(hops: &[Hop], node: impl Fn(u32) -> Option<String>) -> String {
    let start = hops.first().map_or(0, |h| h.first_ns);
    let rows: Vec<[String; 5]> = hops
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mut events = compress(&h.events);
            if let Some(reason) = &h.drop_reason {
                events.push_str(&format!("  ✗ DROPPED: {reason}"));
            }
            [
                (i + 1).to_string(),
                format!("+{:.3}ms", h.first_ns.saturating_sub(start) as f64 / 1e6),
                node(h.netns).map_or_else(|| h.netns.to_string(), |n| format!("{n} ({})", h.netns)),
                h.tuple.clone(),
                events,
            ]
        })
        .collect();
    let header = ["HOP", "TIME", "NODE (NETNS)", "TUPLE", "SEEN AT"].map(String::from);
    let mut widths = [0; 4];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:>w0$}  {:>w1$}  {:<w2$}  {:<w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `a a b` → `a ×2 → b`: runs of the same event, counted.
fn compress(events: &[String]) -> String {
    let mut parts: Vec<(String, usize)> = Vec::new();
    for e in events {
        match parts.last_mut() {
            Some((last, n)) if last == e => *n += 1,
            _ => parts.push((e.clone(), 1)),
        }
    }
    parts
        .iter()
        .map(|(e, n)| {
            if *n > 1 {
                format!("{e} ×{n}")
            } else {
                e.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// The course's tracer in `path` mode: every tracepoint with an skb, a filter in the kernel.
/// Dropping it detaches everything (nothing is pinned).
pub struct PathTracer {
    tracer: Tracer,
    decoder: Decoder,
}

impl PathTracer {
    /// Attaches to every skb tracepoint of the running kernel with `filter` (tcpdump-like:
    /// `udp and port 4000`). Needs real root.
    pub fn start(filter: &str) -> Result<PathTracer> {
        collection::check_privileges()?;
        let filter = tracer::filter::parse(filter)?;
        let kernel = KernelInfo::load()?;
        let tracepoints = btf::skb_tracepoints(&kernel.btf)?;
        let tracer = Tracer::load(&kernel, &tracepoints, filter, false)
            .context("loading the path tracer")?;
        let decoder = Decoder {
            slot_names: tracer.slot_names.clone(),
            reasons: kernel.reasons.clone(),
            kallsyms: Kallsyms::load().unwrap_or_else(|_| Kallsyms::parse("")),
            nodes: None,
            clock: Clock::now(),
            conntrack: kernel.conntrack.clone().ok(),
        };
        Ok(PathTracer { tracer, decoder })
    }

    /// The events reported until none came for `quiet` (at most `within` in all), decoded.
    pub fn records(&mut self, quiet: Duration, within: Duration) -> Result<Vec<Record>> {
        let deadline = Instant::now() + within;
        let mut records = Vec::new();
        while Instant::now() < deadline {
            let decoder = &mut self.decoder;
            let n = self
                .tracer
                .poll(quiet, |ev| records.push(decoder.decode(ev)))?;
            if n == 0 {
                break;
            }
        }
        Ok(records)
    }
}
