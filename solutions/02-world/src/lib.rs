//! # Exercise 2 — the world
//!
//! The article's author ran Docker inside Docker. Drawn as a network, that is:
//!
//! ```text
//!  peer 192.168.0.10 ── LAN ── host 192.168.0.239
//!                               │ bridge br-dind 172.18.0.1/16 (a user-defined docker network)
//!              ┌────────────────┴────────────────┐
//!       dind1 172.18.0.2                   dind2 172.18.0.3
//!         │ bridge docker0 172.17.0.1/16     │ bridge docker0 172.17.0.1/16
//!       server 172.17.0.2                  client 172.17.0.2
//! ```
//!
//! Every box is a network namespace — exactly what a container is, network-wise. A
//! bridge is a virtual switch; a veth pair is a virtual cable whose two ends can sit in
//! two namespaces. Note the two `172.17.0.0/16` networks: each dind has its own
//! docker0, and both containers are `172.17.0.2`. That is fine, because nothing outside
//! a dind ever sees 172.17 addresses: each dind NATs them (exercise 3).

use netlab::Topology;

/// The story's six nodes: `host`, `dind1`, `dind2`, `server`, `client`, `peer`.
pub fn story_world() -> Topology {
    let mut world = Topology::new();

    // The machine. Its LAN address is the one the client talks to; its bridge is the
    // docker network that connects the two dind containers. It routes between them.
    world
        .node("host")
        .address("lan0", "192.168.0.239/24")
        .bridge("br-dind")
        .address("br-dind", "172.18.0.1/16")
        .bridge_port("veth-dind1", "br-dind")
        .bridge_port("veth-dind2", "br-dind")
        .forwarding();

    // A machine on the host's LAN (homework 1 asks why it has no problem).
    world.node("peer").address("eth0", "192.168.0.10/24");
    world.veth(("host", "lan0"), ("peer", "eth0"));

    // Two dind containers on the host's bridge. Each is itself a docker host: it has a
    // docker0 bridge for its own containers and routes their traffic out via the host.
    for (dind, address, port) in [
        ("dind1", "172.18.0.2/16", "veth-dind1"),
        ("dind2", "172.18.0.3/16", "veth-dind2"),
    ] {
        world
            .node(dind)
            .address("eth0", address)
            .default_route("172.18.0.1")
            .bridge("docker0")
            .address("docker0", "172.17.0.1/16")
            .forwarding();
        world.veth(("host", port), (dind, "eth0"));
    }

    // One container inside each dind: the server in dind1, the client in dind2. Both get
    // Docker's first address, 172.17.0.2, and send everything to their docker0.
    for (dind, container, port) in [
        ("dind1", "server", "veth-server"),
        ("dind2", "client", "veth-client"),
    ] {
        world
            .node(container)
            .address("eth0", "172.17.0.2/16")
            .default_route("172.17.0.1");
        world.veth((dind, port), (container, "eth0"));
        world.node(dind).bridge_port(port, "docker0");
    }
    world
}
