//! From raw [`Event`]s to lines people (aligned columns) and scripts (`--json`) read.
//!
//! Collection (the kernel side and the ring buffer) never formats anything; this module never
//! touches the kernel. [`Decoder`] turns an event into a [`Record`] using the name caches —
//! tracepoint names, drop-reason names from BTF, kernel symbols, lab node names — and the
//! `format_*` functions are pure, so they are tested without root.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use nix::time::ClockId;
use serde::Serialize;
use tracer_common::Event;

use crate::btf::DropReasons;
use crate::conntrack::{Ct, CtDecoder};
use crate::kallsyms::Kallsyms;
use crate::nodes::NodeNames;

/// One event, decoded. This is also the `--json` schema (one object per line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Record {
    /// Wall-clock time, UTC, `HH:MM:SS.micros`.
    pub time: String,
    /// Nanoseconds since the Unix epoch.
    pub time_ns: u64,
    /// The tracepoint, e.g. `kfree_skb`, `net_dev_xmit`.
    pub event: String,
    /// The skb's kernel address, `0xffff…`: the same at every hop of one packet.
    pub skb: String,
    /// Network namespace inode (0 = unknown).
    pub netns: u32,
    /// Lab node name of that namespace, when a running lab registered it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub ifindex: u32,
    pub ifname: String,
    /// `skb->len`.
    pub len: u32,
    pub cpu: u32,
    /// `udp`, `tcp`, `icmp`, `icmp6`, `ip` (other IPv4 protocol), `ip6`, or `` (not IP).
    pub proto: String,
    /// IP protocol number (17 for UDP, …), 0 when not IP.
    pub ip_proto: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_type: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub icmp_code: Option<u8>,
    /// Full enumerator name from BTF, e.g. `SKB_DROP_REASON_NO_SOCKET` (kfree_skb only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<u32>,
    /// Where the skb was freed, `symbol+0xoff`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// `--explain`: what went wrong, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
    /// The skb's conntrack entry at this hop; absent when it has none (yet), or the kernel has
    /// no conntrack.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ct: Option<Ct>,
    /// `path --verdicts`: the nftables rules that decided this packet's fate in this
    /// namespace, in the order the kernel applied them (see [`crate::nftrace`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verdicts: Vec<crate::nftrace::Verdict>,
}

impl Record {
    /// `src:sport > dst:dport` (IPv6 in brackets), `src > dst type T code C` for ICMP,
    /// `src > dst` otherwise, `-` when not IP.
    pub fn tuple(&self) -> String {
        let (Some(src), Some(dst)) = (self.src, self.dst) else {
            return "-".into();
        };
        let ep = |a: IpAddr, p: Option<u16>| match (a, p) {
            (IpAddr::V4(a), Some(p)) => format!("{a}:{p}"),
            (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
            (a, None) => a.to_string(),
        };
        let mut s = format!("{} > {}", ep(src, self.sport), ep(dst, self.dport));
        if let (Some(t), Some(c)) = (self.icmp_type, self.icmp_code) {
            s.push_str(&format!(" type {t} code {c}"));
        }
        s
    }

    /// `NO_SOCKET` for `SKB_DROP_REASON_NO_SOCKET`.
    pub fn short_reason(&self) -> Option<&str> {
        self.reason
            .as_deref()
            .map(|r| r.strip_prefix("SKB_DROP_REASON_").unwrap_or(r))
    }

    /// `4026532417` or `4026532417(dind2)`.
    pub fn netns_label(&self) -> String {
        match &self.node {
            Some(n) => format!("{}({n})", self.netns),
            None => self.netns.to_string(),
        }
    }

    /// `eth0(2)`, or `-` without a device.
    pub fn iface_label(&self) -> String {
        if self.ifindex == 0 {
            "-".into()
        } else {
            format!("{}({})", self.ifname, self.ifindex)
        }
    }
}

/// Name of an IP protocol number for display.
pub fn proto_name(l3: u8, l4: u8) -> &'static str {
    match (l3, l4) {
        (0, _) => "",
        (_, 17) => "udp",
        (_, 6) => "tcp",
        (4, 1) => "icmp",
        (6, 58) => "icmp6",
        (4, _) => "ip",
        _ => "ip6",
    }
}

/// CLOCK_MONOTONIC (what `bpf_ktime_get_ns` returns) to wall-clock time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    /// realtime − monotonic, in ns.
    offset_ns: i128,
}

fn clock_ns(clock: ClockId) -> i128 {
    // Both clocks always exist on Linux: an error here would be a kernel bug.
    let ts = nix::time::clock_gettime(clock).expect("clock_gettime");
    ts.tv_sec() as i128 * 1_000_000_000 + ts.tv_nsec() as i128
}

impl Clock {
    /// Measures the offset now.
    pub fn now() -> Clock {
        let mono = clock_ns(ClockId::CLOCK_MONOTONIC);
        let real = clock_ns(ClockId::CLOCK_REALTIME);
        Clock {
            offset_ns: real - mono,
        }
    }

