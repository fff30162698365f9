//! The netfilter netlink (nfnetlink) wire format, for the course's small netlink clients:
//! the conntrack dump ([`crate::conntrack::netlink`]) and the tracer's nftables tracing.
//!
//! A netlink message is a 16-byte header (`struct nlmsghdr`: length, type, flags, sequence
//! number, port id) and a body. For the netfilter subsystems the body starts with a 4-byte
//! `struct nfgenmsg` (address family, version, resource id) followed by attributes: each a
//! 4-byte header (length, type) and a value padded to 4 bytes. Attributes nest: a nested
//! attribute's value is a list of attributes. Numbers inside netfilter attributes are in
//! network byte order (big endian); the headers are in the machine's own order.
//!
//! No sockets here: only building and reading bytes, so every function is testable without
//! privileges.

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
/// An attribute's type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const NLA_TYPE_MASK: u16 = 0x3fff;

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

pub fn be16(value: Option<&[u8]>) -> Option<u16> {
    Some(u16::from_be_bytes(value?.get(0..2)?.try_into().ok()?))
}

pub fn byte(value: Option<&[u8]>) -> Option<u8> {
    value?.first().copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_round_trips() {
        // NFT_MSG_NEWTABLE (0) of the nf_tables subsystem (10), family 1 (NFPROTO_INET).
        const NEWTABLE: u16 = 10 << 8;
        let mut m = Message::new(NEWTABLE, NLM_F_REQUEST, 7, 1, 0);
        m.string(1, "tracer-1");
        let nest = m.nest(4);
        m.be32(1, 3).be32(2, (-1000i32) as u32);
        m.end_nest(nest);
        let bytes = m.finish();
        assert_eq!(bytes.len() % 4, 0);
        let got = messages(&bytes);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].kind, got[0].seq), (NEWTABLE, 7));
        assert_eq!(got[0].body[0], 1, "the family comes first");
        let attrs = attributes(&got[0].body[4..]);
        assert_eq!(string(find(&attrs, 1)).as_deref(), Some("tracer-1"));
        let hook = attributes(find(&attrs, 4).unwrap());
        assert_eq!(be32(find(&hook, 1)), Some(3));
        assert_eq!(be32(find(&hook, 2)).map(|p| p as i32), Some(-1000));
    }
}
