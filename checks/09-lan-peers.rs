//! Checks for exercise 9 — Homework 1: why do machines on the host's LAN get their
//! answers?
//!
//! Each check builds the story's world exactly as the article had it — the course's
//! answers to exercises 2 and 3: Docker 20.10's NAT rules and the buggy userland proxy
//! in `host` — and runs **your** experiment in it: the story's client, from `peer`
//! (192.168.0.10). Then it reads the facts from the kernel itself, not from what your
//! experiment returned: who the server saw, what peer's conntrack recorded coming back,
//! the host's conntrack entry for the flow, and the host's count of datagrams delivered
//! to UDP sockets — the userland proxy's sockets are the only UDP sockets in `host`.

use std::net::SocketAddr;
use std::time::Duration;

use rstest::{fixture, rstest};
use story::proc_net::{self, Snmp};
use story::{Outcome, Story};

use crate::under_test::{find_flow, lan_peer_experiment, Heard, Observation};

netlab::sandbox!();

const PAYLOAD: &[u8] = b"hello from the LAN";
/// The peer's flow, original direction, as conntrack writes it.
const PEER_FLOW: &str = "src=192.168.0.10 dst=192.168.0.239 sport=34320 dport=4000";
/// What the host's entry expects back after its DNAT: the answer comes from dind1.
const HOST_REPLY_TUPLE: &str = "src=172.18.0.2 dst=192.168.0.10 sport=4000 dport=34320";
/// What peer's entry expects back: the answer from the address it wrote to.
const PEER_REPLY_TUPLE: &str = "src=192.168.0.239 dst=192.168.0.10 sport=4000 dport=34320";

/// A rule whose only effect is that `peer` tracks its flows, so that its conntrack
/// table can testify to what came back (a namespace without such a rule tracks
/// nothing). It accepts everything, as before.
const PEER_TRACKS_ITS_FLOWS: &str =
    "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
-A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\nCOMMIT\n";

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::new(ip.parse().unwrap(), port)
}

/// Your experiment, run once in the story's world, with the kernel's counters of
/// `host` read before and after it.
struct Experiment {
    story: Story,
    observation: Observation,
    host_before: Snmp,
    host_after: Snmp,
}

