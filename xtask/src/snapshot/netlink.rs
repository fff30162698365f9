//! Asking the kernel directly, over netlink, what the root network namespace holds.
//!
//! `ip` and `nft` are themselves netlink clients: they send a *dump request* and print
//! the kernel's answers. Doing the same here means the snapshot reads the kernel's
//! state and nothing else — it does not depend on which tools happen to be installed
//! (a snapshot taken before `setup` installs nftables must equal one taken after).
//!
//! A netlink message is a 16-byte header (`struct nlmsghdr`: length, type, flags,
//! sequence, port id), a fixed family-specific header (e.g. `struct rtmsg` for a
//! route), then *attributes*: `(length: u16, type: u16, value)`, each padded to 4
//! bytes. A dump answers with many messages, in as many datagrams as it needs, and
//! ends with one of type `NLMSG_DONE`. See `man 7 netlink` and `man 7 rtnetlink`.

use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};

// Message types and flags from <linux/netlink.h> and <linux/rtnetlink.h>.
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300; // NLM_F_ROOT | NLM_F_MATCH
pub const RTM_GETLINK: u16 = 18;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_GETROUTE: u16 = 26;
pub const RTM_GETRULE: u16 = 34;
/// nftables requests: `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GET…` (<linux/netfilter/nf_tables.h>).
const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFT_MSG_GETTABLE: u16 = NFNL_SUBSYS_NFTABLES << 8 | 1;
pub const NFT_MSG_GETCHAIN: u16 = NFNL_SUBSYS_NFTABLES << 8 | 4;
pub const NFT_MSG_GETRULE: u16 = NFNL_SUBSYS_NFTABLES << 8 | 7;

const HEADER_LEN: usize = 16;

/// Which kernel subsystem a socket talks to.
#[derive(Debug, Clone, Copy)]
pub enum Family {
    /// rtnetlink: links, addresses, routes, rules (`ip`'s side of the kernel).
    Route,
    /// nfnetlink: netfilter, here nf_tables (`nft`'s side of the kernel).
    Netfilter,
}

/// One answer of a dump: its type, and what follows the 16-byte header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub kind: u16,
    pub payload: Vec<u8>,
}

/// Send a dump request (`kind`, with `body` as its fixed header, usually all zeros but
/// for the address family) and collect every answer until `NLMSG_DONE`.
///
/// An error answer (`NLMSG_ERROR` with a non-zero code) becomes `Err(errno)`: for
/// example `EPERM` when nftables is asked without `CAP_NET_ADMIN`.
pub fn dump(family: Family, kind: u16, body: &[u8]) -> Result<Vec<Message>, Errno> {
    let protocol = match family {
        Family::Route => SockProtocol::NetlinkRoute,
        Family::Netfilter => SockProtocol::NetlinkNetFilter,
    };
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        protocol,
    )?;
    let sequence = 1;
    send(
        fd.as_raw_fd(),
        &request(kind, sequence, body),
        MsgFlags::empty(),
    )?;
    let mut answers = Vec::new();
    // A dump datagram holds at most a page or so of messages; 64 KiB is plenty.
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let len = recv(fd.as_raw_fd(), &mut buffer, MsgFlags::empty())?;
        for message in split(&buffer[..len]) {
            match message.kind {
                NLMSG_DONE => return Ok(answers),
                NLMSG_ERROR => {
                    // struct nlmsgerr: a negative errno (0 is an acknowledgement), then the request.
                    let code = message
                        .payload
                        .get(..4)
                        .map_or(0, |b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
                    if code != 0 {
                        return Err(Errno::from_raw(-code));
                    }
                }
                _ => answers.push(message),
            }
        }
    }
}

/// A request: the header (length, type, flags, sequence, port 0 = "kernel, pick mine") and body.
pub fn request(kind: u16, sequence: u32, body: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + body.len());
    bytes.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_ne_bytes());
    bytes.extend_from_slice(&kind.to_ne_bytes());
    bytes.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    bytes.extend_from_slice(&sequence.to_ne_bytes());
    bytes.extend_from_slice(&0u32.to_ne_bytes());
    bytes.extend_from_slice(body);
    bytes
}