    /// A fixed offset (tests).
    pub fn with_offset(offset_ns: i128) -> Clock {
        Clock { offset_ns }
    }

    /// Unix-epoch nanoseconds of a monotonic timestamp.
    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }
}

/// `HH:MM:SS.micros` (UTC) of a Unix-epoch time in ns.
pub fn format_time(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        (day / 60) % 60,
        day % 60,
        micros
    )
}

fn ip(l3: u8, b: &[u8; 16]) -> Option<IpAddr> {
    match l3 {
        4 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        6 => Some(IpAddr::V6(Ipv6Addr::from(*b))),
        _ => None,
    }
}

/// Turns events into records with every name resolved.
pub struct Decoder {
    /// Tracepoint name of each slot.
    pub slot_names: Vec<String>,
    pub reasons: DropReasons,
    pub kallsyms: Kallsyms,
    pub nodes: Option<NodeNames>,
    pub clock: Clock,
    /// Reads the conntrack part of events (`None`: the kernel has no conntrack).
    pub conntrack: Option<CtDecoder>,
}

impl Decoder {
    /// Decodes one event.
    pub fn decode(&mut self, ev: &Event) -> Record {
        let event = self
            .slot_names
            .get(ev.slot as usize)
            .cloned()
            .unwrap_or_else(|| format!("slot{}", ev.slot));
        let is_drop = event == "kfree_skb";
        let ports = ev.l4 == 6 || ev.l4 == 17;
        let icmp = (ev.l3 == 4 && ev.l4 == 1) || (ev.l3 == 6 && ev.l4 == 58);
        let unix_ns = self.clock.unix_ns(ev.mono_ns);
        let ifname_len = ev.ifname.iter().position(|&c| c == 0).unwrap_or(16);
        Record {
            time: format_time(unix_ns),
            time_ns: unix_ns,
            skb: format!("{:#x}", ev.skb),
            netns: ev.netns,
            node: self
                .nodes
                .as_mut()
                .and_then(|n| n.name(ev.netns).map(str::to_string)),
            ifindex: ev.ifindex,
            ifname: String::from_utf8_lossy(&ev.ifname[..ifname_len]).into_owned(),
            len: ev.len,
            cpu: ev.cpu,
            proto: proto_name(ev.l3, ev.l4).into(),
            ip_proto: if ev.l3 == 0 { 0 } else { ev.l4 },
            src: ip(ev.l3, &ev.saddr),
            dst: ip(ev.l3, &ev.daddr),
            sport: (ev.l3 != 0 && ports).then_some(ev.sport),
            dport: (ev.l3 != 0 && ports).then_some(ev.dport),
            icmp_type: icmp.then_some(ev.icmp_type),
            icmp_code: icmp.then_some(ev.icmp_code),
            reason: is_drop.then(|| self.reasons.name(ev.reason)),
            reason_code: is_drop.then_some(ev.reason),
            location: (ev.location != 0).then(|| self.kallsyms.format(ev.location)),
            event,
            explain: None,
            ct: self.conntrack.as_ref().and_then(|c| c.decode(ev)),
            verdicts: Vec::new(),
        }
    }
}

/// What the tracer is showing: it decides the columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Drops,
    Path,
}

/// The header line for human output.
pub fn header(mode: Mode) -> String {
    match mode {
        Mode::Drops => format!(
            "{:<15} {:<22} {:<14} {:<5} {:<45} {:<18} {}",
            "TIME", "NETNS", "IFACE", "PROTO", "TUPLE", "REASON", "LOCATION"
        ),
        Mode::Path => format!(
            "{:<15} {:<18} {:<22} {:<14} {:<5} {:<45} {}",
            "TIME", "SKB", "NETNS", "IFACE", "PROTO", "TUPLE", "EVENT"
        ),
    }
}

/// One aligned line (plus an indented `explain` line when there is one).
pub fn format_human(r: &Record, mode: Mode) -> String {
    let mut line = match mode {
        Mode::Drops => format!(
            "{:<15} {:<22} {:<14} {:<5} {:<45} {:<18} {}",
            r.time,
            r.netns_label(),
            r.iface_label(),
            r.proto,
            r.tuple(),
            r.short_reason().unwrap_or("-"),
            r.location.as_deref().unwrap_or("-"),
        ),
        Mode::Path => {
            let mut event = r.event.clone();
            if let Some(reason) = r.short_reason() {
                event.push_str(&format!(" {reason}"));
            }
            if let Some(loc) = &r.location {
                event.push_str(&format!(" at {loc}"));
            }
            if let Some(ct) = &r.ct {
                event.push_str(&format!("  ct {}", ct.compact()));
            }
            format!(
                "{:<15} {:<18} {:<22} {:<14} {:<5} {:<45} {}",
                r.time,
                r.skb,
                r.netns_label(),
                r.iface_label(),
                r.proto,
                r.tuple(),
                event
            )
        }
    };
    if let Some(e) = &r.explain {
        line.push_str("\n    ↳ ");
        line.push_str(e);
    }
    // A chain that ran out of rules decided nothing: left out here, kept in JSON.
    for v in r.verdicts.iter().filter(|v| !v.is_end_of_rules()) {
        line.push_str("\n    ↳ nft ");
        line.push_str(&v.line());
    }
    line
}

