//! Just enough netlink to speak to nf_tables, the kernel side of `nft`.
//!
//! A netlink message is a 16-byte header (`struct nlmsghdr`: length, type, flags, sequence
//! number, port id) and a body. For the netfilter subsystems the body starts with a 4-byte
//! `struct nfgenmsg` (address family, version, resource id) followed by attributes: each a
//! 4-byte header (length, type) and a value padded to 4 bytes. Attributes nest: a nested
//! attribute's value is a list of attributes. Numbers inside nf_tables attributes are in
//! network byte order (big endian); the headers are in the machine's own order.
//!
//! Changes to nf_tables (a table, a chain, a rule) go in a *batch*: a `BATCH_BEGIN` message,
//! the changes, a `BATCH_END`, sent together; the kernel applies all of them or none.
//! `nft monitor trace` does no more than what [`Socket::subscribe_trace`] does: join the
//! `NFNLGRP_NFTRACE` multicast group and read.

use std::io;
use std::os::fd::{AsFd as _, AsRawFd, OwnedFd};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recv, send, socket, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol,
    SockType,
};

// <linux/netlink.h>
pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const NLM_F_REQUEST: u16 = 0x1;
pub const NLM_F_MULTI: u16 = 0x2;
pub const NLM_F_ACK: u16 = 0x4;
pub const NLM_F_DUMP: u16 = 0x300;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLA_F_NESTED: u16 = 0x8000;
const NLA_TYPE_MASK: u16 = 0x3fff;

// <linux/netfilter/nfnetlink.h>
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;
/// The multicast group of trace events (`nft monitor trace` listens to it).
pub const NFNLGRP_NFTRACE: u32 = 9;

/// An nf_tables message type: `NFT_MSG_*` in the subsystem's high byte.
pub const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// One message being built. Attributes are appended in order; [`Message::nest`] returns
/// a mark that [`Message::end_nest`] uses to fill in the nested attribute's length.
pub struct Message {
    bytes: Vec<u8>,
}

impl Message {
    /// A message of `kind` with its nfgenmsg header (`family`, version 0, `resource_id`).
    pub fn new(kind: u16, flags: u16, seq: u32, family: u8, resource_id: u16) -> Message {
        let mut bytes = Vec::with_capacity(256);
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // length, set by `finish`
        bytes.extend_from_slice(&kind.to_ne_bytes());
        bytes.extend_from_slice(&flags.to_ne_bytes());
        bytes.extend_from_slice(&seq.to_ne_bytes());
        bytes.extend_from_slice(&0u32.to_ne_bytes()); // port id 0: "to the kernel"
        bytes.push(family);
        bytes.push(0); // NFNETLINK_V0
        bytes.extend_from_slice(&resource_id.to_be_bytes());
        Message { bytes }
    }

    /// An attribute with a raw value.
    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let length = 4 + value.len();
        self.bytes.extend_from_slice(&(length as u16).to_ne_bytes());
        self.bytes.extend_from_slice(&kind.to_ne_bytes());
        self.bytes.extend_from_slice(value);
        self.pad();
        self
    }

    /// A NUL-terminated string attribute (names of tables, chains, expressions).
    pub fn string(&mut self, kind: u16, value: &str) -> &mut Self {
        let mut v = value.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    /// A 32-bit number in network byte order.
    pub fn be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Opens a nested attribute; close it with [`Message::end_nest`].
    pub fn nest(&mut self, kind: u16) -> usize {
        let mark = self.bytes.len();
        self.bytes.extend_from_slice(&0u16.to_ne_bytes());
        self.bytes
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        mark
    }

    pub fn end_nest(&mut self, mark: usize) {
        let length = (self.bytes.len() - mark) as u16;
        self.bytes[mark..mark + 2].copy_from_slice(&length.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// The finished bytes, length filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let length = self.bytes.len() as u32;
        self.bytes[0..4].copy_from_slice(&length.to_ne_bytes());
        self.bytes
    }
}

/// One received message: its type, flags, sequence number and body (nfgenmsg included).
#[derive(Debug)]
pub struct Received<'a> {
    pub kind: u16,
    pub flags: u16,
    pub seq: u32,
    pub body: &'a [u8],
}

