//! Reading a captured Ethernet frame — just enough of it to decide whether to keep it.
//!
//! Given, not an exercise: a capture filter needs to know a frame's addresses, and this
//! is the smallest decoder that finds them. Every field is read from the bytes the
//! kernel handed over, in network byte order (big-endian), with bounds checked: a
//! frame too short for what it claims to be is simply "not that kind of frame".
//!
//! ```text
//! Ethernet II   | dst MAC (6) | src MAC (6) | EtherType (2) | payload …
//! IPv4          | ver+IHL | TOS | total length (2) | id (2) | flags+fragment offset (2)
//!               | TTL | protocol | checksum (2) | source (4) | destination (4) | options …
//! UDP           | source port (2) | destination port (2) | length (2) | checksum (2) | data …
//! ```
//!
//! Not handled (none of it appears on the story's bridge): VLAN tags, IPv6, IP options
//! beyond skipping them, reassembly of fragments (only a first fragment has ports).

use std::net::{Ipv4Addr, SocketAddrV4};

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// IP protocol numbers.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

const ETHERNET_HEADER_LEN: usize = 14;

/// The EtherType of an Ethernet II frame: what its payload is.
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?))
}

/// An IPv4 packet inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4<'a> {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// What the payload is: [`IPPROTO_UDP`], [`IPPROTO_TCP`], [`IPPROTO_ICMP`], …
    pub protocol: u8,
    /// Is this the first (or only) fragment — the one that carries the ports?
    pub first_fragment: bool,
    /// Everything after the IP header, up to the packet's total length (a short frame
    /// is padded to 60 bytes on the wire: the padding is not part of the packet).
    pub payload: &'a [u8],
}

/// The IPv4 packet of an Ethernet frame, if it holds one.
pub fn ipv4(frame: &[u8]) -> Option<Ipv4<'_>> {
    if ethertype(frame)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETHERNET_HEADER_LEN..)?;
    let (version, header_len) = (ip.first()? >> 4, usize::from(ip[0] & 0x0f) * 4);
    if version != 4 || header_len < 20 || ip.len() < header_len {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let fragment_offset = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff;
    let address = |at: usize| Ipv4Addr::new(ip[at], ip[at + 1], ip[at + 2], ip[at + 3]);
    Some(Ipv4 {
        src: address(12),
        dst: address(16),
        protocol: ip[9],
        first_fragment: fragment_offset == 0,
        // (A total length shorter than the header is malformed: `get` gives None.)
        payload: ip.get(header_len..total_len.min(ip.len()))?,
    })
}

impl Ipv4<'_> {
    /// Source and destination ports, for UDP and TCP (both start with them).
    pub fn ports(&self) -> Option<(u16, u16)> {
        if !matches!(self.protocol, IPPROTO_UDP | IPPROTO_TCP) || !self.first_fragment {
            return None;
        }
        let ports = self.payload.get(0..4)?;
        Some((
            u16::from_be_bytes([ports[0], ports[1]]),
            u16::from_be_bytes([ports[2], ports[3]]),
        ))
    }
}

/// A UDP datagram inside a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Udp<'a> {
    pub src: SocketAddrV4,
    pub dst: SocketAddrV4,
    /// The data the sender passed to `send_to`.
    pub payload: &'a [u8],
}

/// The UDP datagram of an Ethernet frame, if it holds one (IPv4, first fragment).
pub fn udp(frame: &[u8]) -> Option<Udp<'_>> {
    let ip = ipv4(frame)?;
    if ip.protocol != IPPROTO_UDP {
        return None;
    }
    let (src_port, dst_port) = ip.ports()?;
    let length = ip.payload.get(4..6)?;
    let length = usize::from(u16::from_be_bytes([length[0], length[1]]));
    Some(Udp {
        src: SocketAddrV4::new(ip.src, src_port),
        dst: SocketAddrV4::new(ip.dst, dst_port),
        payload: ip.payload.get(8..length.min(ip.payload.len()))?,
    })
}

/// Frames made by hand, for examples and tests.
#[doc(hidden)]
pub mod tests_support {
    /// An Ethernet frame holding one IPv4/UDP datagram (checksums left at zero, which
    /// UDP over IPv4 allows; nobody verifies the IP checksum here).
    pub fn udp_frame(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, data: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let total = (20 + 8 + data.len()) as u16;
        frame.extend_from_slice(&[0x45, 0]);
        frame.extend_from_slice(&total.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0x40, 0, 64, super::IPPROTO_UDP, 0, 0]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&dst);
        frame.extend_from_slice(&sport.to_be_bytes());
        frame.extend_from_slice(&dport.to_be_bytes());
        frame.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        frame.extend_from_slice(data);
        // A short frame is padded to 60 bytes (without the FCS) on the wire.
        frame.resize(frame.len().max(60), 0);
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::udp_frame;
    use super::*;

    #[test]
    fn a_padded_udp_frame_yields_its_tuple_and_exactly_its_payload() {
        let frame = udp_frame([172, 18, 0, 3], 34320, [192, 168, 0, 239], 4000, b"hello");
        assert_eq!(frame.len(), 60, "padded");
        let udp = udp(&frame).unwrap();
        assert_eq!(udp.src, "172.18.0.3:34320".parse().unwrap());
        assert_eq!(udp.dst, "192.168.0.239:4000".parse().unwrap());
        assert_eq!(udp.payload, b"hello", "the Ethernet padding is not payload");
    }

    #[test]
    fn truncated_or_foreign_frames_are_not_udp() {
        let frame = udp_frame([10, 0, 0, 1], 1, [10, 0, 0, 2], 2, b"x");
        for len in 0..42 {
            assert_eq!(udp(&frame[..len]), None, "{len} bytes");
        }
        let mut arp = frame.clone();
        arp[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
        assert_eq!(ipv4(&arp), None);
        let mut tcp = frame;
        tcp[14 + 9] = IPPROTO_TCP;
        assert_eq!(udp(&tcp), None);
        assert_eq!(ipv4(&tcp).unwrap().ports(), Some((1, 2)));
    }
}
