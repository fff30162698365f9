//! Checks for exercise 8 — the fix.
//!
//! Each check builds the story's world (the course's answers to exercises 1–3) with one
//! of YOUR fixes in place, and lets the story's client ask again:
//! - your fixed proxy: Docker 20.10's NAT rules (the bridge's traffic still goes to the
//!   proxy), with your [`run_fixed_udp_proxy`] in `host` instead of the buggy one;
//! - your hairpin NAT: your [`hairpin_nat_rules`] in host, dind1 and dind2, and no proxy
//!   at all. `bridge-nf-call-iptables` is switched off in `host`, so that your rules
//!   alone must bring the answer back (see the chapter).
//!
//! Then the checks read what the kernel did: the source address of the answer the
//! client's socket received, dind2's conntrack table, every node's `Udp NoPorts`
//! counter (the datagrams dropped for want of a socket) — and, as root, the course's
//! eBPF tracer on `kfree_skb`. One check runs Docker's own docker-proxy 20.10 and 28
//! beside your proxy, in the same world.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use rstest::rstest;
use story::{Outcome, Story};

use crate::under_test::{hairpin_nat_rules, run_fixed_udp_proxy, Publish};

netlab::sandbox!();

/// Which fix is in place.
#[derive(Debug, Clone, Copy)]
enum Fix {
    /// Docker 20.10's NAT rules, your fixed proxy in `host`.
    YourProxy,
    /// Your hairpin NAT rules, no proxy.
    YourHairpinNat,
}

/// Which userland proxy runs in `host` for the side-by-side check.
#[derive(Debug, Clone, Copy)]
enum Proxy {
    DockerProxy2010,
    DockerProxy28,
    Yours,
}

fn at(ip: &str, port: u16) -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(ip.parse().unwrap(), port))
}

/// Where the story's client writes to: the host's LAN address, port 4000.
fn published() -> SocketAddr {
    at(story::HOST_LAN, story::PORT)
}

/// Your hairpin rules, for the three docker networks of the story.
fn your_hairpin_rules() -> story::NatRules {
    story::NatRules::from_fn(|network| {
        let published: Vec<Publish> = network
            .published
            .iter()
            .map(|&(protocol, host_port, container)| Publish {
                protocol,
                host_port,
                container,
            })
            .collect();
        hairpin_nat_rules(network.bridge, network.subnet, &published)
    })
}

/// Switch off `bridge-nf-call-iptables` in `node` (where the kernel has it): frames
/// bridged from one port to another then skip iptables and conntrack, as on a machine
/// without `br_netfilter`.
fn bridged_frames_skip_iptables(story: &Story, node: &str) {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    let result = story
        .world
        .node(node)
        .unwrap()
        .run(|| match std::fs::write(path, "0") {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        });
    result.unwrap_or_else(|e| panic!("cannot switch off {path} in {node}: {e}"));
}

fn story_with(fix: Fix) -> Story {
    netlab::require_sandbox();
    match fix {
        Fix::YourProxy => {
            let mut story = Story::up(&story::reference_nat_rules(), false)
                .unwrap_or_else(|e| panic!("the story's world: {e:#}"));
            story
                .start_proxy(run_fixed_udp_proxy)
                .unwrap_or_else(|e| panic!("your fixed proxy should start: {e:#}"));
            story
        }
        Fix::YourHairpinNat => {
            let story = Story::up(&your_hairpin_rules(), false)
                .unwrap_or_else(|e| panic!("the story's world with your hairpin NAT rules: {e:#}"));
            bridged_frames_skip_iptables(&story, "host");
            story
        }
    }
}

/// `Udp NoPorts` of `node`: UDP datagrams that arrived for a port nobody listened on —
/// the kernel's count of NO_SOCKET drops (from `/proc/net/snmp`, namespace by namespace).
fn udp_no_ports(story: &Story, node: &str) -> u64 {
    let snmp = story
        .world
        .node(node)
        .unwrap()
        .read_proc_net("snmp")
        .unwrap_or_else(|e| panic!("cannot read /proc/net/snmp in {node}: {e}"));
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (udp.next(), udp.next());
    let (Some(names), Some(values)) = (names, values) else {
        panic!("no Udp lines in {node}'s /proc/net/snmp:\n{snmp}");
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(name, _)| *name == "NoPorts")
        .and_then(|(_, value)| value.parse().ok())
        .unwrap_or_else(|| panic!("no Udp NoPorts in {node}'s /proc/net/snmp:\n{snmp}"))
}

/// What every fix must achieve, read from the kernel after the client asked once.
fn assert_the_answer_came_home(story: &Story, outcome: &Outcome, what: &str) {
    assert_eq!(
        *outcome,
        Outcome::Reply {
            from: published(),
            payload: b"ping".to_vec()
        },
        "with {what}, the story's client should get its answer, from 192.168.0.239:4000 — the address it \
         wrote to (the source address of the datagram its socket received)"
    );
    let table = story.world.conntrack("dind2").unwrap();
    let flow = table
        .lines()
        .find(|l| l.contains("src=172.17.0.2 dst=192.168.0.239 sport=34320 dport=4000"))
        .unwrap_or_else(|| {
            panic!("dind2 should track the client's datagram; its conntrack table:\n{table}")
        });
    assert!(
        !flow.contains("[UNREPLIED]"),
        "dind2's conntrack should have seen the answer of the client's flow (no [UNREPLIED]):\n{flow}"
    );
    for node in story.world.nodes() {
        assert_eq!(
            udp_no_ports(story, &node.name),
            0,
            "with {what}, no datagram should be dropped for want of a socket (Udp NoPorts) in {}",
            node.name
        );
    }
}

