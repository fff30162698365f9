//! `--explain`: why did a UDP reply die with `NO_SOCKET`?
//!
//! The story's answer: the reply came back from the wrong address. The client's namespace had
//! sent `172.17.0.2:34320 > 192.168.0.239:4000`, which its MASQUERADE rewrote; conntrack then
//! expects the reply `192.168.0.239:4000 > 172.18.0.3:34320` and would reverse the NAT for it.
//! The reply that arrived was `172.18.0.1:4000 > 172.18.0.3:34320`: same destination, same
//! ports, other source. No conntrack match, no reverse NAT, no socket listening on
//! 172.18.0.3:34320 — dropped.
//!
//! So: read the conntrack table of the namespace where the datagram died, and look for an entry
//! whose REPLY tuple equals the dropped datagram except for the source address. The matching is
//! a pure function ([`explain_no_socket`]) over parsed entries ([`parse_conntrack`]); finding the
//! table of a namespace ([`read_conntrack`]: `/proc`, or netlink where the kernel has no
//! `/proc/net/nf_conntrack`) is the only part that touches the system.

use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;

use anyhow::{bail, Context as _, Result};

/// One direction of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

impl std::fmt::Display for Flow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} > {}",
            endpoint(self.src, self.sport),
            endpoint(self.dst, self.dport)
        )
    }
}

fn endpoint(a: IpAddr, port: u16) -> String {
    match a {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// One line of `/proc/net/nf_conntrack`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// `udp`, `tcp`, …
    pub proto: String,
    /// The flow as first seen (the request).
    pub original: Flow,
    /// The flow conntrack expects back (the reply, after NAT).
    pub reply: Flow,
    /// No packet has been seen in the reply direction yet.
    pub unreplied: bool,
}

/// Parses `/proc/net/nf_conntrack` text, e.g.
/// `ipv4 2 udp 17 28 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED]
///  src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 use=2`.
/// The first `src/dst/sport/dport` group is the original direction, the second the reply.
/// Entries without ports (ICMP, …) and unparsable lines are skipped.
pub fn parse_conntrack(text: &str) -> Vec<CtEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<CtEntry> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let proto = words.get(2)?.to_string();
    let mut src = Vec::new();
    let mut dst = Vec::new();
    let mut sport = Vec::new();
    let mut dport = Vec::new();
    for w in &words {
        if let Some(v) = w.strip_prefix("src=") {
            src.push(v.parse::<IpAddr>().ok()?);
        } else if let Some(v) = w.strip_prefix("dst=") {
            dst.push(v.parse::<IpAddr>().ok()?);
        } else if let Some(v) = w.strip_prefix("sport=") {
            sport.push(v.parse::<u16>().ok()?);
        } else if let Some(v) = w.strip_prefix("dport=") {
            dport.push(v.parse::<u16>().ok()?);
        }
    }
    if src.len() != 2 || dst.len() != 2 || sport.len() != 2 || dport.len() != 2 {
        return None;
    }
    let flow = |i: usize| Flow {
        src: src[i],
        dst: dst[i],
        sport: sport[i],
        dport: dport[i],
    };
    Some(CtEntry {
        proto,
        original: flow(0),
        reply: flow(1),
        unreplied: words.contains(&"[UNREPLIED]"),
    })
}

/// The explanation for a UDP datagram `dropped` with NO_SOCKET, if the namespace's conntrack has
/// an entry expecting this reply from another address (same destination, same ports).
pub fn explain_no_socket(dropped: &Flow, entries: &[CtEntry]) -> Option<String> {
    let e = entries.iter().find(|e| {
        e.proto == "udp"
            && e.reply.dst == dropped.dst
            && e.reply.dport == dropped.dport
            && e.reply.sport == dropped.sport
            && e.reply.src != dropped.src
    })?;
    Some(format!(
        "expected the reply from {}, got it from {} — conntrack could not reverse the NAT \
         (request {}{})",
        endpoint(e.reply.src, e.reply.sport),
        endpoint(dropped.src, dropped.sport),
        e.original,
        if e.unreplied { ", still UNREPLIED" } else { "" },
    ))
}

fn netns_inode(path: &str) -> Option<u64> {
    fs::metadata(path).ok().map(|m| m.ino())
}

