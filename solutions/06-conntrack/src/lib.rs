//! # Exercise 6 — read conntrack
//!
//! The drop tracer said the answer died in dind2 with `NO_SOCKET`: no socket wanted
//! `172.18.0.1:4000 → 172.18.0.3:34320`. But the client *has* a socket on port 34320 —
//! only not on 172.18.0.3. Its datagram left with source 172.17.0.2 and was rewritten
//! by dind2's MASQUERADE; an answer reaches the client only if **conntrack** recognises
//! it as the reply of that flow and undoes the rewrite. So the article's author read
//! dind2's connection-tracking table, `/proc/net/nf_conntrack`, and so will you.
//!
//! Each line of that file is one tracked flow:
//!
//! ```text
//! ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2
//! ^family  ^ ^proto   ^  ^timeout (s)   ^ the ORIGINAL tuple: the first packet, as it arrived            ^ the REPLY tuple: what an answer must look like, after NAT
//! ```
//!
//! - the address family (`ipv4`/`ipv6`) and its number, the protocol's name and number
//!   (`udp 17`, `tcp 6`, `icmp 1`), and the seconds left before the entry expires;
//! - for TCP, the connection's state (`ESTABLISHED`, `TIME_WAIT`, …);
//! - the **original** tuple (`src= dst=` then `sport= dport=`, or `type= code= id=` for
//!   ICMP), `[UNREPLIED]` if no packet came back yet, the **reply** tuple, `[ASSURED]`
//!   once the flow is established both ways;
//! - then `mark=`, `zone=`, `use=` and, depending on the kernel's options, a few more
//!   `key=value` fields (`secctx=`, `labels=`, `delta-time=`); with accounting on, each
//!   tuple is followed by `packets= bytes=`.
//!
//! The reply tuple is the key of the story. For the client's flow it says: *an answer
//! must come from 192.168.0.239:4000 to 172.18.0.3:34320*. Any datagram that arrives is
//! looked up by its tuple: if an entry's reply tuple equals it, it is that flow's answer
//! (and gets its NAT undone); if an entry's original tuple equals it, it belongs to that
//! flow's first direction. If no entry has it, it starts a new flow of its own.
//!
//! You write [`parse_table`] (with [`parse_entry`] for one line) and [`claimant`]; the
//! types are given.

use std::fmt;
use std::net::IpAddr;

/// The layer-4 protocol of a flow, as named in the third column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    /// Any other protocol (`udplite`, `sctp`, `gre`, `unknown`, …): its name and number.
    Other {
        name: String,
        number: u8,
    },
}

/// A tracked connection's state, where the protocol has one (TCP, SCTP, DCCP).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum State {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    SynSent2,
    /// A state name of another protocol (SCTP's `COOKIE_WAIT`, …), as printed.
    Other(String),
}

/// What follows the addresses in a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum L4 {
    /// `sport= dport=` (TCP, UDP, and the other protocols with ports).
    Ports { sport: u16, dport: u16 },
    /// `type= code= id=` (ICMP echo and friends).
    Icmp { kind: u8, code: u8, id: u16 },
    /// Nothing conntrack can tell flows apart by (GRE's keys, unknown protocols).
    None,
}

/// One direction of a flow: `src=… dst=… sport=… dport=…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
}

/// One line of the table: one tracked flow.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub protocol: Protocol,
    /// Seconds until the entry expires, unless more packets come.
    pub timeout: u32,
    /// The connection's state (TCP); `None` for UDP and ICMP.
    pub state: Option<State>,
    /// The flow's first packet, as it arrived (before any NAT of this namespace).
    pub original: Tuple,
    /// What an answer must look like to belong to this flow (after NAT).
    pub reply: Tuple,
    /// `[UNREPLIED]`: nothing has come back yet.
    pub unreplied: bool,
    /// `[ASSURED]`: the flow is established both ways; it will not be evicted early.
    pub assured: bool,
    /// The connection mark (`mark=`), set by `-j CONNMARK` rules; 0 by default.
    pub mark: u32,
    /// The conntrack zone (`zone=`); 0 unless rules use `-j CT --zone`.
    pub zone: u16,
}

/// A line that is not a conntrack entry, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// The line's number, counting from 1.
    pub line: usize,
    /// What was wrong with it.
    pub problem: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.problem)
    }
}

impl std::error::Error for ParseError {}

/// Which of an entry's two tuples a datagram matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The datagram goes the way the flow's first packet went.
    Original,
    /// The datagram is an answer of the flow (its NAT gets undone).
    Reply,
}

