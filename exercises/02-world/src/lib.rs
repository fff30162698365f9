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

//! Write [`story_world`] with the course's namespace primitives ([`netlab::Topology`]:
//! `node`, `veth`, and on a node `address`, `bridge`, `bridge_port`, `default_route`,
//! `forwarding`), then run `cargo xtask check 2`. Node names must be exactly `host`,
//! `dind1`, `dind2`, `server`, `client` and `peer`; interface names are yours to choose
//! (15 characters at most).

use netlab::Topology;

/// The story's six nodes: `host`, `dind1`, `dind2`, `server`, `client`, `peer`.
pub fn story_world() -> Topology {
    let mut world = Topology::new();
    // TODO: host: an address on its LAN link (192.168.0.239/24), a bridge with
    // 172.18.0.1/16 that the two dinds plug into, and forwarding.
    // TODO: peer: 192.168.0.10/24, cabled to the host's LAN link.
    // TODO: dind1 (172.18.0.2/16) and dind2 (172.18.0.3/16): cabled to the host's bridge,
    // default route via the host's bridge address, their own bridge docker0 with
    // 172.17.0.1/16, and forwarding.
    // TODO: server (in dind1) and client (in dind2): 172.17.0.2/16 each, cabled to their
    // dind's docker0, default route via 172.17.0.1.
    todo!()
}
