//! A small pcap-like filter language, compiled into the [`Filter`] struct that the eBPF program
//! evaluates in the kernel.
//!
//! Grammar (a conjunction of primitives, as in tcpdump but `and` only):
//!
//! ```text
//! expr      := primitive ( "and" primitive )*
//! primitive := "udp" | "tcp" | "icmp" | "icmp6" | "ip" | "ip6"
//!            | [ "src" | "dst" ] "host" ADDRESS      (IPv4 or IPv6)
//!            | [ "src" | "dst" ] "port" NUMBER
//! ```
//!
//! Examples: `udp and port 4000`, `src host 172.18.0.1 and dst port 34320`, `ip6 and udp`.
//! `or`, `not` and parentheses are refused with a message: a conjunction fits in one fixed struct,
//! which keeps the in-kernel check a handful of comparisons. The empty expression matches all.
//!
//! Everything is checked here, BEFORE anything is loaded into the kernel.

use std::net::IpAddr;

use anyhow::{anyhow, bail, Result};
use tracer_common::{
    Addr, Filter, F_DST_HOST, F_DST_PORT, F_HOST, F_IFINDEX, F_NETNS, F_PORT, F_SRC_HOST,
    F_SRC_PORT,
};

/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;

/// Converts an address to the 16-byte form the kernel side compares against.
pub fn addr(ip: IpAddr) -> Addr {
    let mut a = Addr::default();
    match ip {
        IpAddr::V4(v4) => {
            a.family = 4;
            a.bytes[..4].copy_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            a.family = 6;
            a.bytes = v6.octets();
        }
    }
    a
}

/// Parses a filter expression. Errors say which word is wrong and what was expected.
pub fn parse(expr: &str) -> Result<Filter> {
    let mut f = Filter::default();
    let words: Vec<&str> = expr.split_whitespace().collect();
    if words.is_empty() {
        return Ok(f);
    }
    let mut i = 0;
    loop {
        i = primitive(&words, i, &mut f)?;
        match words.get(i) {
            None => break,
            Some(&"and" | &"&&") => {
                i += 1;
                if i == words.len() {
                    bail!("filter {expr:?} ends with `and`: a primitive must follow it");
                }
            }
            Some(&w) => bail!(unsupported(w).unwrap_or_else(|| format!(
                "unexpected {w:?} in filter {expr:?}: primitives are joined with `and`"
            ))),
        }
    }
    Ok(f)
}

/// The message for operators this language deliberately does not have.
fn unsupported(word: &str) -> Option<String> {
    match word {
        "or" | "||" | "not" | "!" => Some(format!(
            "`{word}` is not supported: the filter is a conjunction (`and` only), evaluated in the \
             kernel; run the tracer without this part and grep the output, or run it twice"
        )),
        w if w.starts_with('(') || w.ends_with(')') => {
            Some("parentheses are not supported: the filter is a plain `A and B and C`".into())
        }
        _ => None,
    }
}

fn set_l3(f: &mut Filter, l3: u8) -> Result<()> {
    if f.l3 != 0 && f.l3 != l3 {
        bail!("the filter asks for both IPv4 and IPv6 (`ip`/`icmp` vs `ip6`/`icmp6`/an IPv6 address): nothing can match");
    }
    f.l3 = l3;
    Ok(())
}

fn set_l4(f: &mut Filter, l4: u8, word: &str) -> Result<()> {
    if f.l4 != 0 && f.l4 != l4 {
        bail!(
            "the filter asks for two transport protocols (second one: `{word}`): nothing can match"
        );
    }
    f.l4 = l4;
    Ok(())
}

fn set_flag(f: &mut Filter, flag: u32, what: &str) -> Result<()> {
    if f.flags & flag != 0 {
        bail!("`{what}` appears twice: each primitive may be used once (a packet has one {what})");
    }
    f.flags |= flag;
    Ok(())
}

