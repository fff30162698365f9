//! A rule's expressions back to text, as `nft list ruleset` would print them.
//!
//! The kernel keeps no rule text: an nf_tables rule is a small program of *expressions* that
//! load values into registers and test them. `iifname "br-dind" counter return`, as
//! iptables-nft stores `-i br-dind -j RETURN`, is
//!
//! ```text
//! [ meta load iifname => reg 1 ]                 load the input interface's name
//! [ cmp eq reg 1 0x642d7262 0x00646e69 ]         compare it with "br-dind\0"
//! [ counter pkts 0 bytes 0 ]
//! [ immediate reg 0 return ]                     register 0 is the verdict
//! ```
//!
//! (`nft --debug=netlink list ruleset` prints this form.) [`rule_text`] follows the
//! registers through `meta`, `payload`, `bitwise`, `immediate` and `cmp` and writes each
//! test the way nft does; it knows the expressions the story's rules use — interface names,
//! protocols, addresses and networks, ports, verdicts, `nat`/`masq`, and iptables-nft's
//! `match`/`target` (the x_tables extensions it could not translate, e.g. `DNAT`,
//! `MASQUERADE`, `addrtype`). Anything else is named (`[fib]`), never guessed.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::netlink::{attributes, be32, be64, find, string};

// <linux/netfilter/nf_tables.h>
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;

/// One expression of a rule: its name (`meta`, `cmp`, …) and its attributes.
pub type Expression<'a> = (&'a str, Vec<(u16, &'a [u8])>);

/// Where a rule lives: address family, table, chain, handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RuleKey {
    pub family: u8,
    pub table: String,
    pub chain: String,
    pub handle: u64,
}

/// Where a chain lives: address family, table, chain.
pub type ChainKey = (u8, String, String);

/// Parses one `NFT_MSG_NEWCHAIN` body (an answer to a chain dump): its key, and for a base
/// chain the name of its hook (`NFTA_CHAIN_HOOK` → `NFTA_HOOK_HOOKNUM`).
pub fn parse_chain(body: &[u8]) -> Option<(ChainKey, Option<String>)> {
    let family = *body.first()?;
    let attrs = attributes(body.get(4..)?);
    let table = string(find(&attrs, 1))?; // NFTA_CHAIN_TABLE
    let chain = string(find(&attrs, 3))?; // NFTA_CHAIN_NAME
    let hook = find(&attrs, 4) // NFTA_CHAIN_HOOK
        .map(attributes)
        .and_then(|h| be32(find(&h, 1))) // NFTA_HOOK_HOOKNUM
        .map(|number| hook_name(family, number));
    Some(((family, table, chain), hook))
}

/// A hook's name, as nft writes it, by family (`NF_INET_*`, `NF_NETDEV_*`, `NF_ARP_*`).
pub fn hook_name(family: u8, number: u32) -> String {
    let names: &[&str] = match family {
        5 => &["ingress", "egress"],
        3 => &["input", "output", "forward"],
        _ => &[
            "prerouting",
            "input",
            "forward",
            "output",
            "postrouting",
            "ingress",
        ],
    };
    names
        .get(number as usize)
        .map_or_else(|| format!("hook {number}"), |n| n.to_string())
}

