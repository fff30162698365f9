//! Checks for exercise 6 — read conntrack.
//!
//! Two kinds of checks:
//!
//! - **Recorded tables**: real lines of `/proc/net/nf_conntrack` and of
//!   `conntrack -L -o extended`, captured from the story's world on the course's CI
//!   machine (kernel 6.18, conntrack-tools 1.4.7) and kept below as test data. Your
//!   parse of them is compared field by field; damaged copies of them must give errors
//!   that name the line, never a panic.
//! - **Live tables**: the checks build the story's world (the reference solutions), make
//!   UDP, TCP and ICMP flows in it — with NAT (dind2's MASQUERADE, the host's and
//!   dind1's DNAT) and without (the proxy's own flows) — then read each node's
//!   `/proc/net/nf_conntrack` with your parser and ask `conntrack -L -o extended` (which
//!   reads the same table over netlink) for the same node. The two must agree, entry
//!   for entry. Nothing here knows the entries in advance: the kernel says what they are.

use std::collections::BTreeMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use netlab::conntrack::{self as ct, Source};
use rstest::rstest;
use story::Story;

use crate::under_test::{
    claimant, parse_entry, parse_table, Direction, Entry, Protocol, State, Tuple, L4,
};

netlab::sandbox!();

// ── Recorded tables ────────────────────────────────────────────────────────────────
// RECORDED on the course's CI machine (Linux 6.18, conntrack-tools 1.4.7), from the
// story's world after the client's datagram, a TCP connection from `peer` to
// 192.168.0.239:4000 and an ICMP echo from `client` to 192.168.0.239 — copied verbatim
// from `cargo xtask lab exec NODE -- cat /proc/net/nf_conntrack` and
// `cargo xtask lab exec NODE -- conntrack -L -o extended`.

/// RECORDED: dind2's `/proc/net/nf_conntrack`.
const DIND2_PROC: &str = "\
ipv4     2 unknown  2 592 src=172.17.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=172.17.0.1 mark=0 zone=0 use=2
ipv4     2 icmp     1 28 src=172.17.0.2 dst=192.168.0.239 type=8 code=0 id=77 src=192.168.0.239 dst=172.18.0.3 type=0 code=0 id=77 mark=0 zone=0 use=2
ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2
ipv4     2 udp      17 27 src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED] src=172.18.0.3 dst=172.18.0.1 sport=34320 dport=4000 mark=0 zone=0 use=2
";

/// RECORDED: `conntrack -L -o extended` in dind2, at the same moment.
const DIND2_CONNTRACK_L: &str = "\
ipv4     2 unknown  2 592 src=172.17.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=172.17.0.1 mark=0 use=1
ipv4     2 icmp     1 28 src=172.17.0.2 dst=192.168.0.239 type=8 code=0 id=77 src=192.168.0.239 dst=172.18.0.3 type=0 code=0 id=77 mark=0 use=1
ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 use=1
ipv4     2 udp      17 27 src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED] src=172.18.0.3 dst=172.18.0.1 sport=34320 dport=4000 mark=0 use=1
";

/// RECORDED: the host's `/proc/net/nf_conntrack`, the TCP connection still open.
const HOST_PROC: &str = "\
ipv4     2 udp      17 27 src=172.18.0.3 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2
ipv4     2 udp      17 27 src=172.18.0.1 dst=172.18.0.3 sport=4000 dport=34320 [UNREPLIED] src=172.18.0.3 dst=172.18.0.1 sport=34320 dport=4000 mark=0 zone=0 use=2
ipv4     2 udp      17 27 src=172.18.0.1 dst=172.18.0.2 sport=57464 dport=4000 src=172.18.0.2 dst=172.18.0.1 sport=4000 dport=57464 mark=0 zone=0 use=2
ipv4     2 unknown  2 591 src=172.18.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=172.18.0.1 mark=0 zone=0 use=2
ipv4     2 tcp      6 431998 ESTABLISHED src=192.168.0.10 dst=192.168.0.239 sport=46422 dport=4000 src=172.18.0.2 dst=192.168.0.10 sport=4000 dport=46422 [ASSURED] mark=0 zone=0 use=2
ipv4     2 icmp     1 28 src=172.18.0.3 dst=192.168.0.239 type=8 code=0 id=77 src=192.168.0.239 dst=172.18.0.3 type=0 code=0 id=77 mark=0 zone=0 use=2
";

