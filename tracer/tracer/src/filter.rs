//! pcap-filter expressions (the language of `tcpdump` and of pwru's and retis's filters),
//! compiled into the postfix program that the eBPF program evaluates in the kernel
//! ([`tracer_common::program`]).
//!
//! What is understood, with tcpdump's meaning:
//!
//! ```text
//! expr      := term ( ("and" | "&&" | "or" | "||") term )*   equal precedence, left to right
//! term      := ("not" | "!") term | "(" expr ")" | primitive
//! primitive := "ip" | "ip6" | "arp" | "rarp"
//!            | "tcp" | "udp" | "sctp" | "icmp" | "icmp6" | "igmp"
//!            | [ "ip" | "ip6" ] "proto" (NUMBER | tcp | udp | sctp | icmp | icmp6 | igmp)
//!            | [ "ip" | "ip6" | "arp" | "rarp" ] [ DIR ] "host" ADDRESS
//!            | [ "ip" | "ip6" | "arp" | "rarp" ] [ DIR ] "net" (ADDRESS/LEN | ADDRESS "mask" MASK)
//!            | [ "tcp" | "udp" | "sctp" ] [ DIR ] ("port" NUMBER | "portrange" NUMBER-NUMBER)
//!            | DIR ADDRESS                      (`src 10.0.0.1` = `src host 10.0.0.1`)
//!            | NUMBER | ADDRESS                 (after and/or: repeats the previous primitive's
//!                                                 keywords, as in `port 53 or 80`)
//! DIR       := "src" | "dst" | "src or dst" | "src and dst"
//! ```
//!
//! Like tcpdump: `and` and `or` have the SAME precedence and group from the left
//! (`udp or icmp and port 80` is `(udp or icmp) and port 80`), `not` binds tightest; `host` and
//! `net` with an IPv4 address also match ARP/RARP packets (sender or target address); `port`
//! matches TCP, UDP and SCTP, but not IPv4 fragments after the first (they carry no ports) nor
//! IPv6 packets with an extension header before the transport header; `udp`/`tcp`/`proto N` on
//! IPv6 also match a fragment header followed by that protocol. Host and port names are not
//! resolved (`host example.com`, `port http` are refused); byte offsets (`ip[9] = 17`), `ether`,
//! `vlan`, `less`/`greater` and the rest of tcpdump's language are refused with the list above.
//!
//! Everything is checked here, BEFORE anything is loaded into the kernel.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use tracer_common::program::{
    DIR_BOTH, DIR_DST, DIR_EITHER, DIR_SRC, K_ARP, K_IP, K_IP6, K_RARP, OP_AND, OP_HOST, OP_KIND,
    OP_NOT, OP_OR, OP_PORT, OP_PROTO,
};
use tracer_common::{Filter, Insn, Packet, F_IFINDEX, F_NETNS, MAX_INSNS};

/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IGMP: u8 = 2;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;

/// What is supported, for error messages.
const SUPPORTED: &str = "supported: and/&&, or/||, not/!, ( ), ip, ip6, arp, rarp, tcp, udp, \
     sctp, icmp, icmp6, igmp, [ip|ip6] proto N, [ip|ip6|arp] [src|dst] host ADDR, \
     [src|dst] net ADDR/LEN (or ADDR mask MASK), [tcp|udp|sctp] [src|dst] port N, \
     [src|dst] portrange N-M";

/// Parses and compiles a filter expression. Errors name the word that is wrong and say what is
/// supported. The empty expression matches everything.
pub fn parse(expr: &str) -> Result<Filter> {
    let tokens = tokenize(expr);
    let mut f = Filter::default();
    if tokens.is_empty() {
        return Ok(f);
    }
    let mut p = Parser {
        expr,
        tokens,
        at: 0,
        last: None,
    };
    let code = p.expr()?;
    if let Some(t) = p.peek() {
        bail!(
            "unexpected {t:?} in filter {expr:?}: {}",
            if t == ")" {
                "this `)` has no `(`".to_string()
            } else {
                "primitives are joined with `and` or `or`".to_string()
            }
        );
    }
    if code.len() > MAX_INSNS {
        bail!(
            "filter {expr:?} is too long: it compiles to {} instructions, the kernel side runs at \
             most {MAX_INSNS} (about 30 primitives)",
            code.len()
        );
    }
    f.len = code.len() as u32;
    f.prog[..code.len()].copy_from_slice(&code);
    Ok(f)
}