/// Reads the conntrack table of the network namespace with inode `netns`.
///
/// `/proc/PID/ns/net` names the namespace of process PID, so: find a task (process or thread)
/// in that namespace — or, if no task is in it, a file descriptor that holds it (as the
/// course's `netlab::Netns` does) — open it, and read the table from inside it with
/// `netlab::conntrack`: `/proc/thread-self/net/nf_conntrack` seen by a helper thread that
/// entered the namespace (NOT `/proc/self/net`, which follows the main thread's namespace),
/// or, on kernels built without that file, the same table over netlink.
pub fn read_conntrack(netns: u32) -> Result<String> {
    let netns = netns as u64;
    let namespace = netlab::Netns::open(&find_namespace(netns)?)?;
    let (table, _source) = netlab::conntrack::read_any(&namespace)
        .context("the namespace's conntrack table is not readable (is conntrack in use there?)")?;
    Ok(table)
}

/// A path that opens the network namespace with inode `netns`: a task's `ns/net`, or a
/// file descriptor that holds it.
pub(crate) fn find_namespace(netns: u64) -> Result<String> {
    let pids: Vec<String> = fs::read_dir("/proc")
        .context("cannot list /proc")?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    for pid in &pids {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for tid in tasks.filter_map(|e| e.ok()?.file_name().into_string().ok()) {
            let path = format!("/proc/{pid}/task/{tid}/ns/net");
            if netns_inode(&path) == Some(netns) {
                return Ok(path);
            }
        }
    }
    let want = format!("net:[{netns}]");
    for pid in &pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.filter_map(|e| e.ok()) {
            if fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().map(str::to_string))
                == Some(want.clone())
            {
                return Ok(fd.path().to_string_lossy().into_owned());
            }
        }
    }
    bail!("no process or file descriptor holds network namespace {netns} any more")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dind2's table in the story, including the stray reply's own new entry.
    const DIND2: &str = "\
ipv4     2 udp      17 28 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED] src=172.18.0.3 dst=172.18.0.1 sport=34320 dport=4000 mark=0 zone=0 use=2
ipv4     2 icmp     1 29 src=172.18.0.3 dst=172.18.0.1 type=3 code=3 id=0 src=172.18.0.1 dst=172.18.0.3 type=0 code=0 id=0 mark=0 use=2
garbage
";

    fn flow(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
        }
    }

    #[test]
    fn parses_both_directions() {
        let entries = parse_conntrack(DIND2);
        assert_eq!(entries.len(), 2, "icmp and garbage lines are skipped");
        assert_eq!(
            entries[0].original,
            flow("172.17.0.2", 34320, "192.168.0.239", 4000)
        );
        assert_eq!(
            entries[0].reply,
            flow("192.168.0.239", 4000, "172.18.0.3", 34320)
        );
        assert!(entries[0].unreplied);
    }

    #[test]
    fn the_story_is_explained() {
        let entries = parse_conntrack(DIND2);
        let dropped = flow("172.18.0.1", 4000, "172.18.0.3", 34320);
        let text = explain_no_socket(&dropped, &entries).unwrap();
        assert!(
            text.starts_with(
                "expected the reply from 192.168.0.239:4000, got it from 172.18.0.1:4000 — \
                 conntrack could not reverse the NAT"
            ),
            "{text}"
        );
        assert!(
            text.contains("request 172.17.0.2:34320 > 192.168.0.239:4000"),
            "{text}"
        );
    }

    #[test]
    fn no_explanation_without_a_near_miss() {
        let entries = parse_conntrack(DIND2);
        // Other port: nothing expected it.
        assert_eq!(
            explain_no_socket(&flow("172.18.0.1", 4000, "172.18.0.3", 5555), &entries),
            None
        );
        // The exact expected reply would have matched conntrack: not this failure.
        assert_eq!(
            explain_no_socket(&flow("192.168.0.239", 4000, "172.18.0.3", 34320), &entries),
            None
        );
        assert_eq!(
            explain_no_socket(&flow("10.0.0.1", 1, "10.0.0.2", 2), &[]),
            None
        );
    }

    #[test]
    fn ipv6_entries() {
        let text = "ipv6     10 udp      17 29 src=fd00:0000:0000:0000:0000:0000:0000:0002 dst=fd00:0000:0000:0000:0000:0000:0000:0001 sport=5000 dport=53 [UNREPLIED] src=fd00:0000:0000:0000:0000:0000:0000:0001 dst=fd00:0000:0000:0000:0000:0000:0000:0002 sport=53 dport=5000 mark=0 zone=0 use=2\n";
        let entries = parse_conntrack(text);
        let dropped = flow("fd00::99", 53, "fd00::2", 5000);
        let text = explain_no_socket(&dropped, &entries).unwrap();
        assert!(
            text.starts_with("expected the reply from [fd00::1]:53, got it from [fd00::99]:53"),
            "{text}"
        );
    }
}
