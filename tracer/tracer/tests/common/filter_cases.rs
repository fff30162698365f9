//! Shared by `filter_vs_tcpdump.rs` (no root) and `root.rs` (the kernel): the expressions whose
//! decisions must equal tcpdump's, and the frames they are tried on.
#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

/// Every expression is compared packet by packet with `tcpdump -r FILE EXPR`. Where our syntax
/// is wider than tcpdump's (`ip proto udp`: tcpdump wants `ip proto \udp`), the second string is
/// what tcpdump is given.
pub const EXPRESSIONS: &[(&str, &str)] = &[
    ("ip", ""),
    ("ip6", ""),
    ("arp", ""),
    ("rarp", ""),
    ("udp", ""),
    ("tcp", ""),
    ("icmp", ""),
    ("icmp6", ""),
    ("sctp", ""),
    ("igmp", ""),
    ("not ip and not ip6", ""),
    ("host 10.0.0.1", ""),
    ("src host 10.0.0.1", ""),
    ("dst host 10.0.0.2", ""),
    ("ip host 10.0.0.1", ""),
    ("arp host 10.0.0.2", ""),
    ("host fd00::1", ""),
    ("dst host fd00::2 and udp", ""),
    ("src or dst host 10.0.0.2", ""),
    ("src and dst host ::1", ""),
    ("net 10.0.0.0/8", ""),
    ("src net 10.1.0.0/16", ""),
    ("dst net 192.168.0.0 mask 255.255.255.0", ""),
    ("net fd00::/64", ""),
    ("net 2001:db8::/32 or net 10.1.2.0/24", ""),
    ("port 53", ""),
    ("src port 53", ""),
    ("dst port 4000", ""),
    ("udp port 53", ""),
    ("tcp port 80", ""),
    ("tcp dst port 80", ""),
    ("sctp port 80", ""),
    ("portrange 1000-5000", ""),
    ("src portrange 1-1023", ""),
    ("dst portrange 30000-40000 and udp", ""),
    ("udp or tcp", ""),
    ("udp || icmp6", ""),
    ("not udp", ""),
    ("!tcp", ""),
    ("not (udp or tcp)", ""),
    ("udp or icmp and port 80", ""),
    ("udp and port 53 or tcp", ""),
    ("tcp and (port 80 or port 443)", ""),
    ("port 53 or 80", ""),
    ("host 10.0.0.1 or 10.0.0.2", ""),
    ("host 10.0.0.1 and not port 53", ""),
    ("(host 10.0.0.1 or host fd00::1) && !(udp || tcp)", ""),
    ("src host 172.18.0.1 and dst port 34320", ""),
    ("dst host 1.1.1.1 and dst port 80 and tcp", ""),
    ("host 1.1.1.1", ""),
    ("proto 17", ""),
    ("ip proto 1", ""),
    ("ip proto udp", "ip proto \\udp"),
    ("ip6 proto 58", ""),
    ("ip6 proto tcp", "ip6 proto \\tcp"),
    ("proto 44", ""),
    ("ip6 and not udp", ""),
    ("not not udp", ""),
    ("src 10.0.0.1", ""),
    ("dst net 10.0.0.0/24 and not icmp", ""),
    ("port 0", ""),
    ("udp and not (src port 53 or dst port 53) and ip6", ""),
];

pub const V4: [Ipv4Addr; 6] = [
    Ipv4Addr::new(10, 0, 0, 1),
    Ipv4Addr::new(10, 0, 0, 2),
    Ipv4Addr::new(10, 1, 2, 3),
    Ipv4Addr::new(192, 168, 0, 239),
    Ipv4Addr::new(172, 18, 0, 1),
    Ipv4Addr::new(1, 1, 1, 1),
];

pub fn v6() -> [Ipv6Addr; 4] {
    [
        "fd00::1".parse().unwrap(),
        "fd00::2".parse().unwrap(),
        "2001:db8::5".parse().unwrap(),
        Ipv6Addr::LOCALHOST,
    ]
}

const PORTS: [(u16, u16); 7] = [
    (53, 4000),
    (4000, 53),
    (34320, 80),
    (443, 34320),
    (80, 80),
    (1, 65535),
    (0, 1023),
];

fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn l4_header(proto: u8, sport: u16, dport: u16) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&sport.to_be_bytes());
    h.extend_from_slice(&dport.to_be_bytes());
    match proto {
        17 => h.extend_from_slice(&[0, 12, 0, 0, b'h', b'i', b'!', b'!']),
        6 => h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]),
        132 => h.extend_from_slice(&[0; 8]),
        _ => {}
    }
    h
}

