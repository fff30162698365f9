//! Conntrack at every hop: which connection-tracking entry the kernel attached to an skb, in
//! which direction the skb travels on it, and whether NAT is set up on it.
//!
//! Conntrack follows flows, not packets. The first packet of a flow gets a fresh `struct
//! nf_conn` in the PREROUTING (or OUTPUT) hook, with two tuples: the ORIGINAL one (the packet as
//! it came) and the REPLY one (what an answer must look like — after NAT, not simply the
//! original turned around). The entry is *unconfirmed* until the packet survives the last
//! netfilter hook; then it goes into the table (`IPS_CONFIRMED`) and later packets find it.
//! Every skb carries a pointer to its entry in `skb->_nfct`, with its `enum ip_conntrack_info`
//! in the low 3 bits: `IP_CT_NEW` (it started the entry), `IP_CT_ESTABLISHED` (a later packet of
//! the original direction), `IP_CT_ESTABLISHED_REPLY` (an answer), `IP_CT_RELATED` (an ICMP
//! error about the flow, …).
//!
//! The kernel side copies `_nfct`, `nf_conn.status` and both tuples as raw bytes
//! ([`tracer_common::Event`]); this module reads them with the layout and the enum names of the
//! running kernel's BTF ([`crate::btf::conntrack_layout`]): nothing here is a compiled-in
//! number, not even `IP_CT_NEW`.
//!
//! In the story it shows the bug in the kernel's own words: the answer that arrives in dind2
//! (`172.18.0.1:4000 > 172.18.0.3:34320`) is `new` — it starts an entry of its own — while the
//! client's entry waits for `192.168.0.239:4000 > 172.18.0.3:34320`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context as _, Result};
use serde::Serialize;
use tracer_common::Event;

use crate::btf::{self, Btf, CtLayout, TupleLayout};

/// An skb's conntrack entry, decoded. Also the `ct` object of `--json`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ct {
    /// This skb's relation to the entry, from `enum ip_conntrack_info`: `new`, `established`,
    /// `related`, `reply` (`IP_CT_ESTABLISHED_REPLY`), `related_reply`, or `untracked` (the
    /// NOTRACK target: no entry at all).
    pub state: String,
    /// The ORIGINAL tuple, `src:sport>dst:dport` (none when untracked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub orig: Option<String>,
    /// The REPLY tuple: what an answer must look like to belong to this entry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The entry's `IPS_*` status bits without the prefix: `CONFIRMED`, `SRC_NAT`, `DST_NAT`,
    /// `SEEN_REPLY`, `ASSURED`, … Empty: a fresh, unconfirmed entry.
    pub status: Vec<String>,
}

impl Ct {
    /// True once the entry is in the conntrack table (`IPS_CONFIRMED`).
    pub fn confirmed(&self) -> bool {
        self.has("CONFIRMED")
    }

    /// True if the entry carries the status bit `name` (`SRC_NAT`, …).
    pub fn has(&self, name: &str) -> bool {
        self.status.iter().any(|s| s == name)
    }

    /// The NAT set up on the entry, in words: `SNAT`, `DNAT`, `SNAT+DNAT`, or `no NAT`.
    pub fn nat(&self) -> &'static str {
        match (self.has("SRC_NAT"), self.has("DST_NAT")) {
            (true, true) => "SNAT+DNAT",
            (true, false) => "SNAT",
            (false, true) => "DNAT",
            (false, false) => "no NAT",
        }
    }

    /// One short line: `new orig 172.18.0.1:4000>172.18.0.3:34320 reply
    /// 172.18.0.3:34320>172.18.0.1:4000 [DST_NAT_DONE] unconfirmed`: the status bits in the
    /// brackets (when there are any), and `unconfirmed` until `IPS_CONFIRMED` is set.
    pub fn compact(&self) -> String {
        let mut s = self.state.clone();
        if let Some(orig) = &self.orig {
            s.push_str(" orig ");
            s.push_str(orig);
        }
        if let Some(reply) = &self.reply {
            s.push_str(" reply ");
            s.push_str(reply);
        }
        if self.orig.is_some() {
            if !self.status.is_empty() {
                s.push_str(&format!(" [{}]", self.status.join(",")));
            }
            if !self.confirmed() {
                // Not in the table yet: the skb has not passed conntrack's last hook.
                s.push_str(" unconfirmed");
            }
        }
        s
    }
}