/// RECORDED: dind1's `/proc/net/nf_conntrack`, seconds after the TCP connection closed.
const DIND1_PROC_LATER: &str = "\
ipv4     2 unknown  2 583 src=172.17.0.1 dst=224.0.0.22 [UNREPLIED] src=224.0.0.22 dst=172.17.0.1 mark=0 zone=0 use=2
ipv4     2 udp      17 18 src=172.18.0.1 dst=172.18.0.2 sport=57464 dport=4000 src=172.17.0.2 dst=172.18.0.1 sport=4000 dport=57464 mark=0 zone=0 use=2
ipv4     2 tcp      6 117 TIME_WAIT src=192.168.0.10 dst=172.18.0.2 sport=46422 dport=4000 src=172.17.0.2 dst=192.168.0.10 sport=4000 dport=46422 [ASSURED] mark=0 zone=0 use=2
";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an IP address")
}

fn ports(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
    Tuple {
        src: ip(src),
        dst: ip(dst),
        l4: L4::Ports { sport, dport },
    }
}

fn parsed(text: &str) -> Vec<Entry> {
    parse_table(text).unwrap_or_else(|e| panic!("a real table should parse; got {e}"))
}

#[test]
fn a_recorded_udp_entry_is_parsed_field_by_field() {
    let entries = parsed(DIND2_PROC);
    assert_eq!(entries.len(), 4, "dind2's recorded table has 4 lines");
    assert_eq!(
        entries[2],
        Entry {
            protocol: Protocol::Udp,
            timeout: 27,
            state: None,
            original: ports("172.17.0.2", 34320, "192.168.0.239", 4000),
            reply: ports("192.168.0.239", 4000, "172.18.0.3", 34320),
            unreplied: true,
            assured: false,
            mark: 0,
            zone: 0,
        },
        "line 3 of the recorded table: {}",
        DIND2_PROC.lines().nth(2).unwrap()
    );
}

#[test]
fn recorded_tcp_entries_have_their_state_and_are_assured() {
    let established = &parsed(HOST_PROC)[4];
    assert_eq!(established.protocol, Protocol::Tcp);
    assert_eq!(established.state, Some(State::Established));
    assert_eq!(established.timeout, 431_998);
    assert!(established.assured && !established.unreplied);
    assert_eq!(
        established.reply,
        ports("172.18.0.2", 4000, "192.168.0.10", 46422),
        "the host DNATed the connection to dind1: the reply comes from 172.18.0.2:4000"
    );
    let closed = &parsed(DIND1_PROC_LATER)[2];
    assert_eq!(closed.state, Some(State::TimeWait));
    assert_eq!(closed.timeout, 117);
}

#[test]
fn recorded_icmp_and_unknown_protocol_entries() {
    let entries = parsed(DIND2_PROC);
    let echo = &entries[1];
    assert_eq!(echo.protocol, Protocol::Icmp);
    assert_eq!(
        echo.original.l4,
        L4::Icmp {
            kind: 8,
            code: 0,
            id: 77
        }
    );
    assert_eq!(
        echo.reply,
        Tuple {
            src: ip("192.168.0.239"),
            dst: ip("172.18.0.3"),
            l4: L4::Icmp {
                kind: 0,
                code: 0,
                id: 77
            }
        }
    );
    let igmp = &entries[0];
    assert_eq!(
        igmp.protocol,
        Protocol::Other {
            name: "unknown".into(),
            number: 2
        }
    );
    assert_eq!(igmp.original.l4, L4::None);
    assert_eq!(igmp.timeout, 592);
    assert!(igmp.unreplied);
}

