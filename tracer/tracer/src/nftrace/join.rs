//! Putting each verdict under the hop it belongs to.
//!
//! Hops come from the eBPF ring buffer, verdicts from netlink: two streams, no common key. A
//! verdict carries the packet's headers as the rule saw them, and its namespace; a hop carries
//! the same tuple, its namespace, the skb's address and a kernel timestamp. So a verdict joins
//! the packet's visit to that namespace: among the hops in the same namespace with the same
//! tuple seen before the verdict arrived (or just after: a locally sent packet meets the
//! `output` hook before its first tracepoint), the latest one names the skb; the verdict goes under
//! the *first* hop of that skb in that visit (where the packet entered the namespace, or was
//! sent from it). A rule that rewrote the packet (DNAT) is seen with the tuple from before the
//! rewrite, so it lands on a hop from before it too.
//!
//! Both streams lag a little, so records are held back for [`HOLD`] before being printed, and
//! verdicts wait [`SETTLE`] for their hop to come in. A verdict that finds no hop (its packet
//! was not shown: another filter, another tracepoint set) is counted, not printed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Verdict;
use crate::output::Record;

/// How long a hop waits for its verdicts before it is printed.
pub const HOLD: Duration = Duration::from_millis(300);
/// How long a verdict waits for its hop to arrive from the ring buffer.
pub const SETTLE: Duration = Duration::from_millis(50);
/// Hops of one skb in one namespace, each less than this after the one before, are one visit
/// (as long as no hop in between ended the skb). Generous: on a slow machine, or a kernel
/// emulated in QEMU, the hops of one visit are milliseconds apart.
const VISIT_GAP_NS: u64 = 50_000_000;
/// A verdict may be received before the packet's first hop in the namespace is traced: the
/// `output` hook runs before `net_dev_queue`, and the tracer's thread may be woken at once.
const EARLY_NS: u64 = 5_000_000;
/// A verdict received more than this after a hop does not belong to it.
const LATEST_NS: u64 = 1_000_000_000;

/// Holds hops and verdicts until they can be joined.
#[derive(Default)]
pub struct Joiner {
    records: VecDeque<(Instant, Record)>,
    verdicts: Vec<(Instant, Verdict)>,
    /// Verdicts that matched no hop.
    pub unmatched: u64,
}

fn same_packet(r: &Record, v: &Verdict) -> bool {
    r.netns == v.netns
        && r.ip_proto == v.proto
        && r.src == v.src
        && r.dst == v.dst
        && r.sport == v.sport
        && r.dport == v.dport
}

/// The hop where the skb was freed: its address may then be reused by another packet.
fn ends_the_skb(r: &Record) -> bool {
    matches!(r.event.as_str(), "kfree_skb" | "consume_skb")
}

impl Joiner {
    pub fn push_record(&mut self, record: Record, now: Instant) {
        self.records.push_back((now, record));
    }

    pub fn push_verdict(&mut self, verdict: Verdict, now: Instant) {
        self.verdicts.push((now, verdict));
    }

    /// Which held record a verdict belongs to, if any.
    fn target(&self, v: &Verdict) -> Option<usize> {
        let latest = self.records.iter().rposition(|(_, r)| {
            same_packet(r, v)
                && r.time_ns <= v.time_ns + EARLY_NS
                && v.time_ns.saturating_sub(r.time_ns) <= LATEST_NS
        })?;
        let last = &self.records[latest].1;
        let mut first = latest;
        let mut later = last.time_ns;
        for i in (0..latest).rev() {
            let r = &self.records[i].1;
            if !same_packet(r, v) {
                continue;
            }
            // Another skb, an earlier life of this skb's address (it ended there), or too long
            // before: the visit began after it.
            if r.skb != last.skb
                || ends_the_skb(r)
                || later.saturating_sub(r.time_ns) > VISIT_GAP_NS
            {
                break;
            }
            first = i;
            later = r.time_ns;
        }
        Some(first)
    }