/// One JSON object, no trailing newline.
pub fn format_json(r: &Record) -> String {
    serde_json::to_string(r).expect("a Record always serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder() -> Decoder {
        Decoder {
            slot_names: vec!["kfree_skb".into(), "net_dev_xmit".into()],
            reasons: DropReasons::from_pairs([(3, "SKB_DROP_REASON_NO_SOCKET")]),
            kallsyms: Kallsyms::parse("ffffffff81c0a2b0 T __udp4_lib_rcv\n"),
            nodes: None,
            clock: Clock::with_offset(1_700_000_000_000_000_000),
            conntrack: None,
        }
    }

    /// The reply of the story, dropped in dind2.
    fn story_drop() -> Event {
        let mut ev = Event {
            mono_ns: 3_723_000_001_000, // 1h 2m 3s + 1 µs after the offset
            skb: 0xffff_8880_0a1b_2c00,
            location: 0xffff_ffff_81c0_a3f1,
            reason: 3,
            netns: 4026532588,
            ifindex: 2,
            len: 36,
            slot: 0,
            l3: 4,
            l4: 17,
            sport: 4000,
            dport: 34320,
            ..Default::default()
        };
        ev.saddr[..4].copy_from_slice(&[172, 18, 0, 1]);
        ev.daddr[..4].copy_from_slice(&[172, 18, 0, 3]);
        ev.ifname[..4].copy_from_slice(b"eth0");
        ev
    }

    #[test]
    fn decodes_the_story_drop() {
        let r = decoder().decode(&story_drop());
        assert_eq!(r.tuple(), "172.18.0.1:4000 > 172.18.0.3:34320");
        assert_eq!(r.reason.as_deref(), Some("SKB_DROP_REASON_NO_SOCKET"));
        assert_eq!(r.short_reason(), Some("NO_SOCKET"));
        assert_eq!(r.location.as_deref(), Some("__udp4_lib_rcv+0x141"));
        assert_eq!(r.iface_label(), "eth0(2)");
        assert_eq!(r.proto, "udp");
        // 1_700_000_000 s is 22:13:20 UTC; plus 1h 2m 3s and 1 µs.
        assert_eq!(r.time, "23:15:23.000001");
    }

    #[test]
    fn human_line_is_aligned() {
        let mut r = decoder().decode(&story_drop());
        r.node = Some("dind2".into());
        let line = format_human(&r, Mode::Drops);
        assert_eq!(
            line,
            "23:15:23.000001 4026532588(dind2)      eth0(2)        udp   \
             172.18.0.1:4000 > 172.18.0.3:34320            NO_SOCKET          __udp4_lib_rcv+0x141"
        );
        let h = header(Mode::Drops);
        assert_eq!(h.find("TUPLE"), line.find("172.18"));
        assert_eq!(h.find("REASON"), line.find("NO_SOCKET"));
    }

    #[test]
    fn json_keeps_full_names() {
        let r = decoder().decode(&story_drop());
        let v: serde_json::Value = serde_json::from_str(&format_json(&r)).unwrap();
        assert_eq!(v["reason"], "SKB_DROP_REASON_NO_SOCKET");
        assert_eq!(v["reason_code"], 3);
        assert_eq!(v["src"], "172.18.0.1");
        assert_eq!(v["sport"], 4000);
        assert_eq!(v["netns"], 4026532588u32);
        assert!(v.get("node").is_none());
    }

    #[test]
    fn ipv6_icmp_and_path_lines() {
        let mut ev = story_drop();
        ev.slot = 1;
        ev.l3 = 6;
        ev.l4 = 58;
        ev.icmp_type = 1;
        ev.icmp_code = 4;
        ev.saddr = Ipv6Addr::LOCALHOST.octets();
        ev.daddr = Ipv6Addr::LOCALHOST.octets();
        ev.location = 0;
        let r = decoder().decode(&ev);
        assert_eq!(r.tuple(), "::1 > ::1 type 1 code 4");
        assert_eq!(r.reason, None);
        let line = format_human(&r, Mode::Path);
        assert!(
            line.starts_with("23:15:23.000001 0xffff88800a1b2c00 4026532588 "),
            "{line}"
        );
        assert!(line.ends_with(" net_dev_xmit"), "{line}");

        ev.l4 = 17;
        let r = decoder().decode(&ev);
        assert_eq!(r.tuple(), "[::1]:4000 > [::1]:34320");
    }

    #[test]
    fn not_ip() {
        let mut ev = story_drop();
        ev.l3 = 0;
        let r = decoder().decode(&ev);
        assert_eq!(r.tuple(), "-");
        assert_eq!(r.proto, "");
        assert_eq!(r.sport, None);
    }
}
