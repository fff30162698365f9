//! The kernel's own counters and socket tables, as a node sees them in `/proc/net`.
//!
//! Checks and `repro` read these instead of trusting what a program says it did:
//! `/proc/net/snmp` counts every datagram delivered to a UDP socket, every TCP reset
//! sent, every ICMP "port unreachable"; `/proc/net/tcp` and `/proc/net/udp` list every
//! socket of the namespace with its two addresses and its state.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use anyhow::{bail, Context, Result};

/// The counters of `/proc/net/snmp`, keyed `"Proto.Name"` (`"Udp.InDatagrams"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snmp(pub BTreeMap<String, i64>);

impl Snmp {
    /// Parse `/proc/net/snmp`: pairs of lines, names then values, both starting with the
    /// protocol (`Udp: InDatagrams NoPorts …` / `Udp: 12 0 …`).
    pub fn parse(text: &str) -> Result<Snmp> {
        let mut counters = BTreeMap::new();
        let mut lines = text.lines();
        while let Some(names) = lines.next() {
            let values = lines
                .next()
                .with_context(|| format!("/proc/net/snmp: no values after {names:?}"))?;
            let (protocol, names) = names.split_once(':').context("no `Proto:`")?;
            let (_, values) = values.split_once(':').context("no `Proto:`")?;
            for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
                let value: i64 = value
                    .parse()
                    .with_context(|| format!("/proc/net/snmp: {protocol}.{name} = {value:?}"))?;
                counters.insert(format!("{protocol}.{name}"), value);
            }
        }
        Ok(Snmp(counters))
    }

    /// One counter; 0 for a name this kernel does not have.
    pub fn get(&self, name: &str) -> i64 {
        self.0.get(name).copied().unwrap_or(0)
    }

    /// How much `name` grew from `before` to `self`.
    pub fn delta(&self, before: &Snmp, name: &str) -> i64 {
        self.get(name) - before.get(name)
    }
}

/// The counters of a node of `world`, now.
pub fn snmp(world: &netlab::World, node: &str) -> Result<Snmp> {
    let text = world
        .node(node)?
        .read_proc_net("snmp")
        .with_context(|| format!("reading /proc/net/snmp in {node}"))?;
    Snmp::parse(&text)
}

/// One line of `/proc/net/tcp` or `/proc/net/udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketEntry {
    pub local: SocketAddrV4,
    pub remote: SocketAddrV4,
    /// The kernel's state number: for TCP 1 = ESTABLISHED, 10 = LISTEN; UDP sockets
    /// show 7 (unconnected) or 1 (connected).
    pub state: u8,
}

/// The name of a TCP state number of `/proc/net/tcp`'s `st` column (the kernel's
/// `TCP_ESTABLISHED` = 1 … `TCP_CLOSING` = 11, in the order of `include/net/tcp_states.h`).
pub fn tcp_state_name(state: u8) -> &'static str {
    const NAMES: [&str; 12] = [
        "?",
        "ESTABLISHED",
        "SYN_SENT",
        "SYN_RECV",
        "FIN_WAIT1",
        "FIN_WAIT2",
        "TIME_WAIT",
        "CLOSE",
        "CLOSE_WAIT",
        "LAST_ACK",
        "LISTEN",
        "CLOSING",
    ];
    NAMES.get(usize::from(state)).copied().unwrap_or("?")
}

/// Parse `/proc/net/tcp` or `/proc/net/udp` (IPv4). Addresses are printed as the
/// 32-bit word in memory, in hex (so `EF00A8C0` on a little-endian machine is
/// 192.168.0.239); ports in hex in the usual order.
pub fn parse_socket_table(text: &str) -> Result<Vec<SocketEntry>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.len() < 4 {
            bail!("line {}: too short: {line:?}", number + 1);
        }
        let address = |word: &str| -> Result<SocketAddrV4> {
            let (ip, port) = word.split_once(':').context("no `:`")?;
            let ip = u32::from_str_radix(ip, 16)?;
            Ok(SocketAddrV4::new(
                Ipv4Addr::from(ip.to_ne_bytes()),
                u16::from_str_radix(port, 16)?,
            ))
        };
        entries.push(SocketEntry {
            local: address(words[1]).with_context(|| format!("line {}", number + 1))?,
            remote: address(words[2]).with_context(|| format!("line {}", number + 1))?,
            state: u8::from_str_radix(words[3], 16)
                .with_context(|| format!("line {}", number + 1))?,
        });
    }
    Ok(entries)
}

/// The TCP or UDP sockets of a node of `world` (`protocol`: `"tcp"` or `"udp"`).
pub fn sockets(world: &netlab::World, node: &str, protocol: &str) -> Result<Vec<SocketEntry>> {
    let text = world
        .node(node)?
        .read_proc_net(protocol)
        .with_context(|| format!("reading /proc/net/{protocol} in {node}"))?;
    parse_socket_table(&text)
}

/// The TCP sockets of the namespace of the *calling thread* (for code already running
/// inside a node, like a service's callback).
pub fn tcp_sockets_here() -> Result<Vec<SocketEntry>> {
    parse_socket_table(&std::fs::read_to_string("/proc/thread-self/net/tcp")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snmp_pairs_names_with_values() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\nUdp: InDatagrams NoPorts\nUdp: 12 3\n";
        let snmp = Snmp::parse(text).unwrap();
        assert_eq!(snmp.get("Udp.InDatagrams"), 12);
        assert_eq!(snmp.get("Udp.NoPorts"), 3);
        assert_eq!(snmp.get("Ip.Forwarding"), 1);
        assert_eq!(snmp.get("Udp.Nonexistent"), 0);
    }

    #[test]
    fn socket_table_addresses_are_words_in_memory_order() {
        let ip = u32::from_ne_bytes([192, 168, 0, 239]);
        let peer = u32::from_ne_bytes([172, 18, 0, 3]);
        let text = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: {ip:08X}:0FA0 {peer:08X}:8610 01 00000000:00000000 00:00000000 00000000     0        0 1 1 0 10 0 0 10 -1\n"
        );
        let entries = parse_socket_table(&text).unwrap();
        assert_eq!(tcp_state_name(entries[0].state), "ESTABLISHED");
        assert_eq!(
            entries,
            [SocketEntry {
                local: "192.168.0.239:4000".parse().unwrap(),
                remote: "172.18.0.3:34320".parse().unwrap(),
                state: 1,
            }]
        );
    }
}