/// Reads the conntrack part of events: the tuple layout and the names of this kernel's
/// `enum ip_conntrack_info` and `enum ip_conntrack_status`.
#[derive(Clone, Debug)]
pub struct CtDecoder {
    tuple: TupleLayout,
    /// `ctinfo` value → state name (`new`, `reply`, …).
    states: HashMap<u8, String>,
    /// `IP_CT_UNTRACKED`: an skb marked "do not track", with no entry.
    untracked: Option<u8>,
    /// Bit number → status name (`CONFIRMED`), in bit order.
    status_bits: Vec<(u32, String)>,
}

/// `IP_CT_ESTABLISHED_REPLY` → `reply`, `IP_CT_NEW` → `new`.
fn state_name(enumerator: &str) -> Option<String> {
    let name = enumerator.strip_prefix("IP_CT_")?;
    Some(match name {
        "NUMBER" => return None, // a count, not a state
        "IS_REPLY" | "ESTABLISHED_REPLY" => "reply".into(),
        other => other.to_ascii_lowercase(),
    })
}

impl CtDecoder {
    /// Everything from the running kernel's BTF: the layout of [`btf::conntrack_layout`] and
    /// the two enums. An error means: no conntrack in this kernel (show none).
    pub fn from_btf(btf: &Btf, layout: &CtLayout) -> Result<CtDecoder> {
        let infos = btf
            .enum_values("ip_conntrack_info")
            .context("the names of conntrack's states")?;
        let statuses = btf
            .enum_values("ip_conntrack_status")
            .context("the names of conntrack's status bits")?;
        Ok(CtDecoder::from_enums(layout.tuple, &infos, &statuses))
    }

    /// The decoder for a tuple layout and the enumerators (name, value) of `enum
    /// ip_conntrack_info` and `enum ip_conntrack_status`.
    pub fn from_enums(
        tuple: TupleLayout,
        infos: &[(String, i64)],
        statuses: &[(String, i64)],
    ) -> CtDecoder {
        let mut states = HashMap::new();
        let mut untracked = None;
        for (name, value) in infos {
            let Ok(value) = u8::try_from(*value) else {
                continue;
            };
            if name == "IP_CT_UNTRACKED" {
                untracked = Some(value);
            }
            if let Some(state) = state_name(name) {
                // IP_CT_IS_REPLY and IP_CT_ESTABLISHED_REPLY share a value: one name for both.
                states.entry(value).or_insert(state);
            }
        }
        let mut by_bit: HashMap<u32, String> = HashMap::new();
        for (name, value) in statuses {
            let Some(bit) = name
                .strip_prefix("IPS_")
                .and_then(|n| n.strip_suffix("_BIT"))
            else {
                continue;
            };
            if !(0..64).contains(value) {
                continue;
            }
            // A bit that was given a new meaning keeps an old alias declared before it
            // (IPS_UNTRACKED_BIT, then IPS_NAT_CLASH_BIT = the same 12): the later name wins.
            by_bit.insert(*value as u32, bit.to_string());
        }
        let mut status_bits: Vec<(u32, String)> = by_bit.into_iter().collect();
        status_bits.sort();
        CtDecoder {
            tuple,
            states,
            untracked,
            status_bits,
        }
    }

    /// Both halves at once: the layout (whose offsets go into the kernel side's [`Offsets`]) and
    /// the decoder, or why this kernel shows no conntrack.
    ///
    /// [`Offsets`]: tracer_common::Offsets
    pub fn load(btf: &Btf) -> Result<(CtLayout, CtDecoder)> {
        let layout = btf::conntrack_layout(btf)?;
        let decoder = CtDecoder::from_btf(btf, &layout)?;
        Ok((layout, decoder))
    }

    /// [`CtDecoder::load`] for the running kernel: from vmlinux's BTF (`vmlinux`, already
    /// parsed) when conntrack is built in, else from vmlinux joined with the `nf_conntrack`
    /// module's own BTF (where a modular conntrack keeps `struct nf_conn`; the module is loaded
    /// as soon as a namespace uses NAT or conntrack).
    pub fn load_running(vmlinux: &Btf) -> Result<(CtLayout, CtDecoder)> {
        let builtin = match CtDecoder::load(vmlinux) {
            Ok(found) => return Ok(found),
            Err(e) => e,
        };
        let module = std::path::Path::new("/sys/kernel/btf/nf_conntrack");
        if !module.exists() {
            return Err(builtin);
        }
        let joined = Btf::with_module(btf::VMLINUX_BTF, module)?;
        CtDecoder::load(&joined).with_context(|| format!("with {}", module.display()))
    }

