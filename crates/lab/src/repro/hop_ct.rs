//! The conntrack line under each hop of `repro`'s hop table.
//!
//! Exercise 7's answer groups the tracer's events into hops and prints the table; the tracer
//! also read, at every event, the conntrack entry the skb carried (`Record::ct`: `skb->_nfct`
//! followed to the `struct nf_conn`). This module adds that to the table without changing the
//! exercise: under each hop, which entry the skb had (state, both tuples, status bits) and
//! whether NAT is set up on it. Then it reads the story out of those entries, in the kernel's
//! own words — only what the events show, nothing assumed.

use solution_skb_path::{Hop, Record};
use tracer::conntrack::{Ct, CtDecoder};

/// Whether the tracer can read conntrack entries on this kernel, or why not (a kernel without
/// conntrack, or a modular conntrack whose module is not loaded). Then
/// the table gets no `ct:` lines: "none on the skb" would be a claim nobody checked.
pub fn readable() -> Result<(), String> {
    let btf =
        tracer::btf::Btf::from_file(tracer::btf::VMLINUX_BTF).map_err(|e| format!("{e:#}"))?;
    CtDecoder::load_running(&btf)
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// What conntrack `hop`'s events carried, in order, each change once (`None`: no entry on the
/// skb at that event; conntrack attaches one in its first netfilter hook). A hop's events are
/// its skb's events in its namespace with its tuple, from its first event until the skb's next
/// hop starts (`hops` is the whole table, to find that next hop).
fn cts_of(hop: &Hop, hops: &[Hop], records: &[Record]) -> Vec<Option<Ct>> {
    let until = hops
        .iter()
        .filter(|h| h.skb == hop.skb && h.first_ns > hop.first_ns)
        .map(|h| h.first_ns)
        .min()
        .unwrap_or(u64::MAX);
    let mut records: Vec<&Record> = records
        .iter()
        .filter(|r| r.skb == hop.skb && r.netns == hop.netns && r.tuple() == hop.tuple)
        .filter(|r| r.time_ns >= hop.first_ns && r.time_ns < until)
        .collect();
    records.sort_by_key(|r| r.time_ns);
    let mut seen: Vec<Option<Ct>> = Vec::new();
    for ct in records.iter().map(|r| r.ct.clone()) {
        if seen.last() != Some(&ct) {
            seen.push(ct);
        }
    }
    seen
}

/// One entry in a few words: `new orig 1.2.3.4:5>… reply …>… [CONFIRMED,DST_NAT] (DNAT)`.
fn describe(ct: &Ct) -> String {
    if ct.orig.is_none() {
        return ct.compact();
    }
    format!("{} ({})", ct.compact(), ct.nat())
}

/// `table` (the text of `format_hop_table`: a header, then one line per hop of `hops`) with a
/// `ct:` line under each hop.
pub fn annotate(table: &str, hops: &[Hop], records: &[Record]) -> String {
    let mut lines = table.lines();
    let Some(header) = lines.next() else {
        return table.to_string();
    };
    let indent = " ".repeat(header.find("NODE").unwrap_or(4));
    let mut out = format!("{header}\n");
    for (line, hop) in lines.zip(hops) {
        out.push_str(line);
        out.push('\n');
        let cts = cts_of(hop, hops, records);
        let text = match cts.as_slice() {
            [] | [None] => "none on the skb".to_string(),
            cts => cts
                .iter()
                .map(|ct| ct.as_ref().map_or_else(|| "none".to_string(), describe))
                .collect::<Vec<_>>()
                .join(" → "),
        };
        out.push_str(&format!("{indent}└ ct: {text}\n"));
    }
    out
}

/// What the entries say about the story, when the events show it: the client's entry in the
/// node `client_node` (SNAT set up, waiting for an answer with its reply tuple), and the entry
/// the answer `answer` (`src:sport>dst:dport`) started there instead — seen on the answer's
/// own skb, or on the ICMP error about it, which is `related_reply` to that entry.
pub fn story(
    hops: &[Hop],
    records: &[Record],
    node_of: impl Fn(u32) -> Option<String>,
    client_node: &str,
    answer: &str,
) -> Option<String> {
    let in_node = |h: &&Hop| node_of(h.netns).as_deref() == Some(client_node);
    let cts: Vec<Ct> = hops
        .iter()
        .filter(in_node)
        .flat_map(|h| cts_of(h, hops, records))
        .flatten()
        .collect();
    let client = cts
        .iter()
        .find(|ct| ct.has("SRC_NAT") && ct.orig.as_deref() != Some(answer))?;
    let own = cts.iter().find(|ct| ct.orig.as_deref() == Some(answer))?;
    Some(format!(
        "In conntrack's own words, in {client_node}: the client's entry {orig} is set up for \
         SNAT and waits for the answer {expected}.\nThe answer came as {answer}: it matched no \
         entry and started its own ({state} on {its}, {status}).",
        orig = client.orig.as_deref().unwrap_or("?"),
        expected = client.reply.as_deref().unwrap_or("?"),
        state = own.state,
        its = if own.state.starts_with("related") {
            "the ICMP error about it"
        } else {
            "its skb"
        },
        status = if own.status.is_empty() {
            "unconfirmed".to_string()
        } else {
            own.status.join(",")
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ct(state: &str, orig: &str, reply: &str, status: &[&str]) -> Ct {
        Ct {
            state: state.into(),
            orig: Some(orig.into()),
            reply: Some(reply.into()),
            status: status.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn record(time_ns: u64, skb: &str, netns: u32, src: &str, dst: &str, ct: Option<Ct>) -> Record {
        let (src, dst): (std::net::SocketAddr, std::net::SocketAddr) =
            (src.parse().unwrap(), dst.parse().unwrap());
        Record {
            time_ns,
            skb: skb.into(),
            netns,
            event: "netif_receive_skb".into(),
            ifname: "eth0".into(),
            proto: "udp".into(),
            ip_proto: 17,
            src: Some(src.ip()),
            dst: Some(dst.ip()),
            sport: Some(src.port()),
            dport: Some(dst.port()),
            ct,
            ..Record::default()
        }
    }

    /// The client's datagram in dind2 (its entry born, then SNAT set up), and the answer, whose
    /// ICMP error names the entry it started: each hop gets its line, the story its words.
    #[test]
    fn each_hop_gets_its_ct_line_and_the_story_is_read_from_them() {
        let client = ct(
            "new",
            "172.17.0.2:34320>192.168.0.239:4000",
            "192.168.0.239:4000>172.18.0.3:34320",
            &["CONFIRMED", "SRC_NAT"],
        );
        let answers = ct(
            "related_reply",
            "172.18.0.1:4000>172.18.0.3:34320",
            "172.18.0.3:34320>172.18.0.1:4000",
            &["CONFIRMED"],
        );
        let (c, s, a) = ("172.17.0.2:34320", "192.168.0.239:4000", "172.18.0.3:34320");
        let records = vec![
            record(1, "0x1", 7, c, s, None),
            record(2, "0x1", 7, c, s, Some(client.clone())),
            record(3, "0x1", 7, a, s, Some(client.clone())),
            record(4, "0x2", 7, "172.18.0.1:4000", a, None),
        ];
        let mut icmp = record(5, "0x3", 7, a, "172.18.0.1:4000", Some(answers));
        icmp.proto = "icmp".into();
        let records = [records, vec![icmp]].concat();
        let hops = solution_skb_path::hops(&records);
        assert_eq!(hops.len(), 4);
        let node_of = |n: u32| (n == 7).then(|| "dind2".to_string());
        let table = solution_skb_path::format_hop_table(&hops, node_of);
        let text = annotate(&table, &hops, &records);
        let ct_lines: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("└ ct: "))
            .collect();
        assert_eq!(
            ct_lines,
            [
                "none → new orig 172.17.0.2:34320>192.168.0.239:4000 reply \
                 192.168.0.239:4000>172.18.0.3:34320 [CONFIRMED,SRC_NAT] (SNAT)",
                "new orig 172.17.0.2:34320>192.168.0.239:4000 reply \
                 192.168.0.239:4000>172.18.0.3:34320 [CONFIRMED,SRC_NAT] (SNAT)",
                "none on the skb",
                "related_reply orig 172.18.0.1:4000>172.18.0.3:34320 reply \
                 172.18.0.3:34320>172.18.0.1:4000 [CONFIRMED] (no NAT)",
            ]
        );
        let words = story(
            &hops,
            &records,
            node_of,
            "dind2",
            "172.18.0.1:4000>172.18.0.3:34320",
        )
        .expect("the story's entries are all there");
        assert!(
            words.contains("waits for the answer 192.168.0.239:4000>172.18.0.3:34320"),
            "{words}"
        );
        assert!(
            words.contains("related_reply on the ICMP error about it, CONFIRMED"),
            "{words}"
        );
        // Without the answer's entry, nothing is claimed.
        assert_eq!(
            story(
                &hops,
                &records[..4],
                node_of,
                "dind2",
                "172.18.0.1:4000>172.18.0.3:34320"
            ),
            None
        );
    }
}