/// Parses one primitive starting at `words[i]`; returns the index after it.
fn primitive(words: &[&str], mut i: usize, f: &mut Filter) -> Result<usize> {
    let first = words[i];
    if let Some(msg) = unsupported(first) {
        bail!(msg);
    }
    match first {
        "udp" => set_l4(f, IPPROTO_UDP, first)?,
        "tcp" => set_l4(f, IPPROTO_TCP, first)?,
        "icmp" => {
            set_l3(f, 4)?;
            set_l4(f, IPPROTO_ICMP, first)?
        }
        "icmp6" => {
            set_l3(f, 6)?;
            set_l4(f, IPPROTO_ICMPV6, first)?
        }
        "ip" => set_l3(f, 4)?,
        "ip6" => set_l3(f, 6)?,
        _ => {
            let dir = match first {
                "src" | "dst" => {
                    i += 1;
                    Some(first)
                }
                _ => None,
            };
            let what = *words.get(i).ok_or_else(|| {
                anyhow!("`{first}` must be followed by `host ADDRESS` or `port NUMBER`")
            })?;
            if what != "host" && what != "port" {
                bail!(
                    "unknown filter word {what:?}: expected one of udp, tcp, icmp, icmp6, ip, ip6, \
                     [src|dst] host ADDRESS, [src|dst] port NUMBER"
                );
            }
            let value = *words.get(i + 1).ok_or_else(|| {
                anyhow!("`{what}` needs a value, e.g. `{what} {}`", example(what))
            })?;
            match what {
                "host" => {
                    let ip: IpAddr = value.parse().map_err(|_| {
                        anyhow!("`{value}` is not an IPv4 or IPv6 address (host names are not resolved)")
                    })?;
                    let a = addr(ip);
                    set_l3(f, a.family)?;
                    match dir {
                        Some("src") => {
                            set_flag(f, F_SRC_HOST, "src host")?;
                            f.src_addr = a;
                        }
                        Some(_) => {
                            set_flag(f, F_DST_HOST, "dst host")?;
                            f.dst_addr = a;
                        }
                        None => {
                            set_flag(f, F_HOST, "host")?;
                            f.host_addr = a;
                        }
                    }
                }
                "port" => {
                    let port: u16 = value
                        .parse()
                        .map_err(|_| anyhow!("`{value}` is not a port number (0-65535)"))?;
                    match dir {
                        Some("src") => {
                            set_flag(f, F_SRC_PORT, "src port")?;
                            f.src_port = port;
                        }
                        Some(_) => {
                            set_flag(f, F_DST_PORT, "dst port")?;
                            f.dst_port = port;
                        }
                        None => {
                            set_flag(f, F_PORT, "port")?;
                            f.port = port;
                        }
                    }
                }
                _ => unreachable!("checked above"),
            }
            i += 1;
        }
    }
    Ok(i + 1)
}

fn example(what: &str) -> &'static str {
    if what == "host" {
        "192.168.0.239"
    } else {
        "4000"
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_matches_everything() {
        assert_eq!(parse("").unwrap(), Filter::default());
        assert_eq!(parse("   ").unwrap(), Filter::default());
    }

    #[test]
    fn protocol_and_port() {
        let f = parse("udp and port 4000").unwrap();
        assert_eq!(f.l4, IPPROTO_UDP);
        assert_eq!(f.l3, 0);
        assert_eq!(f.flags, F_PORT);
        assert_eq!(f.port, 4000);
    }

    #[test]
    fn the_story_reply() {
        let f = parse("src host 172.18.0.1 and dst port 34320").unwrap();
        assert_eq!(f.flags, F_SRC_HOST | F_DST_PORT);
        assert_eq!(f.l3, 4);
        assert_eq!(&f.src_addr.bytes[..4], &[172, 18, 0, 1]);
        assert_eq!(f.src_addr.bytes[4..], [0; 12]);
        assert_eq!(f.dst_port, 34320);
    }

    #[test]
    fn ipv6() {
        let f = parse("ip6 and udp").unwrap();
        assert_eq!((f.l3, f.l4), (6, IPPROTO_UDP));
        let f = parse("dst host ::1 and src port 53").unwrap();
        assert_eq!(f.dst_addr.family, 6);
        assert_eq!(f.dst_addr.bytes[15], 1);
        assert_eq!(f.src_port, 53);
        assert_eq!(parse("icmp6").unwrap().l4, IPPROTO_ICMPV6);
    }

    #[test]
    fn single_primitives() {
        assert_eq!(parse("tcp").unwrap().l4, IPPROTO_TCP);
        let f = parse("host 192.168.0.239").unwrap();
        assert_eq!(f.flags, F_HOST);
        assert_eq!(f.host_addr.family, 4);
        assert_eq!(parse("icmp").unwrap().l3, 4);
    }

    #[test]
    fn malformed_filters_say_why() {
        for (bad, needle) in [
            ("udp or tcp", "not supported"),
            ("not udp", "not supported"),
            ("(udp)", "parentheses"),
            ("udp and", "ends with `and`"),
            ("udp tcp", "joined with `and`"),
            ("port", "needs a value"),
            ("port http", "not a port number"),
            ("port 70000", "not a port number"),
            ("host example.com", "not an IPv4 or IPv6 address"),
            ("src", "must be followed by"),
            ("src color 3", "unknown filter word"),
            ("banana", "unknown filter word"),
            ("ip and ip6", "both IPv4 and IPv6"),
            ("ip6 and host 10.0.0.1", "both IPv4 and IPv6"),
            ("udp and tcp", "two transport protocols"),
            ("port 1 and port 2", "appears twice"),
        ] {
            let err = parse(bad).expect_err(bad).to_string();
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn command_line_restrictions() {
        let mut f = parse("udp").unwrap();
        restrict(&mut f, Some(4026531840), Some(1));
        assert_eq!(f.flags, F_NETNS | F_IFINDEX);
        assert_eq!((f.netns, f.ifindex), (4026531840, 1));
    }
}