#[fixture]
fn experiment() -> Experiment {
    netlab::require_sandbox();
    let story = Story::reference(false)
        .unwrap_or_else(|e| panic!("the story's world (reference NAT rules and proxy): {e:#}"));
    story
        .world
        .iptables_restore("peer", PEER_TRACKS_ITS_FLOWS)
        .unwrap_or_else(|e| panic!("turning conntrack on in peer: {e:#}"));
    let host_before = proc_net::snmp(&story.world, "host").unwrap();
    let observation = lan_peer_experiment(&story.world, PAYLOAD, Duration::from_secs(2))
        .unwrap_or_else(|e| panic!("lan_peer_experiment returned an error: {e:#}"));
    let host_after = proc_net::snmp(&story.world, "host").unwrap();
    Experiment {
        story,
        observation,
        host_before,
        host_after,
    }
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn a_lan_peer_hears_the_answer_from_192_168_0_239_4000(experiment: Experiment) {
    let Experiment {
        story, observation, ..
    } = experiment;
    // What your client heard…
    assert_eq!(
        observation.heard,
        Heard::Answer {
            from: at(story::HOST_LAN, story::PORT),
            payload: PAYLOAD.to_vec()
        },
        "the peer should hear its echo from 192.168.0.239:4000, the address it wrote to"
    );
    // …and what the kernel saw. The server got the datagram from the peer's own address:
    // only the destination was rewritten (DNAT), nobody relayed it.
    let (source, payload) = story
        .server_log(Duration::from_secs(2))
        .expect("the server never received the peer's datagram");
    assert_eq!(payload, PAYLOAD);
    assert_eq!(
        source,
        at("192.168.0.10", 34_320),
        "the server should see the peer itself (192.168.0.10:34320): the host DNATs the datagram, which \
         keeps its source; a relay by the userland proxy would show 172.18.0.1"
    );
    // peer's conntrack: its flow was answered, by a datagram from 192.168.0.239:4000.
    let table = story.world.conntrack("peer").unwrap();
    let flow = table
        .lines()
        .find(|l| l.contains(PEER_FLOW))
        .unwrap_or_else(|| panic!("peer should track its flow {PEER_FLOW}; its table:\n{table}"));
    assert!(
        flow.contains(PEER_REPLY_TUPLE) && !flow.contains("[UNREPLIED]"),
        "in peer, the flow should have seen its answer from 192.168.0.239:4000 (no [UNREPLIED]):\n{flow}"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_host_s_conntrack_holds_the_dnat_entry_to_dind1(experiment: Experiment) {
    let Experiment {
        story, observation, ..
    } = experiment;
    let table = story.world.conntrack("host").unwrap();
    let entry = table
        .lines()
        .find(|l| l.contains(PEER_FLOW))
        .unwrap_or_else(|| {
            panic!("the host should track the peer's flow {PEER_FLOW}; its table:\n{table}")
        });
    assert!(
        entry.contains(HOST_REPLY_TUPLE),
        "the host's entry should expect the answer from 172.18.0.2:4000 — the DNAT of Docker's rule \
         `! -i br-dind -p udp --dport 4000 -j DNAT --to-destination 172.18.0.2:4000`:\n{entry}"
    );
    assert!(
        !entry.contains("[UNREPLIED]"),
        "the host's entry should have seen dind1's answer (and turned it back into 192.168.0.239:4000):\n{entry}"
    );
    // Your experiment found the same entry in the table it read.
    let yours = observation.host_flow.unwrap_or_else(|| {
        panic!("your experiment found no entry for the peer's flow in the host's table; it is:\n{entry}")
    });
    assert!(
        yours.contains(PEER_FLOW) && yours.contains(HOST_REPLY_TUPLE),
        "your experiment returned another entry than the peer's flow:\n  yours:  {yours}\n  kernel: {entry}"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_userland_proxy_received_no_datagram(experiment: Experiment) {
    let Experiment {
        story,
        observation,
        host_before,
        host_after,
    } = experiment;
    assert!(
        matches!(observation.heard, Heard::Answer { .. }),
        "the peer should get an answer first (it got {:?})",
        observation.heard
    );
    // The proxy was there, listening on 0.0.0.0:4000 — and it is the only UDP socket in host.
    let sockets = proc_net::sockets(&story.world, "host", "udp").unwrap();
    let listening = at("0.0.0.0", story::PORT);
    assert!(
        sockets.iter().any(|s| SocketAddr::V4(s.local) == listening),
        "the userland proxy should be listening on 0.0.0.0:4000 in host; host's UDP sockets: {sockets:?}"
    );
    assert!(
        sockets.iter().all(|s| SocketAddr::V4(s.local) == listening),
        "the proxy's listener should be host's only UDP socket (the proxy opens an upstream socket only for a \
         client it has heard from); host's UDP sockets: {sockets:?}"
    );
    let received = host_after.delta(&host_before, "Udp.InDatagrams");
    assert_eq!(
        received, 0,
        "no UDP socket in host — the proxy's are the only ones — should have received a datagram while the \
         peer talked to 192.168.0.239:4000 (the kernel's Udp InDatagrams in host grew by {received})"
    );
    // Control: the counter does count the proxy's datagrams. The story's client, in
    // dind2, talks to the same address — through the proxy.
    let before = proc_net::snmp(&story.world, "host").unwrap();
    let outcome = story
        .client_ask(
            at(story::HOST_LAN, story::PORT),
            b"ping",
            Duration::from_millis(500),
        )
        .unwrap();
    assert!(
        matches!(outcome, Outcome::NoReply { .. }),
        "control: the story's client should still lose its answer ({outcome:?})"
    );
    let after = proc_net::snmp(&story.world, "host").unwrap();
    assert!(
        after.delta(&before, "Udp.InDatagrams") >= 2,
        "control: the proxy should have received the client's datagram and dind1's answer (Udp InDatagrams in \
         host grew by {})",
        after.delta(&before, "Udp.InDatagrams")
    );
}

/// A host's table, recorded from the story: the peer's flow, and an entry whose *reply*
/// tuple reads like the peer's flow turned around.
const RECORDED_HOST_TABLE: &str = "\
ipv4     2 udp      17 29 src=192.168.0.239 dst=192.168.0.10 sport=4000 dport=34320 [UNREPLIED] src=192.168.0.10 dst=192.168.0.239 sport=34320 dport=4000 mark=0 zone=0 use=2
ipv4     2 udp      17 28 src=172.18.0.3 dst=192.168.0.239 sport=34320 dport=4000 [UNREPLIED] src=192.168.0.239 dst=172.18.0.3 sport=4000 dport=34320 mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=192.168.0.10 dst=192.168.0.239 sport=34320 dport=4000 src=172.18.0.2 dst=192.168.0.10 sport=4000 dport=34320 mark=0 zone=0 use=2
";

#[rstest]
#[case::the_peer_s_flow("192.168.0.10:34320", "192.168.0.239:4000", Some(2))]
#[case::the_story_s_client("172.18.0.3:34320", "192.168.0.239:4000", Some(1))]
#[case::the_answer_s_own_flow("192.168.0.239:4000", "192.168.0.10:34320", Some(0))]
#[case::a_reply_tuple_is_not_a_flow("172.18.0.2:4000", "192.168.0.10:34320", None)]
#[case::no_such_flow("192.168.0.11:34320", "192.168.0.239:4000", None)]
fn find_flow_matches_the_original_direction(
    #[case] from: &str,
    #[case] to: &str,
    #[case] line: Option<usize>,
) {
    let found = find_flow(
        RECORDED_HOST_TABLE,
        from.parse().unwrap(),
        to.parse().unwrap(),
    );
    let expected = line.map(|n| RECORDED_HOST_TABLE.lines().nth(n).unwrap());
    assert_eq!(
        found, expected,
        "the flow {from} → {to} in:\n{RECORDED_HOST_TABLE}"
    );
}
