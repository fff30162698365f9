//! The netfilter verdicts of `repro`'s hop table: which rule of the host decided the
//! client's datagram's fate — in the story, Docker's `DOCKER` chain RETURNing for
//! packets from `br-dind`, so no DNAT happened and the userland proxy got the datagram.
//!
//! The course's tracer traces nftables rules itself (`tracer path --verdicts`, see
//! `tracer::nftrace`): a table of its own in the host's namespace marks packets with
//! `meta nftrace set 1`, and the kernel reports every rule that decided. iptables-nft's
//! rules (Docker's) are nftables rules, so they are named too. The table dies with the
//! tracer's netlink socket (nftables' owner flag), whatever happens to `repro`.
//!
//! Only the host is traced, and only with the `hop-table` feature (the tracer crate needs
//! the eBPF toolchain to build). The verdicts are kept here between `finish` (after the
//! client's timeout) and `annotate` (when the hop table is printed), so the hop table's
//! code only gains one line.

use std::sync::Mutex;

/// One verdict as the hop table needs it: where (netns, tuple), when, and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub netns: u32,
    /// `src:sport > dst:dport`, as the hop table writes tuples.
    pub tuple: String,
    pub time_ns: u64,
    pub line: String,
}

/// The verdicts of the last run, for [`annotate`].
static VERDICTS: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

#[cfg(feature = "hop-table")]
pub type Tracing = tracer::nftrace::NfTrace;
#[cfg(not(feature = "hop-table"))]
pub type Tracing = ();

/// Starts tracing the host's nftables rules, before the client sends.
pub fn start(story: &story::Story) -> Option<Tracing> {
    #[cfg(feature = "hop-table")]
    {
        let started = story.world.node("host").and_then(|host| {
            let target = tracer::nftrace::Target {
                inode: host.inode() as u32,
                path: host.path(),
                label: "host".into(),
            };
            tracer::nftrace::NfTrace::start(&[target])
        });
        match started {
            Ok(tracing) => return Some(tracing),
            Err(error) => println!("  (no netfilter verdicts: {error:#})"),
        }
    }
    let _ = story;
    None
}

/// Stops tracing and keeps the rules' verdicts (policies and ends of chains are left out:
/// the table shows the rules that decided).
pub fn finish(tracing: Option<Tracing>) {
    #[cfg(feature = "hop-table")]
    if let Some(tracing) = tracing {
        let seen: Vec<Seen> = tracing
            .verdicts
            .try_iter()
            .filter(|v| v.kind == "rule" && v.rule_handle.is_some())
            .filter_map(|v| {
                let (src, dst, sport, dport) = (v.src?, v.dst?, v.sport?, v.dport?);
                Some(Seen {
                    netns: v.netns,
                    tuple: format!("{src}:{sport} > {dst}:{dport}"),
                    time_ns: v.time_ns,
                    line: v.line(),
                })
            })
            .collect();
        drop(tracing); // its table goes with its socket
        *VERDICTS.lock().unwrap_or_else(|e| e.into_inner()) = seen;
        return;
    }
    let _ = tracing;
}

/// A verdict received up to this long before the hop's first event was recorded still
/// belongs to it (the two clocks are read at slightly different moments).
const EARLY_NS: u64 = 5_000_000;

/// The hop table's text with each verdict under the hop it belongs to: the latest hop
/// (`(netns, tuple, first_ns)` per row, in the table's order) in the same namespace with the
/// same tuple that began before the verdict arrived. `text` has a header line, then one
/// line per hop (starting with its number), each maybe followed by indented lines of its own.
pub fn annotate_with(text: &str, hops: &[(u32, String, u64)], verdicts: &[Seen]) -> String {
    let mut under: Vec<Vec<&str>> = vec![Vec::new(); hops.len()];
    for v in verdicts {
        let hop = hops.iter().rposition(|(netns, tuple, first_ns)| {
            *netns == v.netns && *tuple == v.tuple && *first_ns <= v.time_ns + EARLY_NS
        });
        if let Some(i) = hop {
            under[i].push(&v.line);
        }
    }
    // A hop's line starts with its number; lines under it (the conntrack line) are indented
    // text. The verdicts go after everything already under their hop.
    let is_hop = |line: &str| line.trim_start().starts_with(|c: char| c.is_ascii_digit());
    let mut out = String::new();
    let mut hop: Option<usize> = None;
    let flush = |out: &mut String, hop: Option<usize>| {
        for verdict in hop.and_then(|h| under.get(h)).into_iter().flatten() {
            out.push_str(&format!("        ↳ nft {verdict}\n"));
        }
    };
    for (i, line) in text.lines().enumerate() {
        if i > 0 && is_hop(line) {
            flush(&mut out, hop);
            hop = Some(hop.map_or(0, |h| h + 1));
        }
        out.push_str(line);
        out.push('\n');
    }
    flush(&mut out, hop);
    out
}

/// [`annotate_with`] the verdicts kept by [`finish`].
pub fn annotate(text: &str, hops: &[(u32, String, u64)]) -> String {
    let verdicts = VERDICTS.lock().unwrap_or_else(|e| e.into_inner());
    annotate_with(text, hops, &verdicts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_return_goes_under_the_datagrams_arrival_in_the_host() {
        let text = "HOP  NODE\n1  dind2\n2  host\n   └ ct: none\n3  host\n";
        let arrival = "172.18.0.3:34320 > 192.168.0.239:4000".to_string();
        let hops = [
            (2, arrival.clone(), 100),
            (1, arrival.clone(), 200),
            (1, "172.18.0.1:60089 > 172.18.0.2:4000".to_string(), 900),
        ];
        let verdicts = [Seen {
            netns: 1,
            tuple: arrival,
            time_ns: 300,
            line: "ip nat DOCKER: iifname \"br-dind\" counter return (rule handle 4) → return"
                .into(),
        }];
        assert_eq!(
            annotate_with(text, &hops, &verdicts),
            "HOP  NODE\n1  dind2\n2  host\n   └ ct: none\n        ↳ nft ip nat DOCKER: iifname \"br-dind\" \
             counter return (rule handle 4) → return\n3  host\n"
        );
    }
}