/// Splits into words, with `(`, `)` and `!` as words of their own (`!(udp)` is three words).
fn tokenize(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for word in expr.split_whitespace() {
        let mut cur = String::new();
        let mut chars = word.chars().peekable();
        while let Some(c) = chars.next() {
            let lone_bang = c == '!' && chars.peek() != Some(&'=');
            if c == '(' || c == ')' || lone_bang {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

/// The keywords of a primitive, remembered so that `port 53 or 80` can reuse them for `80`.
#[derive(Clone, Copy)]
struct Qual {
    /// `K_*` bits named by `ip`/`ip6`/`arp`/`rarp` before the primitive (0 = not named).
    kinds: u8,
    /// `tcp`/`udp`/`sctp` before `port` (0 = any).
    proto: u8,
    dir: u8,
    /// "host", "net", "port" or "portrange".
    what: &'static str,
}

struct Parser<'a> {
    expr: &'a str,
    tokens: Vec<String>,
    at: usize,
    last: Option<Qual>,
}

fn insn(op: u8) -> Insn {
    Insn { op, ..Insn::ZERO }
}

fn kind(kinds: u8) -> Insn {
    Insn {
        kinds,
        ..insn(OP_KIND)
    }
}

fn proto(kinds: u8, proto: u8) -> Insn {
    Insn {
        kinds,
        proto,
        ..insn(OP_PROTO)
    }
}

fn proto_number(word: &str) -> Option<u8> {
    Some(match word.trim_start_matches('\\') {
        "icmp" => IPPROTO_ICMP,
        "igmp" => IPPROTO_IGMP,
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        "icmp6" => IPPROTO_ICMPV6,
        "sctp" => IPPROTO_SCTP,
        n => return n.parse().ok(),
    })
}

/// The kinds a protocol keyword applies to: `icmp` and `igmp` are IPv4 only, `icmp6` IPv6 only.
fn proto_kinds(p: u8) -> u8 {
    match p {
        IPPROTO_ICMP | IPPROTO_IGMP => K_IP,
        IPPROTO_ICMPV6 => K_IP6,
        _ => K_IP | K_IP6,
    }
}

fn l3_kind(word: &str) -> Option<u8> {
    Some(match word {
        "ip" => K_IP,
        "ip6" => K_IP6,
        "arp" => K_ARP,
        "rarp" => K_RARP,
        _ => return None,
    })
}

fn l4_proto(word: &str) -> Option<u8> {
    Some(match word {
        "tcp" => IPPROTO_TCP,
        "udp" => IPPROTO_UDP,
        "sctp" => IPPROTO_SCTP,
        _ => return None,
    })
}

fn is_operator(w: &str) -> bool {
    matches!(w, "and" | "&&" | "or" | "||" | "not" | "!" | "(" | ")")
}

impl Parser<'_> {
    fn peek(&self) -> Option<&str> {
        self.tokens.get(self.at).map(String::as_str)
    }

    fn peek_at(&self, n: usize) -> Option<&str> {
        self.tokens.get(self.at + n).map(String::as_str)
    }

    fn next(&mut self) -> Option<String> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    /// The next word, which must exist: `after` says what needed it.
    fn need(&mut self, after: &str, example: &str) -> Result<String> {
        match self.next() {
            Some(w) if !is_operator(&w) => Ok(w),
            Some(w) => {
                bail!("`{after}` must be followed by a value, e.g. `{after} {example}`, not {w:?}")
            }
            None => bail!("`{after}` needs a value, e.g. `{after} {example}`"),
        }
    }

    fn expr(&mut self) -> Result<Vec<Insn>> {
        let mut code = self.term()?;
        while let Some(op) = self.peek() {
            let op = match op {
                "and" | "&&" => OP_AND,
                "or" | "||" => OP_OR,
                _ => break,
            };
            let word = self.next().unwrap_or_default();
            if self.peek().is_none() || self.peek() == Some(")") {
                bail!(
                    "filter {:?} has nothing after `{word}`: a primitive must follow it",
                    self.expr
                );
            }
            code.extend(self.term()?);
            code.push(insn(op));
        }
        Ok(code)
    }

    fn term(&mut self) -> Result<Vec<Insn>> {
        match self.peek() {
            None => bail!(
                "filter {:?} ends too early: a primitive is missing",
                self.expr
            ),
            Some("not" | "!") => {
                self.next();
                let mut code = self.term()?;
                code.push(insn(OP_NOT));
                Ok(code)
            }
            Some("(") => {
                self.next();
                let code = self.expr()?;
                match self.next().as_deref() {
                    Some(")") => Ok(code),
                    Some(w) => bail!("expected `)` in filter {:?}, found {w:?}", self.expr),
                    None => bail!("filter {:?} has a `(` without its `)`", self.expr),
                }
            }
            Some(_) => self.primitive(),
        }
    }

    fn primitive(&mut self) -> Result<Vec<Insn>> {
        let first = self.next().unwrap_or_default();
        let w = first.as_str();
        // A bare value after and/or repeats the previous primitive's keywords.
        let range = w
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<u16>().is_ok() && b.parse::<u16>().is_ok());
        if w.parse::<IpAddr>().is_ok() || w.contains('/') || w.parse::<u32>().is_ok() || range {
            let Some(q) = self.last else {
                bail!(
                    "{w:?} alone is not a primitive: write `host {w}`, `net {w}` or `port {w}` \
                     ({SUPPORTED})"
                );
            };
            return self.value(q, w.to_string());
        }
        if w == "ip6" || w == "ip" {
            // `ip proto N`, `ip host …`, or just `ip`.
            let k = l3_kind(w).unwrap_or_default();
            if self.peek() == Some("proto") {
                self.next();
                return self.proto_value(k);
            }
            if self.starts_qualified() {
                return self.qualified(k, 0);
            }
            return Ok(vec![kind(k)]);
        }
        if w == "arp" || w == "rarp" {
            let k = l3_kind(w).unwrap_or_default();
            if self.starts_qualified() {
                return self.qualified(k, 0);
            }
            return Ok(vec![kind(k)]);
        }
        if let Some(p) = l4_proto(w) {
            if self.starts_qualified() {
                return self.qualified(0, p);
            }
            return Ok(vec![proto(proto_kinds(p), p)]);
        }
        match w {
            "icmp" | "icmp6" | "igmp" => {
                let p = proto_number(w).unwrap_or_default();
                Ok(vec![proto(proto_kinds(p), p)])
            }
            "proto" => self.proto_value(K_IP | K_IP6),
            "src" | "dst" | "host" | "net" | "port" | "portrange" => {
                self.at -= 1;
                self.qualified(0, 0)
            }
            _ => bail!("unknown filter word {w:?} in {:?}: {SUPPORTED}", self.expr),
        }
    }

    /// Is the next word `src`/`dst`/`host`/`net`/`port`/`portrange`?
    fn starts_qualified(&self) -> bool {
        matches!(
            self.peek(),
            Some("src" | "dst" | "host" | "net" | "port" | "portrange")
        )
    }

    fn proto_value(&mut self, kinds: u8) -> Result<Vec<Insn>> {
        let v = self.need("proto", "17")?;
        let p = proto_number(&v).ok_or_else(|| {
            anyhow!(
                "{v:?} is not a protocol: give a number (0-255) or one of tcp, udp, sctp, icmp, \
                 icmp6, igmp"
            )
        })?;
        self.last = None;
        Ok(vec![proto(kinds, p)])
    }

    /// `[DIR] (host|net|port|portrange) VALUE`, after optional `ip`/`arp`/`tcp`… (given).
    fn qualified(&mut self, kinds: u8, l4: u8) -> Result<Vec<Insn>> {
        let mut dir = DIR_EITHER;
        if let Some(d @ ("src" | "dst")) = self.peek() {
            let d = d.to_string();
            dir = if d == "src" { DIR_SRC } else { DIR_DST };
            self.next();
            // `src or dst host X`, `src and dst port N`
            if let (Some(op @ ("or" | "and")), Some(other @ ("src" | "dst"))) =
                (self.peek(), self.peek_at(1))
            {
                if other != d {
                    dir = if op == "or" { DIR_EITHER } else { DIR_BOTH };
                    self.at += 2;
                }
            }
        }
        let what: &'static str = match self.peek() {
            Some("host") => "host",
            Some("net") => "net",
            Some("port") => "port",
            Some("portrange") => "portrange",
            Some(w) if dir != DIR_EITHER && w.parse::<IpAddr>().is_ok() => {
                // `src 10.0.0.1`: host implied (tcpdump refuses `src 10.0.0.0/8` without `net`)
                let q = Qual {
                    kinds,
                    proto: l4,
                    dir,
                    what: "host",
                };
                let v = self.next().unwrap_or_default();
                return self.value(q, v);
            }
            Some(w) => bail!(
                "{w:?} cannot follow here in {:?}: expected host, net, port or portrange \
                 ({SUPPORTED})",
                self.expr
            ),
            None => bail!(
                "filter {:?} ends too early: expected host, net, port or portrange",
                self.expr
            ),
        };
        self.next();
        if l4 != 0 && (what == "host" || what == "net") {
            bail!("`{what}` cannot follow a transport protocol: write `ip {what} …` or `{what} … and tcp`");
        }
        if kinds & (K_ARP | K_RARP) != 0 && what.starts_with("port") {
            bail!("ARP has no ports: `{what}` cannot follow `arp`/`rarp`");
        }
        if kinds != 0 && what.starts_with("port") {
            bail!("write `{what} …` or `tcp {what} …`: `ip {what}` is not supported");
        }
        let q = Qual {
            kinds,
            proto: l4,
            dir,
            what,
        };
        let example = match what {
            "host" => "10.0.0.1",
            "net" => "10.0.0.0/8",
            "port" => "53",
            _ => "1024-65535",
        };
        let v = self.need(what, example)?;
        self.value(q, v)
    }

    /// Compiles one primitive from its keywords and its value.
    fn value(&mut self, q: Qual, v: String) -> Result<Vec<Insn>> {
        self.last = Some(q);
        match q.what {
            "host" | "net" => {
                let (addr, mask, family) = if q.what == "host" {
                    let ip: IpAddr = v.parse().map_err(|_| {
                        anyhow!(
                            "{v:?} is not an IPv4 or IPv6 address (host names are not resolved)"
                        )
                    })?;
                    let bits = if ip.is_ipv4() { 32 } else { 128 };
                    (ip, bits, ip.is_ipv4())
                } else {
                    self.net(&v)?
                };
                let kinds_of_family = if family { K_IP | K_ARP | K_RARP } else { K_IP6 };
                let kinds = if q.kinds == 0 {
                    kinds_of_family
                } else {
                    q.kinds
                };
                if kinds & !kinds_of_family != 0 {
                    bail!(
                        "{v:?} is an IPv{} address: it cannot follow `{}`",
                        if family { 4 } else { 6 },
                        if q.kinds == K_IP6 {
                            "ip6"
                        } else {
                            "ip/arp/rarp"
                        }
                    );
                }
                let mut i = Insn {
                    kinds,
                    dir: q.dir,
                    ..insn(OP_HOST)
                };
                let (a, m) = words(addr, mask);
                i.addr = a;
                i.mask = m;
                Ok(vec![i])
            }
            _ => {
                let (lo, hi) = if q.what == "port" {
                    let p = port(&v)?;
                    (p, p)
                } else {
                    let (a, b) = v.split_once('-').ok_or_else(|| {
                        anyhow!("`portrange` needs two ports joined by `-`, e.g. `portrange 1024-65535`, not {v:?}")
                    })?;
                    let (a, b) = (port(a)?, port(b)?);
                    (a.min(b), a.max(b))
                };
                let i = Insn {
                    dir: q.dir,
                    lo,
                    hi,
                    ..insn(OP_PORT)
                };
                if q.proto == 0 {
                    Ok(vec![i])
                } else {
                    Ok(vec![proto(K_IP | K_IP6, q.proto), i, insn(OP_AND)])
                }
            }
        }
    }

    /// `ADDR/LEN`, or `ADDR mask MASK` (the mask is the next word).
    fn net(&mut self, v: &str) -> Result<(IpAddr, u32, bool)> {
        let (addr, len) = if let Some((a, l)) = v.split_once('/') {
            let ip: IpAddr = a
                .parse()
                .map_err(|_| anyhow!("{a:?} is not an IPv4 or IPv6 address"))?;
            let max = if ip.is_ipv4() { 32 } else { 128 };
            let len: u32 = l
                .parse()
                .ok()
                .filter(|&n| n <= max)
                .ok_or_else(|| anyhow!("{l:?} is not a prefix length (0-{max}) in {v:?}"))?;
            (ip, len)
        } else {
            let ip: IpAddr = v.parse().map_err(|_| {
                anyhow!("`net` needs ADDRESS/LEN or ADDRESS mask MASK, e.g. `net 10.0.0.0/8`, not {v:?}")
            })?;
            if self.peek() != Some("mask") {
                bail!("`net {v}` needs a prefix length (`net {v}/24`) or `mask MASK`");
            }
            self.next();
            let m = self.need("mask", "255.255.255.0")?;
            let mask: IpAddr = m
                .parse()
                .ok()
                .filter(|m: &IpAddr| m.is_ipv4() == ip.is_ipv4())
                .ok_or_else(|| anyhow!("{m:?} is not a mask of the same family as {v:?}"))?;
            let bits = match mask {
                IpAddr::V4(m) => u32::from(m).leading_ones(),
                IpAddr::V6(m) => u128::from(m).leading_ones(),
            };
            let (_, expect) = words(mask, bits);
            if words(mask, 128).0 != expect {
                bail!("mask {m} is not contiguous (ones then zeros)");
            }
            (ip, bits)
        };
        let (a, m) = words(addr, len);
        if (0..4).any(|i| a[i] & !m[i] != 0) {
            bail!(
                "non-network bits set in {v:?} (tcpdump refuses it too): write the network address"
            );
        }
        Ok((addr, len, addr.is_ipv4()))
    }
}