#[test]
fn a_recorded_table_parses_to_what_conntrack_l_printed() {
    assert_eq!(
        normalised(&parsed(DIND2_PROC)),
        conntrack_l(DIND2_CONNTRACK_L),
        "your parse of the recorded /proc table (left) differs from `conntrack -L -o extended` (right)"
    );
}

#[test]
fn in_a_recorded_table_the_answer_is_claimed_only_by_its_own_flow() {
    let entries = parsed(DIND2_PROC);
    let answer = ports("172.18.0.1", 4000, "172.18.0.3", 34320);
    let claim = claimant(&entries, &Protocol::Udp, &answer)
        .expect("the answer that arrived has an entry of its own (line 4)");
    assert_eq!(claim.direction, Direction::Original);
    assert_eq!(claim.entry, &entries[3]);

    let expected = ports("192.168.0.239", 4000, "172.18.0.3", 34320);
    let claim = claimant(&entries, &Protocol::Udp, &expected)
        .expect("the answer the client's flow waits for is its reply tuple (line 3)");
    assert_eq!(claim.direction, Direction::Reply);
    assert_eq!(claim.entry, &entries[2]);

    // Same tuple, other protocol: no flow.
    assert_eq!(claimant(&entries, &Protocol::Tcp, &expected), None);
    assert_eq!(
        claimant(
            &entries,
            &Protocol::Udp,
            &ports("10.0.0.1", 1, "10.0.0.2", 2)
        ),
        None
    );
}

// ── Malformed and truncated lines ───────────────────────────────────────────────────

/// A damaged line, put as line 3 of a table whose other lines are real ones.
#[rstest]
#[case::empty_tuple_cut("ipv4     2 udp      17 27 src=172.17.0.2")]
#[case::cut_after_the_original_tuple(
    "ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED]"
)]
#[case::cut_inside_the_reply_tuple("ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000")]
#[case::cut_after_the_protocol("ipv4     2 udp")]
#[case::timeout_not_a_number("ipv4     2 udp      17 soon src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 use=2")]
#[case::port_out_of_range("ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=343200 dport=4000 src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 use=2")]
#[case::not_an_address("ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.999 sport=34320 dport=4000 src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 use=2")]
#[case::not_a_conntrack_line("Chain PREROUTING (policy ACCEPT)")]
#[case::mark_not_a_number("ipv4     2 udp      17 27 src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000 src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=x use=2")]
fn a_damaged_line_is_an_error_that_names_its_line(#[case] damaged: &str) {
    let mut lines: Vec<&str> = DIND2_PROC.lines().collect();
    lines.insert(2, damaged);
    let table = lines.join("\n");
    match parse_table(&table) {
        Ok(entries) => panic!(
            "line 3 is damaged, yet the table parsed ({} entries):\n{damaged}",
            entries.len()
        ),
        Err(error) => {
            assert_eq!(error.line, 3, "the error should name line 3: {error}");
            assert!(
                error.to_string().contains("line 3"),
                "the message should say `line 3`: {error}"
            );
        }
    }
}

/// Every prefix of a real line (the file cut anywhere) is parsed without a panic, and is
/// an error as long as the reply tuple is incomplete.
#[rstest]
#[case::udp(DIND2_PROC.lines().nth(2).unwrap())]
#[case::tcp(HOST_PROC.lines().nth(4).unwrap())]
#[case::icmp(DIND2_PROC.lines().nth(1).unwrap())]
fn a_line_cut_anywhere_is_an_error_never_a_panic(#[case] line: &str) {
    // The last field of the reply tuple, with at least one character of its value.
    let last_field = line
        .rfind(" dport=")
        .or_else(|| line.rfind(" id="))
        .unwrap();
    let complete = line[last_field..].find('=').unwrap() + last_field + 2;
    for end in 0..line.len() {
        let prefix = &line[..end];
        let result = std::panic::catch_unwind(|| parse_entry(prefix));
        let result =
            result.unwrap_or_else(|_| panic!("parse_entry panicked on a cut line: {prefix:?}"));
        if end < complete {
            assert!(
                result.is_err(),
                "a line cut before the end of its reply tuple should be an error: {prefix:?} gave {result:?}"
            );
        }
    }
}

