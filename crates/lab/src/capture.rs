//! `lab capture NODE IFACE FILE [FILTER…]` — capture the frames of one interface of a
//! node of the running world (`lab up`) into a pcap file, with the course's own capture
//! (exercise 4's reference answer), to open in Wireshark or `tshark -r FILE`.
//!
//! The capture must run *inside* the node: its packet socket, and the interface name,
//! belong to the node's network namespace. So `lab capture` checks its arguments, then
//! runs itself again through `lab exec` (which joins the node) as the hidden command
//! `lab capture-here`, and waits. Ctrl-C (or `--seconds`) stops it; the file is written
//! then.
//!
//! ## The filter
//!
//! A small subset of tcpdump's syntax — primitives joined by `and`:
//!
//! | primitive | keeps |
//! |---|---|
//! | `ip`, `udp`, `tcp`, `icmp`, `arp` | frames of that protocol (IPv4) |
//! | `[src\|dst] host A` | IPv4 packets from / to / either way address A |
//! | `[udp\|tcp] [src\|dst] port N` | UDP or TCP with that port (either protocol when none is named) |
//!
//! `udp port 4000`, `host 172.18.0.3 and udp`, `udp src port 4000 and dst host 172.18.0.3`.
//! Anything else (`or`, `not`, parentheses, `net`, `ether`, IPv6, …) is refused with a
//! message: capture without a filter, and filter in Wireshark instead.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{SigSet, Signal};
use solution_capture::frame::{self, ETHERTYPE_ARP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

use crate::style::bold;

/// What the filter syntax understands, for error messages.
const SYNTAX: &str = "the course's capture filter understands primitives joined by `and`: \
    ip, udp, tcp, icmp, arp, [src|dst] host A, [udp|tcp] [src|dst] port N \
    (e.g. 'udp port 4000', 'host 172.18.0.3 and udp')";

/// `lab capture`: check the arguments, then capture inside `node` through `lab exec`.
pub fn run(
    lab: Option<u32>,
    node: &str,
    interface: &str,
    file: &Path,
    filter: &[String],
    seconds: Option<u64>,
) -> Result<i32> {
    // Refuse a filter we do not understand before joining anything.
    let filter_text = filter.join(" ");
    Expression::parse(&filter_text)?;
    let file = absolute(file);
    let exe = std::env::current_exe().context("cannot find the lab's own executable")?;
    let mut command = vec![
        exe.to_string_lossy().into_owned(),
        "capture-here".to_string(),
        node.to_string(),
        interface.to_string(),
        file.to_string_lossy().into_owned(),
    ];
    if let Some(seconds) = seconds {
        command.extend(["--seconds".to_string(), seconds.to_string()]);
    }
    command.extend(filter.iter().cloned());
    // Ctrl-C reaches both processes (same terminal): the capture inside the node stops
    // and writes its file; this one just waits for it to finish.
    block_stop_signals()?;
    crate::exec::run(node, &command, lab)
}

/// `lab capture-here`: capture in the current network namespace (where `lab exec` put
/// us) until Ctrl-C, SIGTERM, or `seconds` have passed; then write the file.
pub fn run_here(
    node: &str,
    interface: &str,
    file: &Path,
    filter: &[String],
    seconds: Option<u64>,
) -> Result<i32> {
    // Blocked before any thread starts, so that every thread inherits the block and
    // the signal waits for the thread below.
    let signals = block_stop_signals()?;
    let expression = Expression::parse(&filter.join(" "))?;
    let mut capture = solution_capture::open_capture(interface)
        .with_context(|| format!("cannot capture on {interface} in {node}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let _ = signals.wait();
            stop.store(true, Ordering::SeqCst);
        });
    }
    if let Some(seconds) = seconds {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(seconds));
            stop.store(true, Ordering::SeqCst);
        });
    }
    let until = match seconds {
        Some(s) => format!("for {s}s (or Ctrl-C)"),
        None => "until Ctrl-C".to_string(),
    };
    let what = match expression.primitives.is_empty() {
        true => "every frame".to_string(),
        false => format!("frames matching '{}'", filter.join(" ")),
    };
    println!(
        "{} {interface} in {node}: {what}, {until}",
        bold("Capturing on")
    );
    let keep = move |bytes: &[u8]| expression.matches(bytes);
    let written = solution_capture::capture_to_file(&mut capture, file, Some(&keep), &stop)
        .with_context(|| format!("capturing to {}", file.display()))?;
    println!(
        "{written} frames written to {}\n  open it: wireshark {0}   or   tshark -r {0}",
        file.display()
    );
    Ok(0)
}