fn port(v: &str) -> Result<u16> {
    v.parse().map_err(|_| {
        anyhow!("{v:?} is not a port number (0-65535; service names are not resolved)")
    })
}

/// An address and a prefix length as the four words [`Insn`] holds (network-order bytes read as
/// native `u32`s, the way the kernel side reads them from the packet).
fn words(ip: IpAddr, prefix: u32) -> ([u32; 4], [u32; 4]) {
    let (bytes, total): ([u8; 16], u32) = match ip {
        IpAddr::V4(v4) => {
            let mut b = [0; 16];
            b[..4].copy_from_slice(&v4.octets());
            (b, 32)
        }
        IpAddr::V6(v6) => (v6.octets(), 128),
    };
    let mut mask = [0u8; 16];
    for (i, m) in mask.iter_mut().enumerate().take((total / 8) as usize) {
        let bits = prefix.saturating_sub(i as u32 * 8).min(8);
        *m = if bits == 0 { 0 } else { 0xffu8 << (8 - bits) };
    }
    let w = |b: &[u8; 16], i: usize| {
        u32::from_ne_bytes([b[i * 4], b[i * 4 + 1], b[i * 4 + 2], b[i * 4 + 3]])
    };
    // `a` keeps the host bits, so that `net` can refuse them; `host` has a full mask.
    let a = [0, 1, 2, 3].map(|i| w(&bytes, i));
    let m = [0, 1, 2, 3].map(|i| w(&mask, i));
    (a, m)
}