// ── Live tables ─────────────────────────────────────────────────────────────────────

/// The story's world after the story (the client's datagram, lost), a TCP connection
/// from `peer` to 192.168.0.239:4000 (DNATed by host and dind1 to the server), one from
/// `client` to 172.18.0.2:4000 (MASQUERADEd by dind2, DNATed by dind1), and an ICMP echo
/// from `client` to 192.168.0.239 (MASQUERADEd by dind2). The connections stay open as
/// long as this lives.
struct Flows {
    story: Story,
    _tcp: Vec<TcpStream>,
}

fn story_with_flows() -> Flows {
    netlab::require_sandbox();
    let story = Story::reference(false).unwrap_or_else(|e| panic!("the story's world: {e:#}"));
    let world = &story.world;
    let at = |ip: &str, port: u16| SocketAddr::new(ip.parse().unwrap(), port);

    // UDP: the story itself.
    let outcome = story
        .client_ask(
            at(story::HOST_LAN, story::PORT),
            b"hello",
            Duration::from_secs(1),
        )
        .expect("the story's client");
    assert!(
        matches!(outcome, story::Outcome::NoReply { .. }),
        "the story should lose the answer; got {outcome:?}"
    );

    // TCP: a listener in `server` on the published port, and two connections to it.
    let listener = world
        .node("server")
        .unwrap()
        .run(|| TcpListener::bind(("0.0.0.0", story::PORT)))
        .expect("a TCP listener on 0.0.0.0:4000 in server");
    let mut streams = Vec::new();
    for (node, to) in [
        ("peer", at(story::HOST_LAN, story::PORT)),
        ("client", at(story::DIND1, story::PORT)),
    ] {
        let stream = world
            .node(node)
            .unwrap()
            .run(|| TcpStream::connect_timeout(&to, Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("TCP from {node} to {to}: {e}"));
        let (accepted, _) = listener.accept().expect("the server accepts");
        streams.extend([stream, accepted]);
    }
    // One connection is closed at once: its entries go to TIME_WAIT.
    let _ = streams[2].shutdown(Shutdown::Both);
    let _ = streams[3].shutdown(Shutdown::Both);

    // ICMP: one echo request from the client, and its reply.
    world
        .node("client")
        .unwrap()
        .run(|| ping(ip(story::HOST_LAN)))
        .expect("ping from client to 192.168.0.239");
    // Let the closing handshake finish.
    std::thread::sleep(Duration::from_millis(200));
    Flows {
        story,
        _tcp: streams,
    }
}

/// Send one ICMP echo request from a raw socket, and wait for the echo reply.
fn ping(to: IpAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol as P, SockAddr, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::RAW, Some(P::ICMPV4))?;
    socket.set_read_timeout(Some(Duration::from_secs(2)))?;
    let id: u16 = 0x0c06;
    let mut packet = vec![8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
    packet.extend_from_slice(b"conntrack");
    let checksum = internet_checksum(&packet);
    packet[2..4].copy_from_slice(&checksum.to_be_bytes());
    socket.send_to(&packet, &SockAddr::from(SocketAddr::new(to, 0)))?;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let mut buffer = [0u8; 1500];
        let n = std::io::Read::read(&mut &socket, &mut buffer)?;
        let bytes = &buffer[..n];
        let header = usize::from(bytes[0] & 0x0f) * 4; // a raw socket receives the IP header
        if bytes.get(header) == Some(&0)
            && bytes.get(header + 4..header + 6) == Some(&id.to_be_bytes())
        {
            return Ok(());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no echo reply",
    ))
}