/// Splits a datagram read from a netlink socket into its messages.
pub fn messages(mut bytes: &[u8]) -> Vec<Received<'_>> {
    let mut found = Vec::new();
    while bytes.len() >= 16 {
        let length = u32::from_ne_bytes(bytes[0..4].try_into().unwrap()) as usize;
        if length < 16 || length > bytes.len() {
            break;
        }
        found.push(Received {
            kind: u16::from_ne_bytes([bytes[4], bytes[5]]),
            flags: u16::from_ne_bytes([bytes[6], bytes[7]]),
            seq: u32::from_ne_bytes(bytes[8..12].try_into().unwrap()),
            body: &bytes[16..length],
        });
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    found
}

fn align(length: usize) -> usize {
    (length + 3) & !3
}

/// The attributes in `bytes`: (type, value) pairs, flags masked off the type.
pub fn attributes(mut bytes: &[u8]) -> Vec<(u16, &[u8])> {
    let mut found = Vec::new();
    while bytes.len() >= 4 {
        let length = u16::from_ne_bytes([bytes[0], bytes[1]]) as usize;
        let kind = u16::from_ne_bytes([bytes[2], bytes[3]]) & NLA_TYPE_MASK;
        if length < 4 || length > bytes.len() {
            break;
        }
        found.push((kind, &bytes[4..length]));
        bytes = &bytes[align(length).min(bytes.len())..];
    }
    found
}

/// The value of the first attribute of type `kind`.
pub fn find<'a>(attributes: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    attributes.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

pub fn be32(value: Option<&[u8]>) -> Option<u32> {
    Some(u32::from_be_bytes(value?.get(0..4)?.try_into().ok()?))
}

pub fn be64(value: Option<&[u8]>) -> Option<u64> {
    Some(u64::from_be_bytes(value?.get(0..8)?.try_into().ok()?))
}

/// A NUL-terminated string attribute.
pub fn string(value: Option<&[u8]>) -> Option<String> {
    let value = value?;
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    Some(String::from_utf8_lossy(&value[..end]).into_owned())
}