/// Adds the namespace and interface restrictions given as command-line options.
pub fn restrict(f: &mut Filter, netns: Option<u32>, ifindex: Option<u32>) {
    if let Some(ns) = netns {
        f.flags |= F_NETNS;
        f.netns = ns;
    }
    if let Some(ix) = ifindex {
        f.flags |= F_IFINDEX;
        f.ifindex = ix;
    }
}

/// The filter program as text, one instruction per line (for `--help`-level debugging and tests).
pub fn disassemble(f: &Filter) -> String {
    let mut out = String::new();
    for i in &f.prog[..f.len as usize] {
        let line = match i.op {
            OP_AND => "and".to_string(),
            OP_OR => "or".to_string(),
            OP_NOT => "not".to_string(),
            OP_KIND => format!("kind {:#x}", i.kinds),
            OP_PROTO => format!("proto {} kinds {:#x}", i.proto, i.kinds),
            OP_HOST => format!(
                "host dir {} kinds {:#x} addr {:08x?} mask {:08x?}",
                i.dir, i.kinds, i.addr, i.mask
            ),
            OP_PORT => format!("port dir {} {}-{}", i.dir, i.lo, i.hi),
            op => format!("?{op}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// What the eBPF program extracts from a packet (`read_tuple` in `tracer-ebpf`), computed here
/// from an Ethernet frame as captured by tcpdump: the same fields, by the same rules. The tests
/// use it to run [`tracer_common::program::eval`] on every packet of a pcap file.
pub fn packet_of_frame(frame: &[u8]) -> Packet {
    let mut p = Packet::default();
    let byte = |i: usize| frame.get(i).copied().unwrap_or(0);
    let word = |i: usize| u32::from_ne_bytes([byte(i), byte(i + 1), byte(i + 2), byte(i + 3)]);
    let ethertype = u16::from_be_bytes([byte(12), byte(13)]);
    let ip = 14;
    let version = byte(ip) >> 4;
    let l4 = if ethertype == 0x0800 && version == 4 {
        p.kind = K_IP;
        p.proto = byte(ip + 9);
        p.saddr[0] = word(ip + 12);
        p.daddr[0] = word(ip + 16);
        if u16::from_be_bytes([byte(ip + 6), byte(ip + 7)]) & 0x1fff != 0 {
            return p;
        }
        ip + (byte(ip) & 0x0f) as usize * 4
    } else if ethertype == 0x86dd && version == 6 {
        p.kind = K_IP6;
        p.proto = byte(ip + 6);
        p.saddr = [0, 1, 2, 3].map(|i| word(ip + 8 + 4 * i));
        p.daddr = [0, 1, 2, 3].map(|i| word(ip + 24 + 4 * i));
        if p.proto == tracer_common::program::IPPROTO_FRAGMENT {
            p.inner = byte(ip + 40);
            return p;
        }
        ip + 40
    } else if ethertype == 0x0806 || ethertype == 0x8035 {
        p.kind = if ethertype == 0x0806 { K_ARP } else { K_RARP };
        p.saddr[0] = word(ip + 14);
        p.daddr[0] = word(ip + 24);
        return p;
    } else {
        return p;
    };
    if matches!(p.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP) {
        p.sport = u16::from_be_bytes([byte(l4), byte(l4 + 1)]);
        p.dport = u16::from_be_bytes([byte(l4 + 2), byte(l4 + 3)]);
        p.ports_ok = 1;
    }
    p
}

/// Does the filter's expression match this Ethernet frame? (The evaluator the kernel runs, on
/// the fields [`packet_of_frame`] extracts; the namespace/interface restrictions are ignored.)
pub fn matches_frame(f: &Filter, frame: &[u8]) -> bool {
    tracer_common::program::eval(&f.prog, f.len, &packet_of_frame(frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_matches_everything() {
        assert_eq!(parse("").unwrap(), Filter::default());
        assert_eq!(parse("   ").unwrap().len, 0);
        let f = parse("").unwrap();
        assert!(matches_frame(&f, &[0u8; 60]));
    }

    #[test]
    fn postfix_order_and_precedence_like_tcpdump() {
        // `and` and `or` have equal precedence, left to right: (udp or icmp) and port 80.
        let ops: Vec<u8> = parse("udp or icmp and port 80").unwrap().prog[..5]
            .iter()
            .map(|i| i.op)
            .collect();
        assert_eq!(ops, [OP_PROTO, OP_PROTO, OP_OR, OP_PORT, OP_AND]);
        let ops: Vec<u8> = parse("not udp and (tcp or !icmp)").unwrap().prog[..7]
            .iter()
            .map(|i| i.op)
            .collect();
        assert_eq!(
            ops,
            [OP_PROTO, OP_NOT, OP_PROTO, OP_PROTO, OP_NOT, OP_OR, OP_AND]
        );
    }

    #[test]
    fn values_are_compiled_in_network_order() {
        let f = parse("src net 10.1.0.0/16").unwrap();
        let i = f.prog[0];
        assert_eq!(
            (i.op, i.dir, i.kinds),
            (OP_HOST, DIR_SRC, K_IP | K_ARP | K_RARP)
        );
        assert_eq!(i.addr[0].to_ne_bytes(), [10, 1, 0, 0]);
        assert_eq!(i.mask[0].to_ne_bytes(), [255, 255, 0, 0]);
        let i = parse("dst net 192.168.0.0 mask 255.255.255.0")
            .unwrap()
            .prog[0];
        assert_eq!(i.mask[0].to_ne_bytes(), [255, 255, 255, 0]);
        let i = parse("ip6 host fd00::1").unwrap().prog[0];
        assert_eq!((i.kinds, i.mask), (K_IP6, [u32::MAX; 4]));
        let i = parse("portrange 5000-1000").unwrap().prog[0];
        assert_eq!((i.op, i.lo, i.hi, i.dir), (OP_PORT, 1000, 5000, DIR_EITHER));
        let f = parse("tcp dst port 80").unwrap();
        assert_eq!(f.len, 3);
        assert_eq!((f.prog[0].op, f.prog[0].proto), (OP_PROTO, IPPROTO_TCP));
        assert_eq!(f.prog[1].dir, DIR_DST);
    }

    #[test]
    fn a_bare_value_repeats_the_previous_keywords() {
        let f = parse("src port 53 or 80").unwrap();
        assert_eq!(f.len, 3);
        assert_eq!(
            (f.prog[1].op, f.prog[1].dir, f.prog[1].lo),
            (OP_PORT, DIR_SRC, 80)
        );
    }

    #[test]
    fn too_long_filters_are_refused_before_loading() {
        let group = |n: usize| {
            (1..=n)
                .map(|i| format!("(host 10.0.0.{i} and not port {i})"))
                .collect::<Vec<_>>()
                .join(" or ")
        };
        assert_eq!(parse(&group(13)).unwrap().len as usize, MAX_INSNS);
        let err = parse(&group(14)).unwrap_err().to_string();
        assert!(err.contains("too long"), "{err}");
    }

    #[test]
    fn malformed_filters_say_why() {
        for (bad, needle) in [
            ("udp or", "nothing after `or`"),
            ("(udp", "without its `)`"),
            ("udp)", "has no `(`"),
            ("udp tcp", "joined with `and` or `or`"),
            ("port", "needs a value"),
            ("port and udp", "must be followed by a value"),
            ("port http", "not a port number"),
            ("port 70000", "not a port number"),
            ("portrange 10", "two ports joined by `-`"),
            ("host example.com", "not an IPv4 or IPv6 address"),
            ("net 10.0.0.1/8", "non-network bits"),
            ("net 10.0.0.0", "needs a prefix length"),
            ("net 10.0.0.0 mask 255.0.255.0", "not contiguous"),
            ("net 10.0.0.0/33", "not a prefix length"),
            ("ip6 host 10.0.0.1", "cannot follow"),
            ("tcp host 10.0.0.1", "cannot follow a transport protocol"),
            ("arp port 53", "ARP has no ports"),
            ("src color 3", "cannot follow here"),
            ("banana", "unknown filter word \"banana\""),
            (
                "ether host 02:00:00:00:00:01",
                "unknown filter word \"ether\"",
            ),
            ("ip[9] = 17", "unknown filter word \"ip[9]\""),
            ("less 100", "unknown filter word \"less\""),
            ("53", "alone is not a primitive"),
            ("proto banana", "not a protocol"),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
        // Unknown words list what is supported.
        assert!(parse("vlan").unwrap_err().to_string().contains("portrange"));
    }

    #[test]
    fn command_line_restrictions() {
        let mut f = parse("udp").unwrap();
        restrict(&mut f, Some(4026531840), Some(1));
        assert_eq!(f.flags, F_NETNS | F_IFINDEX);
        assert_eq!((f.netns, f.ifindex), (4026531840, 1));
        assert_eq!(f.len, 1);
    }
}