fn internet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The node's table read twice at (nearly) the same moment: through your parser from
/// `/proc/net/nf_conntrack`, and by `conntrack -L -o extended`. A flow can begin or end
/// between the two reads (a multicast report, an expiring entry), so they are taken
/// again until they agree, a few times at most.
fn both_reads(flows: &Flows, node: &str) -> (Vec<Entry>, Vec<Seen>, Vec<Seen>) {
    let netns = flows.story.world.node(node).unwrap();
    let mut last = None;
    for _ in 0..5 {
        // /proc/net/nf_conntrack — or, on a kernel built without it, the same table read
        // over netlink by the course's reader, which prints it in the /proc format.
        let (proc, _source) = ct::read_any(netns)
            .unwrap_or_else(|e| panic!("reading /proc/net/nf_conntrack in {node}: {e:#}"));
        let started = Instant::now();
        let tool = ct::read(netns, Source::ConntrackTool)
            .unwrap_or_else(|e| panic!("`conntrack -L -o extended` in {node}: {e:#}"));
        let elapsed = started.elapsed();
        let entries = parse_table(&proc).unwrap_or_else(|e| {
            panic!("{node}'s live table should parse; {e}\nthe table:\n{proc}")
        });
        let yours = normalised(&entries);
        let theirs = conntrack_l(&tool);
        if same_moment(&yours, &theirs, elapsed) {
            return (entries, yours, theirs);
        }
        last = Some((proc, tool, yours, theirs));
        std::thread::sleep(Duration::from_millis(300));
    }
    let (proc, tool, yours, theirs) = last.unwrap();
    panic!(
        "in {node}, your parse of /proc/net/nf_conntrack never agreed with `conntrack -L -o extended`.\n\
         yours:  {yours:#?}\nconntrack -L: {theirs:#?}\n/proc/net/nf_conntrack:\n{proc}\nconntrack -L -o extended:\n{tool}"
    )
}

/// Equal entry for entry, except that a timeout may have ticked down between the reads.
fn same_moment(yours: &[Seen], theirs: &[Seen], elapsed: Duration) -> bool {
    let slack = elapsed.as_secs() + 1;
    yours.len() == theirs.len()
        && yours.iter().zip(theirs).all(|(a, b)| {
            a.without_timeout() == b.without_timeout() && a.timeout.abs_diff(b.timeout) <= slack
        })
}

#[rstest]
#[case::dind2_udp_and_icmp_masqueraded_tcp_masqueraded("dind2")]
#[case::host_udp_of_the_proxy_without_nat_tcp_dnated("host")]
#[case::dind1_udp_and_tcp_dnated("dind1")]
#[timeout(netlab::time_limit(60))]
fn a_live_table_parses_to_what_conntrack_l_reports(#[case] node: &str) {
    let flows = story_with_flows();
    let (entries, _, _) = both_reads(&flows, node);
    // Each node saw flows of all three protocols (the kernel made them; the comparison
    // above proved your parse of them right). Say which one is missing, if one is.
    let has = |protocol: Protocol| entries.iter().any(|e| e.protocol == protocol);
    assert!(
        has(Protocol::Udp),
        "{node} should track the story's UDP flows"
    );
    assert!(
        has(Protocol::Tcp),
        "{node} should track the TCP connections"
    );
    if node != "dind1" {
        assert!(has(Protocol::Icmp), "{node} should track the ping");
    }
    let nat = |e: &Entry| e.reply.src != e.original.dst || e.reply.dst != e.original.src;
    assert!(
        entries.iter().any(nat),
        "{node} NATs some flow: its reply tuple is not the original one reversed"
    );
    if node == "host" {
        assert!(
            entries
                .iter()
                .any(|e| e.protocol == Protocol::Udp && !nat(e)),
            "the proxy's own UDP flows in host are not NATed"
        );
    }
}