/// An IPv4 packet; `frag` is the flags/offset field, `options` adds 4 bytes of NOPs.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, frag: u16, options: bool, l4: &[u8]) -> Vec<u8> {
    let ihl = if options { 6 } else { 5 };
    let total = ihl * 4 + l4.len();
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&(total as u16).to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    if options {
        h.extend_from_slice(&[1, 1, 1, 0]);
    }
    h.extend_from_slice(l4);
    ethernet(0x0800, &h)
}

fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(rest);
    ethernet(0x86dd, &h)
}

fn arp(ethertype: u16, op: u16, spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut h = vec![0, 1, 8, 0, 6, 4];
    h.extend_from_slice(&op.to_be_bytes());
    h.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&spa.octets());
    h.extend_from_slice(&[0; 6]);
    h.extend_from_slice(&tpa.octets());
    ethernet(ethertype, &h)
}

/// Varied traffic: UDP/TCP/SCTP between pairs of addresses and ports, ICMP/ICMPv6/IGMP, IPv4
/// first and later fragments, IPv4 options, IPv6 fragment and hop-by-hop headers, ARP, RARP,
/// and two frames that are not IP at all.
pub fn frames() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let v6 = v6();
    for (i, &src) in V4.iter().enumerate() {
        let dst = V4[(i + 1) % V4.len()];
        for (j, &(sp, dp)) in PORTS.iter().enumerate() {
            let proto = [17, 6, 132][(i + j) % 3];
            out.push(ipv4(src, dst, proto, 0, false, &l4_header(proto, sp, dp)));
            out.push(ipv4(dst, src, 17, 0, j == 0, &l4_header(17, dp, sp)));
        }
        out.push(ipv4(src, dst, 1, 0, false, &[8, 0, 0, 0, 0, 1, 0, 1]));
        out.push(ipv4(src, dst, 2, 0, false, &[0x11, 0, 0, 0, 0, 0, 0, 0]));
        // First fragment (MF, offset 0): has ports. Later fragment (offset 185*8): none, though
        // its first bytes look like ports 53 → 80.
        out.push(ipv4(src, dst, 17, 0x2000, false, &l4_header(17, 53, 80)));
        out.push(ipv4(src, dst, 17, 185, false, &l4_header(17, 53, 80)));
        out.push(ipv4(src, src, 6, 0, false, &l4_header(6, 80, 443)));
    }
    for (i, &src) in v6.iter().enumerate() {
        let dst = v6[(i + 1) % v6.len()];
        for (j, &(sp, dp)) in PORTS.iter().enumerate() {
            let proto = [17, 6, 132][(i + j) % 3];
            out.push(ipv6(src, dst, proto, &l4_header(proto, sp, dp)));
        }
        out.push(ipv6(src, dst, 58, &[128, 0, 0, 0, 0, 1, 0, 1]));
        out.push(ipv6(src, src, 17, &l4_header(17, 53, 53)));
        // Fragment header then UDP (first fragment, and a later one).
        let mut frag = vec![17, 0, 0, 1, 0, 0, 0, 7];
        frag.extend(l4_header(17, 53, 80));
        out.push(ipv6(src, dst, 44, &frag));
        let mut later = vec![17, 0, 0x05, 0xc8, 0, 0, 0, 7];
        later.extend(l4_header(17, 53, 80));
        out.push(ipv6(src, dst, 44, &later));
        // Hop-by-hop options header, then TCP port 80.
        let mut hbh = vec![6, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend(l4_header(6, 34320, 80));
        out.push(ipv6(src, dst, 0, &hbh));
    }
    for (i, &a) in V4.iter().enumerate() {
        let b = V4[(i + 1) % V4.len()];
        out.push(arp(0x0806, 1, a, b));
        out.push(arp(0x0806, 2, b, a));
    }
    out.push(arp(0x8035, 3, V4[0], V4[1]));
    // pwru's README example, and the story's lost answer.
    out.push(ipv4(V4[0], V4[5], 6, 0, false, &l4_header(6, 34320, 80)));
    out.push(ipv4(
        V4[4],
        V4[0],
        17,
        0,
        false,
        &l4_header(17, 4000, 34320),
    ));
    out.push(ethernet(0x88cc, &[0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]));
    out.push(ethernet(0x9000, &[0; 46]));
    out
}