fn block_stop_signals() -> Result<SigSet> {
    let mut signals = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(signal);
    }
    signals
        .thread_block()
        .context("cannot block Ctrl-C to handle it")?;
    Ok(signals)
}

/// `FILE` as given, made absolute against the directory the learner typed the command
/// in: `cargo xtask` runs the lab from the workspace's root, but keeps `$PWD`.
fn absolute(file: &Path) -> PathBuf {
    if file.is_absolute() {
        return file.to_path_buf();
    }
    std::env::var_os("PWD")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .or_else(|| std::env::current_dir().ok())
        .map(|dir| dir.join(file))
        .unwrap_or_else(|| file.to_path_buf())
}

/// A filter expression: every primitive must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    primitives: Vec<Primitive>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Src,
    Dst,
    Either,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Primitive {
    /// An IP protocol number (`None`: any IPv4 packet).
    Ip(Option<u8>),
    Arp,
    Host(Way, Ipv4Addr),
    /// A port of UDP or TCP (`None`: either).
    Port(Option<u8>, Way, u16),
}

impl Expression {
    /// Parse the filter syntax of this module's documentation ("" keeps everything).
    pub fn parse(text: &str) -> Result<Expression> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut primitives = Vec::new();
        let mut rest = &words[..];
        while !rest.is_empty() {
            let (primitive, used) = Primitive::parse(rest)?;
            primitives.push(primitive);
            rest = &rest[used..];
            match rest.first() {
                None => {}
                Some(&"and") | Some(&"&&") if rest.len() > 1 => rest = &rest[1..],
                Some(&"and") | Some(&"&&") => bail!("the filter ends with `and`: {SYNTAX}"),
                // tcpdump allows juxtaposition too (`udp port 4000` is one primitive
                // for us, but `host A udp` would be two): accept it.
                Some(_) => {}
            }
        }
        Ok(Expression { primitives })
    }

    /// Does the frame match every primitive?
    pub fn matches(&self, bytes: &[u8]) -> bool {
        self.primitives.iter().all(|p| p.matches(bytes))
    }
}

