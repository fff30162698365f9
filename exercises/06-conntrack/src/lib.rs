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
//! types are given. Then run `cargo xtask check 6`: the checks build the story's world,
//! make UDP, TCP and ICMP flows in it (with and without NAT), and compare your parse of
//! each node's table with what `conntrack -L -o extended` reports for the same node —
//! entry for entry. Lines that are cut short or malformed must give an error naming the
//! line, never a panic.

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
    // TODO: go through `text.lines()` with their numbers (from 1, not 0), skip blank
    //   lines, parse each with `parse_entry`, and turn its `Err(problem)` into a
    //   `ParseError { line, problem }`. (`Iterator::collect` can collect an iterator of
    //   `Result`s into one `Result<Vec<_>, _>` that stops at the first error.)
    todo!()
}

/// Parse one line of the table, or say what is wrong with it.
///
/// Never panics, whatever the input: a missing field is an `Err`, not an index out of
/// bounds — the line may have been cut short, or written by another kernel.
pub fn parse_entry(line: &str) -> Result<Entry, String> {
    // TODO: split the line into words (`split_whitespace`) and take them in order:
    //   family (`ipv4`/`ipv6`), its number, the protocol's name and number, the timeout.
    //   Map the name to a `Protocol` (`udp` 17, `tcp` 6, `icmp` 1, `icmpv6` 58, else Other).
    // TODO: a word without `=` that is not a `[FLAG]` is the state (TCP only): map it to
    //   a `State` (`ESTABLISHED` → State::Established, …, unknown → State::Other).
    // TODO: the original tuple: `src=` and `dst=` (IpAddr), then `sport= dport=`
    //   (L4::Ports), or `type= code= id=` (L4::Icmp), or neither (L4::None). Skip any
    //   other `key=value` before the next tuple or flag (`packets= bytes=` with
    //   accounting on).
    // TODO: `[UNREPLIED]` (optional), the reply tuple — with the same shape as the
    //   original: a reply without the original's ports was cut short — then the rest:
    //   `[ASSURED]`, `mark=`, `zone=`; ignore other `key=value` fields (`use=`, …).
    // TODO: every missing or unparsable word is an `Err` that says what was expected
    //   — use `ok_or_else` and `map_err`, never `unwrap` or `[index]`.
    todo!()
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
    // TODO: among the entries of this protocol, find one whose `reply` equals `arrived`
    //   (Direction::Reply); if there is none, one whose `original` equals it
    //   (Direction::Original).
    todo!()
}