/// The entry that claims a datagram, and in which direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim<'a> {
    pub entry: &'a Entry,
    pub direction: Direction,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Protocol::Tcp => f.write_str("tcp"),
            Protocol::Udp => f.write_str("udp"),
            Protocol::Icmp => f.write_str("icmp"),
            Protocol::Icmpv6 => f.write_str("icmpv6"),
            Protocol::Other { name, .. } => f.write_str(name),
        }
    }
}

/// `172.18.0.1:4000 → 172.18.0.3:34320` (ports), `172.17.0.2 → 192.168.0.239 icmp type 8 code 0 id 7`.
impl fmt::Display for Tuple {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |ip: IpAddr, port: u16| match ip {
            IpAddr::V4(ip) => format!("{ip}:{port}"),
            IpAddr::V6(ip) => format!("[{ip}]:{port}"),
        };
        match self.l4 {
            L4::Ports { sport, dport } => {
                write!(f, "{} → {}", at(self.src, sport), at(self.dst, dport))
            }
            L4::Icmp { kind, code, id } => write!(
                f,
                "{} → {} type {kind} code {code} id {id}",
                self.src, self.dst
            ),
            L4::None => write!(f, "{} → {}", self.src, self.dst),
        }
    }
}

/// Parse a whole table (the text of `/proc/net/nf_conntrack`), one entry per line.
/// Blank lines are skipped. The first line that is not an entry stops the parse with a
/// [`ParseError`] that names its number (counting from 1).
pub fn parse_table(text: &str) -> Result<Vec<Entry>, ParseError> {
    // `enumerate` counts from 0; people count lines from 1. The line number is added
    // here, where it is known, so that `parse_entry` only has to say what is wrong.
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            parse_entry(line).map_err(|problem| ParseError {
                line: index + 1,
                problem,
            })
        })
        .collect()
}

/// Parse one line of the table, or say what is wrong with it.
///
/// Never panics, whatever the input: a missing field is an `Err`, not an index out of
/// bounds — the line may have been cut short, or written by another kernel.
pub fn parse_entry(line: &str) -> Result<Entry, String> {
    let mut words = Words {
        rest: line.split_whitespace().peekable(),
    };
    let family = words.next("the address family (ipv4 or ipv6)")?;
    if family != "ipv4" && family != "ipv6" {
        return Err(format!(
            "the line should start with the address family ipv4 or ipv6, not {family:?}"
        ));
    }
    let _family_number: u8 = number(words.next("the address family's number")?)?;
    let name = words.next("the protocol's name")?;
    let protocol_number: u8 = number(words.next("the protocol's number")?)?;
    let protocol = protocol(name, protocol_number)?;
    let timeout: u32 = number(words.next("the timeout")?)?;
    // A state is a bare word (no `=`), and only TCP-like protocols have one.
    let state = match words.peek() {
        Some(word) if !word.contains('=') && !word.starts_with('[') => {
            Some(state(words.next("the state")?))
        }
        _ => None,
    };
    let original = tuple(&mut words, "original")?;
    let unreplied = words.flag("[UNREPLIED]");
    let reply = tuple(&mut words, "reply")?;
    // Both directions of a flow have the same shape: a reply without the ports (or ICMP
    // fields) the original has was cut short.
    if std::mem::discriminant(&original.l4) != std::mem::discriminant(&reply.l4) {
        return Err(format!(
            "the reply tuple ({reply}) lacks the ports or ICMP fields of the original ({original}): truncated?"
        ));
    }
    let (mut assured, mut mark, mut zone) = (false, 0, 0);
    // The rest: flags and `key=value` fields. Some depend on the kernel's options
    // (`secctx=`, `labels=`, `delta-time=`, `use=`); only those of an entry are kept.
    for word in words.rest.by_ref() {
        match word.split_once('=') {
            Some(("mark", value)) => mark = number(value)?,
            Some(("zone", value)) => zone = number(value)?,
            Some((_, _)) => {}
            None if word == "[ASSURED]" => assured = true,
            None if word.starts_with('[') && word.ends_with(']') => {} // [OFFLOAD], …
            None => return Err(format!("unexpected {word:?} after the reply tuple")),
        }
    }
    Ok(Entry {
        protocol,
        timeout,
        state,
        original,
        reply,
        unreplied,
        assured,
        mark,
        zone,
    })
}