/// The messages in one datagram (each padded to 4 bytes). Stops at anything malformed.
pub fn split(mut datagram: &[u8]) -> Vec<Message> {
    let mut messages = Vec::new();
    while datagram.len() >= HEADER_LEN {
        let len = u32::from_ne_bytes(datagram[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes(datagram[4..6].try_into().unwrap());
        if len < HEADER_LEN || len > datagram.len() {
            break;
        }
        messages.push(Message {
            kind,
            payload: datagram[HEADER_LEN..len].to_vec(),
        });
        datagram = &datagram[align(len).min(datagram.len())..];
    }
    messages
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The attributes that follow a fixed header: `(type, value)`. The two top bits of the
/// type are flags (nested, network byte order) and are masked off.
pub fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let len = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & 0x3fff;
        if len < 4 || len > bytes.len() {
            break;
        }
        found.push((kind, &bytes[4..len]));
        bytes = &bytes[align(len).min(bytes.len())..];
    }
    found
}

/// The value of attribute `kind`, if present.
pub fn attribute<'a>(attrs: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attrs.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

/// A NUL-terminated string attribute.
pub fn text(value: &[u8]) -> String {
    let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
    String::from_utf8_lossy(&value[..end]).into_owned()
}

/// A 32-bit attribute in the machine's byte order (rtnetlink's convention).
pub fn u32_ne(value: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(value.get(..4)?.try_into().ok()?))
}

/// A 32-bit attribute in network byte order (nftables' convention).
pub fn u32_be(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.get(..4)?.try_into().ok()?))
}

/// A 64-bit attribute in network byte order (nftables' handles).
pub fn u64_be(value: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(value.get(..8)?.try_into().ok()?))
}

/// An address attribute as text: 4 bytes are IPv4, 16 are IPv6, 6 are a MAC address.
pub fn address(value: &[u8]) -> String {
    match value.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(value).unwrap()).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(value).unwrap()).to_string(),
        _ => value
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Build one attribute as the kernel would: length, type, value, padding.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut bytes = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(value);
        bytes.resize(align(bytes.len()), 0);
        bytes
    }

    #[test]
    fn a_request_is_a_header_then_the_body() {
        let bytes = request(RTM_GETLINK, 7, &[0; 16]);
        assert_eq!(bytes.len(), 32);
        assert_eq!(u32_ne(&bytes[0..4]), Some(32));
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), RTM_GETLINK);
        assert_eq!(u16::from_ne_bytes([bytes[6], bytes[7]]), 0x301);
        assert_eq!(u32_ne(&bytes[8..12]), Some(7));
    }

    #[test]
    fn messages_and_attributes_are_split_with_their_padding() {
        let mut body = vec![0u8; 4];
        body.extend(attr(3, b"eth0\0")); // 9 bytes, padded to 12
        body.extend(attr(1, &[10, 0, 0, 1]));
        let mut datagram = request(RTM_GETADDR, 1, &body);
        datagram.extend(request(NLMSG_DONE, 1, &[]));
        let messages = split(&datagram);
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].kind, NLMSG_DONE);
        let attrs = attributes(&messages[0].payload[4..]);
        assert_eq!(attribute(&attrs, 3).map(text).as_deref(), Some("eth0"));
        assert_eq!(
            attribute(&attrs, 1).map(address).as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(attribute(&attrs, 2), None);
    }

    #[test]
    fn truncated_input_is_not_read_past_its_end() {
        let mut bytes = attr(1, b"abcd");
        bytes[0] = 200; // claims more than there is
        assert!(attributes(&bytes).is_empty());
        let message = request(RTM_GETLINK, 1, &[0; 16]);
        assert!(
            split(&message[..20]).is_empty(),
            "a message cut short is dropped"
        );
    }

    #[test]
    fn the_kernel_answers_a_link_dump_with_the_loopback_device() {
        // Any process may dump links; every network namespace has `lo`.
        let links = dump(Family::Route, RTM_GETLINK, &[0; 16]).unwrap();
        let names: Vec<String> = links
            .iter()
            .filter_map(|m| attribute(&attributes(m.payload.get(16..)?), 3).map(text))
            .collect();
        assert!(names.contains(&"lo".to_string()), "{names:?}");
    }
}