    /// The records that are ready to print, verdicts attached, in order. `finish` flushes
    /// everything (the tracer is stopping).
    pub fn ready(&mut self, now: Instant, finish: bool) -> Vec<Record> {
        let waiting = std::mem::take(&mut self.verdicts);
        for (arrived, v) in waiting {
            if !finish && now.duration_since(arrived) < SETTLE {
                self.verdicts.push((arrived, v));
                continue;
            }
            match self.target(&v) {
                Some(i) => self.records[i].1.verdicts.push(v),
                None if finish || now.duration_since(arrived) > HOLD => self.unmatched += 1,
                None => self.verdicts.push((arrived, v)),
            }
        }
        let mut out = Vec::new();
        while let Some((arrived, _)) = self.records.front() {
            if !finish && now.duration_since(*arrived) < HOLD {
                break;
            }
            out.push(self.records.pop_front().unwrap().1);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hop(event: &str, netns: u32, skb: &str, time_ns: u64, dport: u16) -> Record {
        Record {
            event: event.into(),
            netns,
            skb: skb.into(),
            time_ns,
            ip_proto: 17,
            proto: "udp".into(),
            src: Some("172.18.0.3".parse().unwrap()),
            dst: Some("192.168.0.239".parse().unwrap()),
            sport: Some(34320),
            dport: Some(dport),
            ..Default::default()
        }
    }

    fn verdict(netns: u32, time_ns: u64, dport: u16, chain: &str) -> Verdict {
        Verdict {
            netns,
            time_ns,
            proto: 17,
            src: Some("172.18.0.3".parse().unwrap()),
            dst: Some("192.168.0.239".parse().unwrap()),
            sport: Some(34320),
            dport: Some(dport),
            chain: chain.into(),
            ..Default::default()
        }
    }

    #[test]
    fn a_verdict_goes_under_the_first_hop_of_its_visit() {
        let t0 = Instant::now();
        let mut j = Joiner::default();
        // The packet arrives in the host (1), is delivered locally (1); an older packet of
        // the same flow (same skb address, reused) passed a second earlier.
        j.push_record(hop("netif_receive_skb", 1, "0xa", 1_000, 4000), t0);
        j.push_record(hop("netif_receive_skb", 1, "0xa", 2_000_000_000, 4000), t0);
        j.push_record(hop("udp_rcv", 1, "0xa", 2_000_100_000, 4000), t0);
        j.push_record(hop("netif_receive_skb", 2, "0xb", 2_000_200_000, 4000), t0);
        // Other namespace, other port: never joined.
        j.push_verdict(verdict(1, 2_000_300_000, 4000, "DOCKER"), t0);
        j.push_verdict(verdict(1, 2_000_300_000, 5555, "OTHER"), t0);
        // Not settled yet: nothing is attached and nothing is printed.
        assert!(j.ready(t0, false).is_empty());
        let out = j.ready(t0 + HOLD + SETTLE, false);
        assert_eq!(out.len(), 4);
        assert!(out[0].verdicts.is_empty(), "the older packet");
        assert_eq!(out[1].verdicts.len(), 1);
        assert_eq!(out[1].verdicts[0].chain, "DOCKER");
        assert!(out[2].verdicts.is_empty() && out[3].verdicts.is_empty());
        // The 5555 verdict waited HOLD for a hop that never came.
        j.ready(t0 + 3 * HOLD, true);
        assert_eq!(j.unmatched, 1);
    }

    /// On a slow machine the hops of one visit are milliseconds apart; a verdict still goes
    /// under the first of them, and never under an earlier packet whose freed skb address the
    /// new one reuses.
    #[test]
    fn a_slow_visit_is_one_visit_but_a_freed_skb_ends_one() {
        let t0 = Instant::now();
        let mut j = Joiner::default();
        j.push_record(hop("netif_receive_skb", 1, "0xa", 1_000_000, 4000), t0);
        j.push_record(hop("consume_skb", 1, "0xa", 2_000_000, 4000), t0);
        j.push_record(hop("netif_rx", 1, "0xa", 10_000_000, 4000), t0);
        j.push_record(hop("netif_receive_skb", 1, "0xa", 20_000_000, 4000), t0);
        j.push_record(hop("kfree_skb", 1, "0xa", 40_000_000, 4000), t0);
        j.push_verdict(verdict(1, 45_000_000, 4000, "DOCKER"), t0);
        let out = j.ready(t0 + HOLD + SETTLE, false);
        let with: Vec<&str> = out
            .iter()
            .filter(|r| !r.verdicts.is_empty())
            .map(|r| r.event.as_str())
            .collect();
        assert_eq!(with, ["netif_rx"], "{out:?}");
    }

    #[test]
    fn finishing_prints_everything_at_once() {
        let t0 = Instant::now();
        let mut j = Joiner::default();
        j.push_record(hop("net_dev_xmit", 7, "0xc", 10, 4000), t0);
        j.push_verdict(verdict(7, 20, 4000, "POSTROUTING"), t0);
        let out = j.ready(t0, true);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].verdicts[0].chain, "POSTROUTING");
    }
}