/// The error code of an `NLMSG_ERROR` message body (0 = an acknowledgement).
pub fn error_code(body: &[u8]) -> i32 {
    body.get(0..4)
        .map(|b| i32::from_ne_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

/// A `NETLINK_NETFILTER` socket of the calling thread's network namespace.
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
}

impl Socket {
    /// A socket that receives only what it asks for.
    pub fn new() -> io::Result<Socket> {
        Self::with_groups(0)
    }

    /// A socket that also receives nf_tables trace events (`NFNLGRP_NFTRACE`). Groups below
    /// 32 can be joined at bind time, as a bit mask: group N is bit N-1.
    pub fn subscribe_trace() -> io::Result<Socket> {
        Self::with_groups(1 << (NFNLGRP_NFTRACE - 1))
    }

    fn with_groups(groups: u32) -> io::Result<Socket> {
        let fd = socket(
            AddressFamily::Netlink,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::NetlinkNetFilter,
        )?;
        bind(fd.as_raw_fd(), &NetlinkAddr::new(0, groups))?;
        Ok(Socket { fd, seq: 1 })
    }

    /// The next sequence number, to tell our answers apart.
    pub fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        send(self.fd.as_raw_fd(), bytes, MsgFlags::empty())?;
        Ok(())
    }

    /// One datagram (several messages), or `None` when nothing came within `timeout`.
    /// `ENOBUFS` (the socket's buffer overflowed: events were lost) is returned as an error
    /// the caller can count.
    pub fn receive(&self, buffer: &mut [u8], timeout: Duration) -> io::Result<Option<usize>> {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        let ready = poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        )?;
        if ready == 0 {
            return Ok(None);
        }
        Ok(Some(recv(self.fd.as_raw_fd(), buffer, MsgFlags::empty())?))
    }

    /// Sends a batch of nf_tables changes (each built with `NLM_F_ACK`) and waits for the
    /// kernel's answer to each; the first error is returned as the kernel's errno (`what`
    /// names the change in a timeout's message).
    pub fn transact(&mut self, changes: Vec<Message>, what: &str) -> io::Result<()> {
        let begin_seq = self.next_seq();
        let mut batch = Message::new(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            begin_seq,
            0,
            NFNL_SUBSYS_NFTABLES,
        )
        .finish();
        let count = changes.len();
        for change in changes {
            let mut bytes = change.finish();
            let seq = self.next_seq();
            bytes[8..12].copy_from_slice(&seq.to_ne_bytes());
            batch.extend_from_slice(&bytes);
        }
        let end_seq = self.next_seq();
        batch.extend(
            Message::new(
                NFNL_MSG_BATCH_END,
                NLM_F_REQUEST,
                end_seq,
                0,
                NFNL_SUBSYS_NFTABLES,
            )
            .finish(),
        );
        self.send(&batch)?;
        let mut acknowledged = 0;
        let mut buffer = vec![0u8; 1 << 16];
        while acknowledged < count {
            let Some(n) = self.receive(&mut buffer, Duration::from_secs(2))? else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("{what}: nf_tables did not answer within 2 s"),
                ));
            };
            for m in messages(&buffer[..n]) {
                // Trace events of other packets may arrive in between: only answers count.
                if m.kind != NLMSG_ERROR || m.seq <= begin_seq || m.seq >= end_seq {
                    continue;
                }
                match error_code(m.body) {
                    0 => acknowledged += 1,
                    // The kernel's own errno, so that callers can tell them apart.
                    code => return Err(io::Error::from_raw_os_error(-code)),
                }
            }
        }
        Ok(())
    }

    /// A dump request (`NLM_F_DUMP`): every answer's body, until `NLMSG_DONE`.
    pub fn dump(&mut self, kind: u16, family: u8) -> io::Result<Vec<Vec<u8>>> {
        let seq = self.next_seq();
        let request = Message::new(kind, NLM_F_REQUEST | NLM_F_DUMP, seq, family, 0).finish();
        self.send(&request)?;
        let mut bodies = Vec::new();
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let Some(n) = self.receive(&mut buffer, Duration::from_secs(2))? else {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "nf_tables did not finish a dump within 2 s",
                ));
            };
            for m in messages(&buffer[..n]) {
                if m.seq != seq {
                    continue;
                }
                match m.kind {
                    NLMSG_DONE => return Ok(bodies),
                    NLMSG_ERROR => match error_code(m.body) {
                        0 => {}
                        code => return Err(io::Error::from_raw_os_error(-code)),
                    },
                    _ => bodies.push(m.body.to_vec()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips() {
        let mut m = Message::new(nft_type(0), NLM_F_REQUEST, 7, 1, 0);
        m.string(1, "tracer-1");
        let nest = m.nest(4);
        m.be32(1, 3).be32(2, (-1000i32) as u32);
        m.end_nest(nest);
        let bytes = m.finish();
        assert_eq!(bytes.len() % 4, 0);
        let got = messages(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].kind, got[0].seq), (nft_type(0), 7));
        assert_eq!(got[0].body[0], 1, "the family comes first");
        let attrs = attributes(&got[0].body[4..]);
        assert_eq!(string(find(&attrs, 1)).as_deref(), Some("tracer-1"));
        let hook = attributes(find(&attrs, 4).unwrap());
        assert_eq!(be32(find(&hook, 1)), Some(3));
        assert_eq!(be32(find(&hook, 2)).map(|p| p as i32), Some(-1000));
    }
}