    /// The event's conntrack entry, or `None` when the skb has none (yet).
    pub fn decode(&self, ev: &Event) -> Option<Ct> {
        let state = |info: u8| {
            self.states
                .get(&info)
                .cloned()
                .unwrap_or_else(|| format!("ctinfo{info}"))
        };
        if ev.ct == 0 {
            // No entry; an "untracked" skb says so in its ctinfo bits alone.
            return (Some(ev.ct_info) == self.untracked && self.untracked != Some(0)).then(|| Ct {
                state: state(ev.ct_info),
                ..Ct::default()
            });
        }
        Some(Ct {
            state: state(ev.ct_info),
            orig: Some(self.tuple(&ev.ct_orig)),
            reply: Some(self.tuple(&ev.ct_reply)),
            status: self
                .status_bits
                .iter()
                .filter(|(bit, _)| ev.ct_status & (1u64 << bit) != 0)
                .map(|(_, name)| name.clone())
                .collect(),
        })
    }

    /// `src:sport>dst:dport` of a raw `struct nf_conntrack_tuple` (IPv6 in brackets);
    /// `src>dst proto N` for protocols without ports, `src>dst icmp` for ICMP.
    fn tuple(&self, words: &[u64; tracer_common::CT_TUPLE_WORDS]) -> String {
        let mut bytes = [0u8; tracer_common::CT_TUPLE_WORDS * 8];
        for (chunk, w) in bytes.chunks_exact_mut(8).zip(words) {
            chunk.copy_from_slice(&w.to_ne_bytes());
        }
        let l = &self.tuple;
        let at = |off: u32, n: usize| &bytes[off as usize..off as usize + n];
        let family = u16::from_ne_bytes(at(l.l3num, 2).try_into().unwrap());
        let proto = at(l.protonum, 1)[0];
        let addr = |off: u32| -> IpAddr {
            let raw: [u8; 16] = at(off, 16).try_into().unwrap();
            if i32::from(family) == libc::AF_INET6 {
                IpAddr::V6(Ipv6Addr::from(raw))
            } else {
                IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
            }
        };
        let port = |off: u32| u16::from_be_bytes(at(off, 2).try_into().unwrap());
        let (src, dst) = (addr(l.src_addr), addr(l.dst_addr));
        let ep = |a: IpAddr, p: u16| match a {
            IpAddr::V4(a) => format!("{a}:{p}"),
            IpAddr::V6(a) => format!("[{a}]:{p}"),
        };
        match proto {
            // The protocols whose tuple part is a pair of ports: TCP, UDP, DCCP, SCTP, UDP-Lite.
            6 | 17 | 33 | 132 | 136 => {
                format!(
                    "{}>{}",
                    ep(src, port(l.src_port)),
                    ep(dst, port(l.dst_port))
                )
            }
            1 | 58 => format!("{src}>{dst} icmp id {}", port(l.src_port)),
            p => format!("{src}>{dst} proto {p}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of a 6.x kernel's tuple, as `bpftool btf dump` shows it.
    fn decoder() -> CtDecoder {
        let names = |pairs: &[(&str, u32)]| -> Vec<(String, i64)> {
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), *v as i64))
                .collect()
        };
        let infos = names(&[
            ("IP_CT_ESTABLISHED", 0),
            ("IP_CT_RELATED", 1),
            ("IP_CT_NEW", 2),
            ("IP_CT_IS_REPLY", 3),
            ("IP_CT_ESTABLISHED_REPLY", 3),
            ("IP_CT_RELATED_REPLY", 4),
            ("IP_CT_NUMBER", 5),
            ("IP_CT_UNTRACKED", 7),
        ]);
        let statuses = names(&[
            ("IPS_SEEN_REPLY_BIT", 1),
            ("IPS_SEEN_REPLY", 2),
            ("IPS_CONFIRMED_BIT", 3),
            ("IPS_CONFIRMED", 8),
            ("IPS_SRC_NAT_BIT", 4),
            ("IPS_DST_NAT_BIT", 5),
            ("IPS_UNTRACKED_BIT", 12),
            ("IPS_NAT_CLASH_BIT", 12),
            ("__IPS_MAX_BIT", 16),
        ]);
        CtDecoder::from_enums(
            TupleLayout {
                size: 40,
                src_addr: 0,
                src_port: 16,
                l3num: 18,
                dst_addr: 20,
                dst_port: 36,
                protonum: 38,
            },
            &infos,
            &statuses,
        )
    }