/// The connection from `peer` is open (ESTABLISHED in host); the one from `client` was
/// closed (dind2 tracks it into TIME_WAIT). Your states are those `conntrack -L` reports.
#[rstest]
#[timeout(netlab::time_limit(60))]
fn tcp_entries_have_the_state_conntrack_l_reports() {
    let flows = story_with_flows();
    for (node, open) in [("host", true), ("dind2", false)] {
        let (entries, _, theirs) = both_reads(&flows, node);
        let tcp: Vec<&Entry> = entries
            .iter()
            .filter(|e| e.protocol == Protocol::Tcp && e.original.l4 != L4::None)
            .filter(|e| matches!(e.original.l4, L4::Ports { dport, .. } if dport == story::PORT))
            .collect();
        assert!(
            !tcp.is_empty(),
            "{node} should track a TCP connection to port 4000"
        );
        for entry in tcp {
            let state = entry
                .state
                .as_ref()
                .unwrap_or_else(|| panic!("a TCP entry has a state: {entry:?}"));
            let reported = theirs
                .iter()
                .find(|s| s.protocol == "tcp" && s.original == tuple_text(&entry.original))
                .expect("conntrack -L reports the same connection");
            assert_eq!(
                state_name(state),
                reported.state,
                "{node}: {}",
                entry.original
            );
            assert!(
                entry.assured,
                "a connection that got its SYN-ACK is [ASSURED]"
            );
            let from_peer = entry.original.src == ip("192.168.0.10");
            if open && from_peer {
                assert_eq!(state, &State::Established, "peer's connection is open");
            }
            if !open {
                assert_ne!(state, &State::Established, "client's connection was closed");
            }
        }
    }
}

#[rstest]
#[timeout(netlab::time_limit(60))]
fn in_dind2_the_answer_that_arrived_is_claimed_only_by_its_own_flow() {
    let flows = story_with_flows();
    let (entries, _, _) = both_reads(&flows, "dind2");
    let client = ports(
        "172.17.0.2",
        story::CLIENT_PORT,
        story::HOST_LAN,
        story::PORT,
    );
    let request = entries
        .iter()
        .find(|e| e.protocol == Protocol::Udp && e.original == client)
        .unwrap_or_else(|| panic!("dind2 tracks the client's datagram {client}: {entries:#?}"));
    assert_eq!(
        (request.reply.src, request.reply.l4),
        (
            ip(story::HOST_LAN),
            L4::Ports {
                sport: story::PORT,
                dport: story::CLIENT_PORT
            }
        ),
        "the client's flow expects its answer from 192.168.0.239:4000"
    );
    assert!(request.unreplied, "and it never came: [UNREPLIED]");

    let answer = ports(
        story::HOST_BRIDGE_ADDRESS,
        story::PORT,
        story::DIND2,
        story::CLIENT_PORT,
    );
    let claim = claimant(&entries, &Protocol::Udp, &answer).unwrap_or_else(|| {
        panic!("the answer that arrived ({answer}) made an entry of its own in dind2: {entries:#?}")
    });
    assert_eq!(
        claim.direction,
        Direction::Original,
        "the answer is no flow's reply: it is the first packet of a flow of its own"
    );
    assert_eq!(claim.entry.original, answer);
    assert_ne!(claim.entry, request);
    assert!(
        !entries.iter().any(|e| e.reply == answer),
        "no entry expects the answer as a reply"
    );
    // And the answer the client's flow waits for would have been claimed by it.
    let expected = request.reply;
    let claim = claimant(&entries, &Protocol::Udp, &expected).expect("the expected answer");
    assert_eq!((claim.entry, claim.direction), (request, Direction::Reply));
}

// ── An independent reading of `conntrack -L -o extended` ───────────────────────────
// Not the learner's parser: a deliberately different one (it collects `key=value`
// pairs, and counts `src=` to tell the directions apart), used only as the yardstick.