/// The entry that would claim `arrived`, a datagram of `protocol` that just arrived in
/// the namespace — as conntrack looks it up: the entry whose **reply** tuple equals it
/// (it is that flow's answer), or else the entry whose **original** tuple equals it.
/// `None`: no flow knows it, and conntrack would start a new one.
pub fn claimant<'a>(
    entries: &'a [Entry],
    protocol: &Protocol,
    arrived: &Tuple,
) -> Option<Claim<'a>> {
    // Conntrack keeps both tuples of every entry in one hash table, so a tuple belongs
    // to at most one entry, in one direction. Looking at replies first follows the
    // story's question: is this the answer some flow is waiting for?
    let of_protocol = || entries.iter().filter(|e| &e.protocol == protocol);
    of_protocol()
        .find(|e| &e.reply == arrived)
        .map(|entry| Claim {
            entry,
            direction: Direction::Reply,
        })
        .or_else(|| {
            of_protocol()
                .find(|e| &e.original == arrived)
                .map(|entry| Claim {
                    entry,
                    direction: Direction::Original,
                })
        })
}

/// The words of a line, taken one at a time, with errors that say what was expected.
struct Words<'a> {
    rest: std::iter::Peekable<std::str::SplitWhitespace<'a>>,
}

impl<'a> Words<'a> {
    fn next(&mut self, what: &str) -> Result<&'a str, String> {
        self.rest
            .next()
            .ok_or_else(|| format!("the line ends where {what} should be (truncated?)"))
    }

    fn peek(&mut self) -> Option<&'a str> {
        self.rest.peek().copied()
    }

    /// Take `flag` if it is the next word.
    fn flag(&mut self, flag: &str) -> bool {
        self.rest.next_if_eq(&flag).is_some()
    }

    /// The value of `key=value`, which must be the next word.
    fn field(&mut self, key: &str, direction: &str) -> Result<&'a str, String> {
        let word = self.next(&format!("`{key}=` of the {direction} tuple"))?;
        word.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .ok_or_else(|| format!("expected `{key}=` in the {direction} tuple, found {word:?}"))
    }
}

/// `src= dst=`, then `sport= dport=` or `type= code= id=` (or nothing), then the
/// accounting counters if present.
fn tuple(words: &mut Words, direction: &str) -> Result<Tuple, String> {
    let src = address(words.field("src", direction)?)?;
    let dst = address(words.field("dst", direction)?)?;
    let next_key = words.peek().and_then(|w| w.split_once('=')).map(|(k, _)| k);
    let l4 = match next_key {
        Some("sport") => L4::Ports {
            sport: number(words.field("sport", direction)?)?,
            dport: number(words.field("dport", direction)?)?,
        },
        Some("type") => L4::Icmp {
            kind: number(words.field("type", direction)?)?,
            code: number(words.field("code", direction)?)?,
            id: number(words.field("id", direction)?)?,
        },
        _ => L4::None,
    };
    // Anything else before the next tuple or flag belongs to this one: GRE's keys,
    // and `packets= bytes=` when accounting is on.
    while let Some(word) = words.peek() {
        if word.starts_with('[') || word.starts_with("src=") || word.starts_with("mark=") {
            break;
        }
        if !word.contains('=') {
            return Err(format!(
                "unexpected {word:?} in the {direction} tuple (after dst={dst})"
            ));
        }
        words.rest.next();
    }
    Ok(Tuple { src, dst, l4 })
}

fn address(text: &str) -> Result<IpAddr, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not an IP address"))
}

fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a valid {}", std::any::type_name::<T>()))
}

fn protocol(name: &str, number: u8) -> Result<Protocol, String> {
    let (protocol, expected) = match name {
        "tcp" => (Protocol::Tcp, 6),
        "udp" => (Protocol::Udp, 17),
        "icmp" => (Protocol::Icmp, 1),
        "icmpv6" => (Protocol::Icmpv6, 58),
        _ => {
            return Ok(Protocol::Other {
                name: name.to_string(),
                number,
            })
        }
    };
    if number != expected {
        return Err(format!(
            "protocol {name} should have number {expected}, not {number}"
        ));
    }
    Ok(protocol)
}

fn state(name: &str) -> State {
    match name {
        "SYN_SENT" => State::SynSent,
        "SYN_RECV" => State::SynRecv,
        "ESTABLISHED" => State::Established,
        "FIN_WAIT" => State::FinWait,
        "CLOSE_WAIT" => State::CloseWait,
        "LAST_ACK" => State::LastAck,
        "TIME_WAIT" => State::TimeWait,
        "CLOSE" => State::Close,
        "SYN_SENT2" => State::SynSent2,
        other => State::Other(other.to_string()),
    }
}