/// The name nft gives an nf_tables address family (`NFPROTO_*`).
pub fn family_name(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// A verdict code (`NF_*`, `NFT_*`) and its chain, as nft prints it.
pub fn verdict_text(code: i32, chain: Option<&str>) -> String {
    let chain = chain.unwrap_or("?");
    match code {
        0 => "drop".into(),
        1 => "accept".into(),
        2 => "stolen".into(),
        3 => "queue".into(),
        4 => "repeat".into(),
        -1 => "continue".into(),
        -2 => "break".into(),
        -3 => format!("jump {chain}"),
        -4 => format!("goto {chain}"),
        -5 => "return".into(),
        // NF_QUEUE with a queue number in the upper bits.
        c if c & 0xff == 3 => format!("queue num {}", (c as u32) >> 16),
        c => format!("verdict {c}"),
    }
}

/// The verdict in a nested `NFTA_*_VERDICT` attribute.
pub fn nested_verdict(bytes: &[u8]) -> Option<String> {
    let v = attributes(bytes);
    let code = be32(find(&v, NFTA_VERDICT_CODE))? as i32;
    Some(verdict_text(
        code,
        string(find(&v, NFTA_VERDICT_CHAIN)).as_deref(),
    ))
}

/// Parses one `NFT_MSG_NEWRULE` body (an answer to a rule dump) into its key and text.
pub fn parse_rule(body: &[u8]) -> Option<(RuleKey, String)> {
    let family = *body.first()?;
    let attrs = attributes(body.get(4..)?);
    let key = RuleKey {
        family,
        table: string(find(&attrs, NFTA_RULE_TABLE))?,
        chain: string(find(&attrs, NFTA_RULE_CHAIN))?,
        handle: be64(find(&attrs, NFTA_RULE_HANDLE))?,
    };
    let expressions = find(&attrs, NFTA_RULE_EXPRESSIONS).unwrap_or(&[]);
    let list: Vec<Expression> = attributes(expressions)
        .into_iter()
        .filter_map(|(_, element)| {
            let e = attributes(element);
            let name = find(&e, NFTA_EXPR_NAME)?;
            let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = std::str::from_utf8(&name[..end]).ok()?;
            Some((name, attributes(find(&e, NFTA_EXPR_DATA).unwrap_or(&[]))))
        })
        .collect();
    Some((key, rule_text(family, &list)))
}

/// What a register holds, as far as the text needs to know.
#[derive(Clone, Debug)]
enum Held {
    /// A named field (`iifname`, `ip saddr`, `udp dport`) and how to print its values.
    Field(String, Kind),
    /// The field, masked (`ip saddr & 255.255.0.0`): printed as a network when it is one.
    Masked(String, Kind, Vec<u8>),
    /// A constant (for `nat`, `meta set`).
    Value(Vec<u8>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Name,
    Protocol,
    Address,
    Port,
    Family,
    Number,
    AddressType,
    CtState,
    Bytes,
}

/// 16-byte registers 1–4 are 32-bit registers 8–23 in groups of four.
fn register(number: u32) -> u32 {
    match number {
        1..=4 => 8 + (number - 1) * 4,
        n => n,
    }
}

fn reg(data: &[(u16, &[u8])], kind: u16) -> Option<u32> {
    be32(find(data, kind)).map(register)
}

/// The text of a rule, from its expressions `(name, attributes)` in order. `family` is the
/// table's (it says which header `ip saddr` comes from in an `ip` table).
pub fn rule_text(family: u8, expressions: &[Expression]) -> String {
    let mut registers: HashMap<u32, Held> = HashMap::new();
    let mut words: Vec<String> = Vec::new();
    // `meta l4proto udp` followed by `udp dport 4000` is written `udp dport 4000`.
    let mut l4: Option<(&'static str, Option<usize>)> = None;
    let mut l3 = match family {
        2 => Some(4u8),
        10 => Some(6),
        _ => None,
    };
    for (name, data) in expressions {
        let data = data.as_slice();
        match *name {
            "meta" => {
                let key = be32(find(data, 2)).unwrap_or(u32::MAX);
                if let Some(dreg) = reg(data, 1) {
                    let (field, kind) = meta_field(key);
                    registers.insert(dreg, Held::Field(field, kind));
                } else if let Some(sreg) = reg(data, 3) {
                    let (field, _) = meta_field(key);
                    let value = match registers.get(&sreg) {
                        Some(Held::Value(v)) => number(v).to_string(),
                        _ => "?".into(),
                    };
                    words.push(format!("meta {field} set {value}"));
                }
            }
            "payload" => {
                let (Some(dreg), Some(base), Some(offset), Some(len)) = (
                    reg(data, 1),
                    be32(find(data, 2)),
                    be32(find(data, 3)),
                    be32(find(data, 4)),
                ) else {
                    words.push("[payload set]".into());
                    continue;
                };
                let protocol = l4.map(|(p, _)| p);
                let (field, kind) = payload_field(l3, protocol, base, offset, len);
                if base == 2 {
                    if let Some((_, Some(at))) = l4 {
                        // The protocol test is implied by `udp dport`.
                        words[at].clear();
                        l4 = l4.map(|(p, _)| (p, None));
                    }
                }
                registers.insert(dreg, Held::Field(field, kind));
            }
            "bitwise" => {
                let (Some(sreg), Some(dreg)) = (reg(data, 1), reg(data, 2)) else {
                    continue;
                };
                let mask = find(data, 4)
                    .map(attributes)
                    .and_then(|m| find(&m, NFTA_DATA_VALUE).map(<[u8]>::to_vec));
                let held = match (registers.get(&sreg).cloned(), mask) {
                    (Some(Held::Field(f, k)), Some(mask)) => Held::Masked(f, k, mask),
                    (Some(other), _) => other,
                    (None, _) => Held::Value(Vec::new()),
                };
                registers.insert(dreg, held);
            }
            "immediate" => {
                let Some(value) = find(data, 2).map(attributes) else {
                    continue;
                };
                match (reg(data, 1), find(&value, NFTA_DATA_VERDICT)) {
                    (_, Some(verdict)) => {
                        words.push(nested_verdict(verdict).unwrap_or_else(|| "verdict ?".into()))
                    }
                    (Some(dreg), None) => {
                        let v = find(&value, NFTA_DATA_VALUE).unwrap_or(&[]).to_vec();
                        registers.insert(dreg, Held::Value(v));
                    }
                    _ => {}
                }
            }
            "cmp" => {
                let (Some(sreg), Some(op)) = (reg(data, 1), be32(find(data, 2))) else {
                    continue;
                };
                let value = find(data, 3)
                    .map(attributes)
                    .and_then(|d| find(&d, NFTA_DATA_VALUE).map(<[u8]>::to_vec))
                    .unwrap_or_default();
                let op = match op {
                    0 => "",
                    1 => "!= ",
                    2 => "< ",
                    3 => "<= ",
                    4 => "> ",
                    5 => ">= ",
                    _ => "? ",
                };
                let word = match registers.get(&sreg) {
                    Some(Held::Field(field, kind)) => {
                        let shown = show(*kind, &value);
                        if field == "meta l4proto" && op.is_empty() {
                            l4 = Some((protocol_name(value.first().copied().unwrap_or(0)), None));
                            l4 = l4.map(|(p, _)| (p, Some(words.len())));
                        }
                        if field == "meta nfproto" && op.is_empty() {
                            l3 = match value.first() {
                                Some(2) => Some(4),
                                Some(10) => Some(6),
                                _ => l3,
                            };
                        }
                        format!("{field} {op}{shown}")
                    }
                    Some(Held::Masked(field, kind, mask)) => match prefix_length(mask) {
                        Some(bits) if *kind == Kind::Address => {
                            format!("{field} {op}{}/{bits}", show(*kind, &value))
                        }
                        _ if *kind == Kind::CtState && op == "!= " && number(&value) == 0 => {
                            format!("{field} {}", ct_states(number(mask)))
                        }
                        _ => format!(
                            "{field} & {} {op}{}",
                            show(Kind::Bytes, mask),
                            show(*kind, &value)
                        ),
                    },
                    _ => format!("[cmp {op}{}]", show(Kind::Bytes, &value)),
                };
                words.push(word);
            }
            "counter" => words.push("counter".into()),
            "nat" => words.push(nat_text(data, &registers)),
            "masq" => words.push("masquerade".into()),
            "redir" => words.push("redirect".into()),
            "fib" => {
                if let Some(dreg) = reg(data, 1) {
                    let flags = be32(find(data, 3)).unwrap_or(0);
                    let which = if flags & 1 != 0 { "saddr" } else { "daddr" };
                    let (what, kind) = match be32(find(data, 2)) {
                        Some(1) => ("oif", Kind::Number),
                        Some(2) => ("oifname", Kind::Name),
                        _ => ("type", Kind::AddressType),
                    };
                    registers.insert(dreg, Held::Field(format!("fib {which} {what}"), kind));
                }
            }
            "ct" => {
                if let Some(dreg) = reg(data, 1) {
                    let (field, kind) = match be32(find(data, 2)) {
                        Some(0) => ("ct state".to_string(), Kind::CtState),
                        Some(k) => (format!("ct key {k}"), Kind::Bytes),
                        None => ("ct".to_string(), Kind::Bytes),
                    };
                    registers.insert(dreg, Held::Field(field, kind));
                }
            }
            "lookup" => {
                let set = string(find(data, 1)).unwrap_or_default();
                let field = match reg(data, 2).and_then(|r| registers.get(&r)) {
                    Some(Held::Field(f, _)) | Some(Held::Masked(f, _, _)) => f.clone(),
                    _ => "?".into(),
                };
                words.push(format!("{field} @{set}"));
            }
            "match" => words.push(xt_text("match", data)),
            "target" => words.push(xt_text("target", data)),
            other => words.push(format!("[{other}]")),
        }
    }
    words.retain(|w| !w.is_empty());
    words.join(" ")
}

fn meta_field(key: u32) -> (String, Kind) {
    let (name, kind) = match key {
        0 => ("length", Kind::Number),
        1 => ("protocol", Kind::Bytes),
        3 => ("mark", Kind::Number),
        4 => ("iif", Kind::Number),
        5 => ("oif", Kind::Number),
        6 => return ("iifname".into(), Kind::Name),
        7 => return ("oifname".into(), Kind::Name),
        12 => ("nftrace", Kind::Number),
        15 => ("nfproto", Kind::Family),
        16 => ("l4proto", Kind::Protocol),
        k => return (format!("meta key {k}"), Kind::Bytes),
    };
    (format!("meta {name}"), kind)
}

fn payload_field(
    l3: Option<u8>,
    l4: Option<&str>,
    base: u32,
    offset: u32,
    len: u32,
) -> (String, Kind) {
    let named = match (base, l3, offset, len) {
        (1, Some(4), 9, 1) => Some(("ip protocol", Kind::Protocol)),
        // A network on a byte boundary is compared on its first bytes only (iptables-nft's
        // `-s 172.17.0.0/16` loads 2 bytes): shown as a prefix by `show`.
        (1, Some(4), 12, 1..=4) => Some(("ip saddr", Kind::Address)),
        (1, Some(4), 16, 1..=4) => Some(("ip daddr", Kind::Address)),
        (1, Some(6), 6, 1) => Some(("ip6 nexthdr", Kind::Protocol)),
        (1, Some(6), 8, 1..=16) => Some(("ip6 saddr", Kind::Address)),
        (1, Some(6), 24, 1..=16) => Some(("ip6 daddr", Kind::Address)),
        _ => None,
    };
    if let Some((name, kind)) = named {
        return (name.into(), kind);
    }
    if base == 2 && len == 2 && (offset == 0 || offset == 2) {
        let port = if offset == 0 { "sport" } else { "dport" };
        return (format!("{} {port}", l4.unwrap_or("th")), Kind::Port);
    }
    let base = match base {
        0 => "ll",
        1 => "nh",
        2 => "th",
        _ => "ih",
    };
    (format!("@{base},{},{}", offset * 8, len * 8), Kind::Bytes)
}

fn protocol_name(number: u8) -> &'static str {
    match number {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        58 => "icmpv6",
        132 => "sctp",
        _ => "other",
    }
}

/// A register value as a number: nf_tables keeps meta values in host byte order.
fn number(bytes: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = bytes.len().min(4);
    b[..n].copy_from_slice(&bytes[..n]);
    u32::from_ne_bytes(b)
}

fn show(kind: Kind, value: &[u8]) -> String {
    match (kind, value.len()) {
        (Kind::Name, _) => match value.iter().position(|&b| b == 0) {
            Some(end) => format!("\"{}\"", String::from_utf8_lossy(&value[..end])),
            // No terminating NUL: only a prefix was compared, nft's `"br-*"`.
            None => format!("\"{}*\"", String::from_utf8_lossy(value)),
        },
        (Kind::Protocol, 1) => match protocol_name(value[0]) {
            "other" => value[0].to_string(),
            name => name.into(),
        },
        (Kind::Address, 4) => Ipv4Addr::from(<[u8; 4]>::try_from(value).unwrap()).to_string(),
        (Kind::Address, 16) => Ipv6Addr::from(<[u8; 16]>::try_from(value).unwrap()).to_string(),
        // The first bytes of an address: a network.
        (Kind::Address, n @ 1..=3) => {
            let mut a = [0u8; 4];
            a[..n].copy_from_slice(value);
            format!("{}/{}", Ipv4Addr::from(a), n * 8)
        }
        (Kind::Address, n @ 5..=15) => {
            let mut a = [0u8; 16];
            a[..n].copy_from_slice(value);
            format!("{}/{}", Ipv6Addr::from(a), n * 8)
        }
        (Kind::Port, 2) => u16::from_be_bytes([value[0], value[1]]).to_string(),
        (Kind::Family, 1) => match value[0] {
            2 => "ipv4".into(),
            10 => "ipv6".into(),
            n => n.to_string(),
        },
        (Kind::Number, _) => number(value).to_string(),
        (Kind::AddressType, _) => match number(value) {
            1 => "unicast".into(),
            2 => "local".into(),
            3 => "broadcast".into(),
            5 => "multicast".into(),
            n => format!("type {n}"),
        },
        (Kind::CtState, _) => ct_states(number(value)),
        _ => {
            let mut s = String::from("0x");
            for b in value {
                let _ = write!(s, "{b:02x}");
            }
            s
        }
    }
}

fn ct_states(bits: u32) -> String {
    let names = [
        (1, "invalid"),
        (2, "established"),
        (4, "related"),
        (8, "new"),
        (64, "untracked"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(b, _)| bits & b != 0)
        .map(|(_, n)| *n)
        .collect();
    set.join(",")
}

/// `255.255.0.0` → 16; `None` unless the mask is ones then zeros.
fn prefix_length(mask: &[u8]) -> Option<u32> {
    let ones: u32 = mask.iter().map(|b| b.count_ones()).sum();
    let contiguous = mask
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| b >> i & 1))
        .skip(ones as usize)
        .all(|bit| bit == 0);
    contiguous.then_some(ones)
}

fn nat_text(data: &[(u16, &[u8])], registers: &HashMap<u32, Held>) -> String {
    let kind = match be32(find(data, 1)) {
        Some(0) => "snat",
        Some(1) => "dnat",
        _ => "nat",
    };
    let value = |attribute| match reg(data, attribute).and_then(|r| registers.get(&r)) {
        Some(Held::Value(v)) => Some(v.clone()),
        _ => None,
    };
    let address = value(3).map(|v| show(Kind::Address, &v));
    let port = value(5).map(|v| show(Kind::Port, &v[..v.len().min(2)]));
    match (address, port) {
        (Some(a), Some(p)) => format!("{kind} to {a}:{p}"),
        (Some(a), None) => format!("{kind} to {a}"),
        (None, Some(p)) => format!("{kind} to :{p}"),
        (None, None) => kind.into(),
    }
}

/// iptables-nft's x_tables extensions: the name, and for `DNAT`/`SNAT` the address.
fn xt_text(what: &str, data: &[(u16, &[u8])]) -> String {
    let name = string(find(data, 1)).unwrap_or_default();
    let revision = be32(find(data, 2)).unwrap_or(0);
    let info = find(data, 3).unwrap_or(&[]);
    match (what, name.as_str()) {
        ("target", "DNAT" | "SNAT") => {
            let target = name.to_lowercase();
            match nat_range(revision, info) {
                Some(to) => format!("{target} to {to}"),
                None => target,
            }
        }
        ("target", "MASQUERADE") => "masquerade".into(),
        ("target", "RETURN") => "return".into(),
        ("target", "ACCEPT") => "accept".into(),
        ("target", "DROP") => "drop".into(),
        ("match", "addrtype") => {
            addrtype(revision, info).unwrap_or_else(|| "xt match \"addrtype\"".into())
        }
        ("match", name) => format!("xt match {name:?}"),
        (_, name) => format!("xt target {name:?}"),
    }
}

/// `-m addrtype --dst-type LOCAL` (Docker's PREROUTING rule), as nft translates it:
/// `fib daddr type local`. Revision 1's info is `xt_addrtype_info_v1`: source and destination
/// type masks (bit N = route type N: 1 unicast, 2 local, 3 broadcast, 5 multicast) and flags.
fn addrtype(revision: u32, info: &[u8]) -> Option<String> {
    if revision != 1 || info.len() < 8 {
        return None;
    }
    let mask = |at: usize| u16::from_ne_bytes([info[at], info[at + 1]]);
    let (source, dest, flags) = (mask(0), mask(2), number(info.get(4..8)?));
    let names = |bits: u16| {
        let types = [
            (1, "unicast"),
            (2, "local"),
            (3, "broadcast"),
            (5, "multicast"),
        ];
        let mut v: Vec<String> = Vec::new();
        for n in 0..16u16 {
            if bits & (1 << n) != 0 {
                let known = types
                    .iter()
                    .find(|(t, _)| *t == n)
                    .map(|(_, name)| name.to_string());
                v.push(known.unwrap_or_else(|| format!("type {n}")));
            }
        }
        if v.len() == 1 {
            v.remove(0)
        } else {
            format!("{{ {} }}", v.join(", "))
        }
    };
    let mut words = Vec::new();
    if source != 0 {
        let not = if flags & 1 != 0 { "!= " } else { "" };
        words.push(format!("fib saddr type {not}{}", names(source)));
    }
    if dest != 0 {
        let not = if flags & 2 != 0 { "!= " } else { "" };
        words.push(format!("fib daddr type {not}{}", names(dest)));
    }
    Some(words.join(" "))
}

/// The first address (and port) of an x_tables NAT range. Revision 0 is
/// `nf_nat_ipv4_multi_range_compat` (rangesize, flags, min_ip, max_ip, min, max); revisions
/// 1 and 2 start with `nf_nat_range`'s flags, min_addr[16], max_addr[16], min_proto, max_proto.
fn nat_range(revision: u32, info: &[u8]) -> Option<String> {
    const MAP_IPS: u32 = 1;
    const PROTO_SPECIFIED: u32 = 2;
    let flags = number(info.get(if revision == 0 { 4..8 } else { 0..4 })?);
    let (address, port) = if revision == 0 {
        (
            Ipv4Addr::from(<[u8; 4]>::try_from(info.get(8..12)?).ok()?),
            info.get(16..18)?,
        )
    } else {
        (
            Ipv4Addr::from(<[u8; 4]>::try_from(info.get(4..8)?).ok()?),
            info.get(36..38)?,
        )
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    Some(match (flags & MAP_IPS != 0, flags & PROTO_SPECIFIED != 0) {
        (true, true) => format!("{address}:{port}"),
        (true, false) => address.to_string(),
        (false, true) => format!(":{port}"),
        (false, false) => "?".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 32-bit attribute value (leaked: tests only, and it keeps the tables below short).
    fn be(v: u32) -> &'static [u8] {
        Box::leak(Box::new(v.to_be_bytes()))
    }

    /// A nested NFTA_DATA_VALUE attribute holding `value`.
    fn data(value: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&1u16.to_ne_bytes());
        v.extend_from_slice(value);
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    }

    fn verdict(code: i32) -> Vec<u8> {
        let mut code_attr = Vec::new();
        code_attr.extend_from_slice(&8u16.to_ne_bytes());
        code_attr.extend_from_slice(&1u16.to_ne_bytes());
        code_attr.extend_from_slice(&code.to_be_bytes());
        let mut v = Vec::new();
        v.extend_from_slice(&((4 + code_attr.len()) as u16).to_ne_bytes());
        v.extend_from_slice(&2u16.to_ne_bytes());
        v.extend_from_slice(&code_attr);
        v
    }

    #[test]
    fn iptables_nft_return_and_dnat() {
        // What iptables-nft creates for `-i br-dind -j RETURN` (see the module's docs).
        let name = data(b"br-dind\0");
        let ret = verdict(-5);
        let rule: Vec<Expression> = vec![
            ("meta", vec![(2, be(6)), (1, be(1))]),
            ("cmp", vec![(1, be(1)), (2, be(0)), (3, &name[..])]),
            ("counter", vec![]),
            ("immediate", vec![(1, be(0)), (2, &ret[..])]),
        ];
        assert_eq!(rule_text(2, &rule), "iifname \"br-dind\" counter return");

        // `! -i br-dind -p udp --dport 4000 -j DNAT --to-destination 172.18.0.2:4000`.
        let udp = data(&[17]);
        let port = data(&4000u16.to_be_bytes());
        let mut info = [0u8; 40];
        info[0..4].copy_from_slice(&3u32.to_ne_bytes());
        info[4..8].copy_from_slice(&[172, 18, 0, 2]);
        info[36..38].copy_from_slice(&4000u16.to_be_bytes());
        let rule: Vec<Expression> = vec![
            ("meta", vec![(2, be(6)), (1, be(1))]),
            ("cmp", vec![(1, be(1)), (2, be(1)), (3, &name[..])]),
            ("meta", vec![(2, be(16)), (1, be(1))]),
            ("cmp", vec![(1, be(1)), (2, be(0)), (3, &udp[..])]),
            (
                "payload",
                vec![(1, be(1)), (2, be(2)), (3, be(2)), (4, be(2))],
            ),
            ("cmp", vec![(1, be(1)), (2, be(0)), (3, &port[..])]),
            ("counter", vec![]),
            ("target", vec![(1, b"DNAT\0"), (2, be(2)), (3, &info[..])]),
        ];
        assert_eq!(
            rule_text(2, &rule),
            "iifname != \"br-dind\" udp dport 4000 counter dnat to 172.18.0.2:4000"
        );
    }

    #[test]
    fn networks_and_unknown_expressions() {
        let mask = data(&[255, 255, 0, 0]);
        let net = data(&[172, 18, 0, 0]);
        let rule: Vec<Expression> = vec![
            (
                "payload",
                vec![(1, be(1)), (2, be(1)), (3, be(12)), (4, be(4))],
            ),
            ("bitwise", vec![(1, be(1)), (2, be(1)), (4, &mask[..])]),
            ("cmp", vec![(1, be(1)), (2, be(0)), (3, &net[..])]),
            ("quota", vec![]),
            ("masq", vec![]),
        ];
        assert_eq!(
            rule_text(2, &rule),
            "ip saddr 172.18.0.0/16 [quota] masquerade"
        );
        // iptables-nft's `! -o docker0 -s 172.17.0.0/16 -j MASQUERADE` compares two bytes.
        let two = data(&[172, 17]);
        let rule: Vec<Expression> = vec![
            (
                "payload",
                vec![(1, be(1)), (2, be(1)), (3, be(12)), (4, be(2))],
            ),
            ("cmp", vec![(1, be(1)), (2, be(0)), (3, &two[..])]),
            ("target", vec![(1, b"MASQUERADE\0"), (2, be(0))]),
        ];
        assert_eq!(rule_text(2, &rule), "ip saddr 172.17.0.0/16 masquerade");
        assert_eq!(prefix_length(&[255, 0, 255, 0]), None);
    }

    #[test]
    fn dockers_addrtype_match_reads_like_nft() {
        // `-m addrtype --dst-type LOCAL`: destination mask bit 2 (RTN_LOCAL), no flags.
        let mut info = [0u8; 8];
        info[2..4].copy_from_slice(&(1u16 << 2).to_ne_bytes());
        let rule: Vec<Expression> = vec![
            (
                "match",
                vec![(1, b"addrtype\0"), (2, be(1)), (3, &info[..])],
            ),
            ("counter", vec![]),
        ];
        assert_eq!(rule_text(2, &rule), "fib daddr type local counter");
    }

    #[test]
    fn base_chains_name_their_hook() {
        let mut m = crate::nftrace::netlink::Message::new(0, 0, 0, 2, 0);
        m.string(1, "nat").string(3, "PREROUTING");
        let hook = m.nest(4);
        m.be32(1, 0).be32(2, (-100i32) as u32);
        m.end_nest(hook);
        let bytes = m.finish();
        assert_eq!(
            parse_chain(&bytes[16..]),
            Some((
                (2, "nat".into(), "PREROUTING".into()),
                Some("prerouting".into())
            ))
        );
        let mut m = crate::nftrace::netlink::Message::new(0, 0, 0, 2, 0);
        m.string(1, "nat").string(3, "DOCKER");
        let bytes = m.finish();
        assert_eq!(
            parse_chain(&bytes[16..]),
            Some(((2, "nat".into(), "DOCKER".into()), None)),
            "a chain jumped to has no hook of its own"
        );
        assert_eq!(hook_name(5, 0), "ingress");
    }

    #[test]
    fn verdicts_read_like_nft() {
        assert_eq!(verdict_text(-3, Some("DOCKER")), "jump DOCKER");
        assert_eq!(verdict_text(-5, None), "return");
        assert_eq!(verdict_text(0, None), "drop");
        assert_eq!(verdict_text(1, None), "accept");
        assert_eq!(verdict_text(-1, None), "continue");
    }
}