/// One entry, as plain text fields, comparable across both parsers.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    protocol: String,
    state: String,
    original: String,
    reply: String,
    unreplied: bool,
    assured: bool,
    mark: u32,
    zone: u16,
    timeout: u64,
}

impl Seen {
    fn without_timeout(&self) -> Seen {
        Seen {
            timeout: 0,
            ..self.clone()
        }
    }
}

/// Parse `conntrack -L -o extended`'s output (sorted, so tables compare as sets).
fn conntrack_l(text: &str) -> Vec<Seen> {
    let mut seen: Vec<Seen> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert!(words.len() > 5, "conntrack printed a short line: {line}");
            let mut fields: [BTreeMap<&str, &str>; 2] = Default::default();
            let mut direction = None::<usize>;
            let mut rest = BTreeMap::new();
            let mut state = String::new();
            for word in &words[5..] {
                match word.split_once('=') {
                    Some(("src", _)) => {
                        direction = Some(direction.map_or(0, |d| d + 1));
                        fields[direction.unwrap()].insert("src", &word[4..]);
                    }
                    Some((key, value))
                        if matches!(key, "dst" | "sport" | "dport" | "type" | "code" | "id") =>
                    {
                        fields[direction.expect("a field before src=")].insert(key, value);
                    }
                    Some((key, value)) => {
                        rest.insert(key, value);
                    }
                    None if !word.starts_with('[') => state = word.to_string(),
                    None => {}
                }
            }
            let text_of = |f: &BTreeMap<&str, &str>| {
                let address = |k: &str| ip(f[k]).to_string();
                let mut text = format!("{}>{}", address("src"), address("dst"));
                for key in ["sport", "dport", "type", "code", "id"] {
                    if let Some(value) = f.get(key) {
                        text.push_str(&format!(" {key}={value}"));
                    }
                }
                text
            };
            Seen {
                protocol: words[2].to_string(),
                state,
                original: text_of(&fields[0]),
                reply: text_of(&fields[1]),
                unreplied: words.contains(&"[UNREPLIED]"),
                assured: words.contains(&"[ASSURED]"),
                mark: rest.get("mark").map_or(0, |m| m.parse().unwrap()),
                // conntrack prints `zone=` only when it is not the default zone 0.
                zone: rest.get("zone").map_or(0, |z| z.parse().unwrap()),
                timeout: words[4].parse().unwrap(),
            }
        })
        .collect();
    seen.sort();
    seen
}

/// The learner's entries in the same terms (sorted).
fn normalised(entries: &[Entry]) -> Vec<Seen> {
    let mut seen: Vec<Seen> = entries
        .iter()
        .map(|e| Seen {
            protocol: e.protocol.to_string(),
            state: e.state.as_ref().map(state_name).unwrap_or_default(),
            original: tuple_text(&e.original),
            reply: tuple_text(&e.reply),
            unreplied: e.unreplied,
            assured: e.assured,
            mark: e.mark,
            zone: e.zone,
            timeout: e.timeout.into(),
        })
        .collect();
    seen.sort();
    seen
}

fn tuple_text(t: &Tuple) -> String {
    let mut text = format!("{}>{}", t.src, t.dst);
    match t.l4 {
        L4::Ports { sport, dport } => text.push_str(&format!(" sport={sport} dport={dport}")),
        L4::Icmp { kind, code, id } => text.push_str(&format!(" type={kind} code={code} id={id}")),
        L4::None => {}
    }
    text
}

fn state_name(state: &State) -> String {
    match state {
        State::SynSent => "SYN_SENT",
        State::SynRecv => "SYN_RECV",
        State::Established => "ESTABLISHED",
        State::FinWait => "FIN_WAIT",
        State::CloseWait => "CLOSE_WAIT",
        State::LastAck => "LAST_ACK",
        State::TimeWait => "TIME_WAIT",
        State::Close => "CLOSE",
        State::SynSent2 => "SYN_SENT2",
        State::Other(name) => name,
    }
    .to_string()
}