impl Primitive {
    /// One primitive from the start of `words`; returns it and how many words it used.
    fn parse(words: &[&str]) -> Result<(Primitive, usize)> {
        let mut at = 0;
        let protocol = match words[at] {
            "ip" => Some(None),
            "udp" => Some(Some(IPPROTO_UDP)),
            "tcp" => Some(Some(IPPROTO_TCP)),
            "icmp" => Some(Some(IPPROTO_ICMP)),
            "arp" => return Ok((Primitive::Arp, 1)),
            _ => None,
        };
        if protocol.is_some() {
            at += 1;
        }
        let way = match words.get(at) {
            Some(&"src") => Way::Src,
            Some(&"dst") => Way::Dst,
            _ => Way::Either,
        };
        if way != Way::Either {
            at += 1;
        }
        match (words.get(at), protocol) {
            (Some(&"host"), _) => {
                if matches!(protocol, Some(Some(_))) {
                    bail!(
                        "`{} host …`: write `host A and {0}` instead; {SYNTAX}",
                        words[0]
                    );
                }
                let address = words
                    .get(at + 1)
                    .with_context(|| format!("`host` needs an IPv4 address; {SYNTAX}"))?;
                let address: Ipv4Addr = address.parse().with_context(|| {
                    format!(
                        "`{address}` is not an IPv4 address (names are not looked up); {SYNTAX}"
                    )
                })?;
                Ok((Primitive::Host(way, address), at + 2))
            }
            (Some(&"port"), Some(Some(IPPROTO_ICMP))) | (Some(&"port"), Some(None)) => {
                bail!("ports belong to udp or tcp, not `{}`; {SYNTAX}", words[0])
            }
            (Some(&"port"), protocol) => {
                let port = words
                    .get(at + 1)
                    .with_context(|| format!("`port` needs a number; {SYNTAX}"))?;
                let port: u16 = port.parse().with_context(|| {
                    format!("`{port}` is not a port number (0–65535; service names are not looked up); {SYNTAX}")
                })?;
                Ok((Primitive::Port(protocol.flatten(), way, port), at + 2))
            }
            (_, Some(protocol)) if way == Way::Either => Ok((Primitive::Ip(protocol), at)),
            (word, _) => {
                let word = word.or(words.get(at.saturating_sub(1))).unwrap_or(&"");
                bail!("`{word}` is not supported: {SYNTAX}. For anything richer, capture without a filter and filter in Wireshark (e.g. -Y 'udp.port == 4000 || icmp')")
            }
        }
    }

    fn matches(&self, bytes: &[u8]) -> bool {
        if let Primitive::Arp = self {
            return frame::ethertype(bytes) == Some(ETHERTYPE_ARP);
        }
        let Some(ip) = frame::ipv4(bytes) else {
            return false;
        };
        let either = |way: Way, src: bool, dst: bool| match way {
            Way::Src => src,
            Way::Dst => dst,
            Way::Either => src || dst,
        };
        match *self {
            Primitive::Arp => unreachable!("handled above"),
            Primitive::Ip(protocol) => protocol.is_none_or(|p| ip.protocol == p),
            Primitive::Host(way, address) => either(way, ip.src == address, ip.dst == address),
            Primitive::Port(protocol, way, port) => {
                protocol.is_none_or(|p| ip.protocol == p)
                    && ip
                        .ports()
                        .is_some_and(|(src, dst)| either(way, src == port, dst == port))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use solution_capture::frame::tests_support::udp_frame;

    fn answer() -> Vec<u8> {
        udp_frame([172, 18, 0, 1], 4000, [172, 18, 0, 3], 34320, b"hello")
    }

    #[test]
    fn the_documented_examples_parse_and_match_the_proxy_s_answer() {
        for text in [
            "",
            "udp",
            "ip",
            "udp port 4000",
            "port 34320",
            "udp src port 4000 and dst host 172.18.0.3",
            "host 172.18.0.3 and udp",
            "src host 172.18.0.1 && udp dst port 34320",
        ] {
            let expression = Expression::parse(text).unwrap();
            assert!(expression.matches(&answer()), "{text:?} should match");
        }
        for text in [
            "tcp",
            "arp",
            "icmp",
            "udp dst port 4000",
            "tcp port 4000",
            "host 192.168.0.239",
            "udp port 4000 and src host 172.18.0.3",
        ] {
            let expression = Expression::parse(text).unwrap();
            assert!(!expression.matches(&answer()), "{text:?} should not match");
        }
    }

    #[test]
    fn what_is_not_supported_is_refused_with_the_syntax() {
        for text in [
            "udp or icmp",
            "not arp",
            "(udp)",
            "net 172.18.0.0/16",
            "host",
            "host example.org",
            "udp port http",
            "icmp port 4000",
            "udp and",
            "ip6",
        ] {
            let error = Expression::parse(text).unwrap_err().to_string();
            assert!(
                error.contains("understands primitives joined by `and`"),
                "{text:?}: {error}"
            );
        }
    }
}