#[rstest]
#[case::your_fixed_proxy(Fix::YourProxy)]
#[case::your_hairpin_nat_without_a_proxy(Fix::YourHairpinNat)]
#[timeout(netlab::time_limit(30))]
fn with_the_fix_the_client_hears_from_192_168_0_239_4000(#[case] fix: Fix) {
    let story = story_with(fix);
    let outcome = story
        .client_ask(published(), b"ping", Duration::from_secs(2))
        .unwrap();
    let (source, _) = story
        .server_log(Duration::from_secs(2))
        .expect("the server never received the client's datagram");
    match fix {
        Fix::YourProxy => {
            assert_eq!(
                source.ip().to_string(),
                story::HOST_BRIDGE_ADDRESS,
                "Docker 20.10's NAT rules leave the bridge's traffic to the proxy: the server should see \
                 the proxy's upstream socket (172.18.0.1)"
            );
            assert_the_answer_came_home(&story, &outcome, "your fixed proxy");
        }
        Fix::YourHairpinNat => {
            assert_the_answer_came_home(&story, &outcome, "your hairpin NAT");
            let host = story.world.conntrack("host").unwrap();
            assert!(
                host.lines().any(|l| l.contains("dst=192.168.0.239")
                    && l.contains("dport=4000")
                    && l.contains("src=172.18.0.2 ")
                    && !l.contains("[UNREPLIED]")),
                "the kernel, not a proxy, should carry the datagram: host's conntrack should hold the DNAT of \
                 192.168.0.239:4000 to 172.18.0.2:4000, replied; host's table:\n{host}"
            );
        }
    }
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn your_proxy_answers_each_client_from_the_address_it_wrote_to() {
    let story = story_with(Fix::YourProxy);
    // dind2 sits on the bridge, so its datagrams to either host address reach the proxy:
    // one client writes to the LAN address, another to the bridge's own address.
    let dind2 = story.world.node("dind2").unwrap();
    for (local_port, host_address) in [
        (5001, story::HOST_LAN),
        (5002, story::HOST_BRIDGE_ADDRESS),
        (5001, story::HOST_LAN),
    ] {
        let to = at(host_address, story::PORT);
        let answer = dind2
            .run(|| {
                let socket = std::net::UdpSocket::bind(at(story::DIND2, local_port))?;
                socket.set_read_timeout(Some(Duration::from_secs(2)))?;
                socket.send_to(b"hello", to)?;
                let mut buffer = [0u8; 64];
                socket.recv_from(&mut buffer).map(|(_, from)| from)
            })
            .unwrap_or_else(|e| {
                panic!("172.18.0.3:{local_port} wrote to {to} and got no answer: {e}")
            });
        assert_eq!(
            answer, to,
            "172.18.0.3:{local_port} wrote to {to}: the answer should come from that address"
        );
    }
}

#[rstest]
#[timeout(netlab::time_limit(60))]
fn docker_28_s_proxy_and_yours_deliver_where_docker_20_10_s_loses_the_answer() {
    netlab::require_sandbox();
    let binaries = (story::docker_proxy_path(), story::docker_proxy_28_path());
    let (Some(proxy_2010), Some(proxy_28)) = binaries else {
        netlab::skip!(
            "this check runs Docker's own docker-proxy 20.10 and 28 (.course/tools/docker-proxy, \
             .course/tools/docker-proxy-28): run `cargo xtask setup` (Debian/Ubuntu), or set DOCKER_PROXY and \
             DOCKER_PROXY_28 to their paths"
        )
    };
    let mut seen = Vec::new();
    for proxy in [Proxy::DockerProxy2010, Proxy::DockerProxy28, Proxy::Yours] {
        let mut story = Story::up(&story::reference_nat_rules(), false)
            .unwrap_or_else(|e| panic!("the story's world: {e:#}"));
        match proxy {
            Proxy::DockerProxy2010 | Proxy::DockerProxy28 => {
                let path = if matches!(proxy, Proxy::DockerProxy2010) {
                    &proxy_2010
                } else {
                    &proxy_28
                };
                story
                    .start_docker_proxy(path)
                    .unwrap_or_else(|e| panic!("starting {}: {e:#}", path.display()));
            }
            Proxy::Yours => story
                .start_proxy(run_fixed_udp_proxy)
                .unwrap_or_else(|e| panic!("your fixed proxy should start: {e:#}")),
        }
        let outcome = story
            .client_ask(published(), b"ping", Duration::from_secs(1))
            .unwrap();
        let relayed = story.server_log(Duration::from_secs(1)).is_some();
        assert!(
            relayed,
            "{proxy:?}: the server never received the client's datagram"
        );
        seen.push((proxy, outcome));
    }
    let delivered = |outcome: &Outcome| {
        *outcome
            == Outcome::Reply {
                from: published(),
                payload: b"ping".to_vec(),
            }
    };
    let [(_, old), (_, docker_28), (_, yours)] = &seen[..] else {
        unreachable!()
    };
    assert!(
        matches!(old, Outcome::NoReply { .. }),
        "Docker 20.10's docker-proxy should lose the answer, as in the story; the client got {old:?}"
    );
    assert!(
        delivered(docker_28),
        "Docker 28's docker-proxy (moby/moby#48571) should deliver the answer from 192.168.0.239:4000; the \
         client got {docker_28:?}"
    );
    assert!(
        delivered(yours),
        "your fixed proxy should deliver the answer from 192.168.0.239:4000, like Docker 28's; the client \
         got {yours:?}"
    );
}

/// The checks that need real root (eBPF). The rootless proof leaves this module to the
/// root run (`cargo xtask check 8 --sudo`, CI).
mod as_root {
    use super::*;

    use tracer::collection::{KernelInfo, Tracer};

    /// One drop the tracer saw: netns inode, reason, tuple.
    struct Dropped {
        netns: u64,
        reason: String,
        tuple: String,
    }

    fn tuple(ev: &tracer::Event) -> String {
        if ev.l3 != 4 {
            return "(not IPv4)".into();
        }
        let ip = |bytes: &[u8]| Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]);
        format!(
            "{}:{} > {}:{}",
            ip(&ev.saddr),
            ev.sport,
            ip(&ev.daddr),
            ev.dport
        )
    }

    #[rstest]
    #[case::your_fixed_proxy(Fix::YourProxy)]
    #[case::your_hairpin_nat_without_a_proxy(Fix::YourHairpinNat)]
    #[timeout(netlab::time_limit(60))]
    fn the_tracer_sees_no_answer_dropped_for_want_of_a_socket(#[case] fix: Fix) {
        netlab::require_root("the eBPF checks");
        let kernel =
            KernelInfo::load().unwrap_or_else(|e| panic!("reading the kernel's BTF: {e:#}"));
        let kfree_skb = tracer::btf::kfree_skb_tracepoint(&kernel.btf)
            .unwrap_or_else(|e| panic!("this kernel's kfree_skb tracepoint: {e:#}"));
        let filter = tracer::filter::parse("udp").unwrap();
        let mut tracer = Tracer::load(&kernel, &[kfree_skb], filter, false)
            .unwrap_or_else(|e| panic!("loading the course's drop tracer: {e:#}"));

        let story = story_with(fix);
        let outcome = story
            .client_ask(published(), b"ping", Duration::from_secs(2))
            .unwrap();
        // The control: a datagram to a port nobody listens on (9, on dind2's docker0
        // address), to show that this tracer does see NO_SOCKET drops in these namespaces.
        let control = story
            .world
            .node("client")
            .unwrap()
            .run(|| {
                let socket = std::net::UdpSocket::bind("172.17.0.2:0")?;
                socket.send_to(b"knock knock", "172.17.0.1:9")?;
                socket.local_addr()
            })
            .unwrap();
        let control = format!("{control} > 172.17.0.1:9");

        let inodes: Vec<u64> = story.world.nodes().iter().map(|n| n.inode()).collect();
        let mut drops = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline
            && !drops.iter().any(|d: &Dropped| d.tuple == control)
        {
            tracer
                .poll(Duration::from_millis(200), |ev| {
                    if inodes.contains(&u64::from(ev.netns)) {
                        drops.push(Dropped {
                            netns: ev.netns.into(),
                            reason: kernel.reasons.short_name(ev.reason),
                            tuple: tuple(ev),
                        });
                    }
                })
                .unwrap_or_else(|e| panic!("reading the tracer's events: {e:#}"));
        }
        drop(tracer);
        let name = |inode: u64| {
            story
                .world
                .node_by_inode(inode)
                .map_or("?".to_string(), |n| n.name.clone())
        };
        let seen: Vec<String> = drops
            .iter()
            .map(|d| format!("  {} in {}: {}", d.tuple, name(d.netns), d.reason))
            .collect();
        assert!(
            drops
                .iter()
                .any(|d| d.tuple == control && d.reason == "NO_SOCKET"),
            "the control datagram {control} should be seen dropped (NO_SOCKET) in dind2; the tracer saw:\n{}",
            seen.join("\n")
        );
        let lost: Vec<&String> = drops
            .iter()
            .zip(&seen)
            .filter(|(d, _)| d.reason == "NO_SOCKET" && d.tuple != control)
            .map(|(_, line)| line)
            .collect();
        assert!(
            lost.is_empty(),
            "with {fix:?}, no datagram of the story should be dropped for want of a socket; the tracer saw:\n{}",
            lost.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
        );
        assert!(
            matches!(outcome, Outcome::Reply { .. }),
            "with {fix:?}, the client should get its answer; it got {outcome:?}"
        );
    }
}