    fn tuple(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> [u64; 5] {
        let mut b = [0u8; 40];
        b[0..4].copy_from_slice(&src);
        b[16..18].copy_from_slice(&sport.to_be_bytes());
        b[18..20].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        b[20..24].copy_from_slice(&dst);
        b[36..38].copy_from_slice(&dport.to_be_bytes());
        b[38] = 17;
        let mut w = [0u64; 5];
        for (w, c) in w.iter_mut().zip(b.chunks_exact(8)) {
            *w = u64::from_ne_bytes(c.try_into().unwrap());
        }
        w
    }

    /// The answer of the story, arriving in dind2: it starts an entry of its own.
    #[test]
    fn the_story_answer_is_new_in_dind2() {
        let ev = Event {
            ct: 0xffff_8880_0b00_0000,
            ct_info: 2,
            ct_status: 0,
            ct_orig: tuple([172, 18, 0, 1], 4000, [172, 18, 0, 3], 34320),
            ct_reply: tuple([172, 18, 0, 3], 34320, [172, 18, 0, 1], 4000),
            ..Default::default()
        };
        let ct = decoder().decode(&ev).unwrap();
        assert_eq!(ct.state, "new");
        assert_eq!(ct.orig.as_deref(), Some("172.18.0.1:4000>172.18.0.3:34320"));
        assert!(!ct.confirmed());
        assert_eq!(
            ct.compact(),
            "new orig 172.18.0.1:4000>172.18.0.3:34320 reply 172.18.0.3:34320>172.18.0.1:4000 unconfirmed"
        );
        let json = serde_json::to_value(&ct).unwrap();
        assert_eq!(json["state"], "new");
        assert_eq!(json["status"], serde_json::json!([]));
    }

    #[test]
    fn status_bits_are_named_and_nat_is_seen() {
        let ev = Event {
            ct: 0xffff_8880_0b00_0000,
            ct_info: 3,
            ct_status: (1 << 3) | (1 << 4) | (1 << 1) | (1 << 12),
            ct_orig: tuple([172, 17, 0, 2], 34320, [192, 168, 0, 239], 4000),
            ct_reply: tuple([192, 168, 0, 239], 4000, [172, 18, 0, 3], 34320),
            ..Default::default()
        };
        let ct = decoder().decode(&ev).unwrap();
        assert_eq!(ct.state, "reply");
        assert_eq!(
            ct.status,
            ["SEEN_REPLY", "CONFIRMED", "SRC_NAT", "NAT_CLASH"]
        );
        assert_eq!(ct.nat(), "SNAT");
        assert_eq!(
            ct.reply.as_deref(),
            Some("192.168.0.239:4000>172.18.0.3:34320")
        );
    }

    #[test]
    fn no_entry_and_untracked() {
        let d = decoder();
        assert_eq!(d.decode(&Event::default()), None);
        let untracked = d
            .decode(&Event {
                ct_info: 7,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(untracked.state, "untracked");
        assert_eq!(untracked.compact(), "untracked");
    }

    /// The running kernel's BTF, when it has conntrack: the layout is self-consistent and the
    /// names the tracer relies on exist (their numbers are not asserted: they are the kernel's).
    #[test]
    fn running_kernel_layout() {
        let Ok(btf) = Btf::from_file(btf::VMLINUX_BTF) else {
            eprintln!("no kernel BTF here: nothing to compare against");
            return;
        };
        let Ok((layout, decoder)) = CtDecoder::load(&btf) else {
            eprintln!("this kernel has no conntrack in its BTF");
            return;
        };
        assert!(layout.skb_nfct > 0);
        assert!(layout.tuple_reply > layout.tuple_orig);
        assert!(layout.tuple.size <= 40);
        let states: Vec<&str> = decoder.states.values().map(String::as_str).collect();
        for want in ["new", "established", "related", "reply"] {
            assert!(states.contains(&want), "{want} missing from {states:?}");
        }
        let bits: Vec<&str> = decoder
            .status_bits
            .iter()
            .map(|(_, n)| n.as_str())
            .collect();
        for want in ["CONFIRMED", "SRC_NAT", "DST_NAT", "SEEN_REPLY", "ASSURED"] {
            assert!(bits.contains(&want), "{want} missing from {bits:?}");
        }
    }
}
