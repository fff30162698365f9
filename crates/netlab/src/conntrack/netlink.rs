//! The conntrack table over netlink — what `conntrack -L` does, in ~200 lines.
//!
//! The kernel's connection tracker answers requests on a `NETLINK_NETFILTER` socket
//! (the "ctnetlink" subsystem). One request, `IPCTNL_MSG_CT_GET` with the `NLM_F_DUMP`
//! flag, and the kernel replies with one message per entry, then `NLMSG_DONE`. Each
//! entry is a list of attributes (type, length, value), some nested: the two tuples,
//! the status bits (`[UNREPLIED]`, `[ASSURED]`), the timeout, TCP's state, the mark, the
//! zone. Numbers are in network byte order. The socket belongs to the namespace it was
//! created in, and so does the table it reads.
//!
//! [`dump`] prints the entries as `/proc/net/nf_conntrack` does, so that everything that
//! reads that file works unchanged on kernels built without it.

use std::fmt::Write as _;
use std::io::{self, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netlink::{
    attributes, be16, be32, byte, error_code, find, messages, Message, NLMSG_DONE, NLMSG_ERROR,
    NLM_F_DUMP, NLM_F_REQUEST,
};

// From <linux/netfilter/nfnetlink.h>, <linux/netfilter/nfnetlink_conntrack.h>.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_GET: u16 = 1;

const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
const CTA_USE: u16 = 11;
const CTA_ZONE: u16 = 18;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

/// `enum ip_conntrack_status` bits.
const IPS_SEEN_REPLY: u32 = 1 << 1;
const IPS_ASSURED: u32 = 1 << 2;
const IPS_OFFLOAD: u32 = 1 << 14;
const IPS_HW_OFFLOAD: u32 = 1 << 15;

/// `enum tcp_conntrack`, by value, as the kernel names them in `/proc`.
const TCP_STATES: [&str; 10] = [
    "NONE",
    "SYN_SENT",
    "SYN_RECV",
    "ESTABLISHED",
    "FIN_WAIT",
    "CLOSE_WAIT",
    "LAST_ACK",
    "TIME_WAIT",
    "CLOSE",
    "SYN_SENT2",
];

/// Dump the conntrack table of the calling thread's network namespace, one entry per
/// line, in the format of `/proc/net/nf_conntrack`.
pub fn dump() -> io::Result<String> {
    let socket = Socket::new(
        Domain::from(nix::libc::AF_NETLINK),
        Type::RAW,
        Some(Protocol::from(nix::libc::NETLINK_NETFILTER)),
    )?;
    // One dump request; family AF_UNSPEC = every family.
    let request = Message::new(
        (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET,
        NLM_F_REQUEST | NLM_F_DUMP,
        1,
        nix::libc::AF_UNSPEC as u8,
        0,
    )
    .finish();
    // Unconnected and unbound: a netlink socket sends to the kernel by default.
    socket.send(&request)?;

    let mut table = String::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let received = (&socket).read(&mut buffer)?;
        for message in messages(&buffer[..received]) {
            match message.kind {
                NLMSG_DONE => return Ok(table),
                NLMSG_ERROR => match error_code(message.body) {
                    0 => {}
                    code => return Err(io::Error::from_raw_os_error(-code)),
                },
                _ => {
                    if let Some(line) = entry_line(message.body) {
                        table.push_str(&line);
                        table.push('\n');
                    }
                }
            }
        }
    }
}

/// One tuple, as `/proc` prints it: `src=… dst=… sport=… dport=… ` (with the trailing
/// space), and its protocol number.
fn tuple(bytes: &[u8]) -> Option<(String, u8)> {
    let tuple = attributes(bytes);
    let ip = attributes(find(&tuple, CTA_TUPLE_IP)?);
    let proto = attributes(find(&tuple, CTA_TUPLE_PROTO)?);
    let (src, dst) = match (find(&ip, CTA_IP_V4_SRC), find(&ip, CTA_IP_V4_DST)) {
        (Some(s), Some(d)) => (address(s)?, address(d)?),
        _ => (
            address(find(&ip, CTA_IP_V6_SRC)?)?,
            address(find(&ip, CTA_IP_V6_DST)?)?,
        ),
    };
    let number = byte(find(&proto, CTA_PROTO_NUM))?;
    let mut text = format!("src={} dst={} ", proc_address(src), proc_address(dst));
    let (sport, dport) = (
        be16(find(&proto, CTA_PROTO_SRC_PORT)),
        be16(find(&proto, CTA_PROTO_DST_PORT)),
    );
    let icmp = |t, c, i| {
        Some((
            byte(find(&proto, t))?,
            byte(find(&proto, c))?,
            be16(find(&proto, i))?,
        ))
    };
    if let (Some(s), Some(d)) = (sport, dport) {
        let _ = write!(text, "sport={s} dport={d} ");
    } else if let Some((t, c, i)) =
        icmp(CTA_PROTO_ICMP_TYPE, CTA_PROTO_ICMP_CODE, CTA_PROTO_ICMP_ID).or_else(|| {
            icmp(
                CTA_PROTO_ICMPV6_TYPE,
                CTA_PROTO_ICMPV6_CODE,
                CTA_PROTO_ICMPV6_ID,
            )
        })
    {
        let _ = write!(text, "type={t} code={c} id={i} ");
    }
    Some((text, number))
}

fn address(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(Ipv4Addr::from(<[u8; 4]>::try_from(bytes).ok()?).into()),
        16 => Some(Ipv6Addr::from(<[u8; 16]>::try_from(bytes).ok()?).into()),
        _ => None,
    }
}

/// `/proc` prints IPv6 addresses in full (`fd00:0000:…:0001`, the kernel's `%pI6`).
fn proc_address(address: IpAddr) -> String {
    match address {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|s| format!("{s:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    }
}

fn protocol_name(number: u8) -> &'static str {
    match number {
        1 => "icmp",
        6 => "tcp",
        17 => "udp",
        33 => "dccp",
        47 => "gre",
        58 => "icmpv6",
        132 => "sctp",
        136 => "udplite",
        _ => "unknown",
    }
}

/// One entry (the body of one message: nfgenmsg, then attributes) as a `/proc` line.
fn entry_line(body: &[u8]) -> Option<String> {
    let family = *body.first()?;
    let family_name = match i32::from(family) {
        nix::libc::AF_INET => "ipv4",
        nix::libc::AF_INET6 => "ipv6",
        _ => return None,
    };
    let entry = attributes(body.get(4..)?);
    let (original, number) = tuple(find(&entry, CTA_TUPLE_ORIG)?)?;
    let (reply, _) = tuple(find(&entry, CTA_TUPLE_REPLY)?)?;
    let status = be32(find(&entry, CTA_STATUS)).unwrap_or(0);
    let mut line = format!(
        "{family_name:<8} {family} {:<8} {number} ",
        protocol_name(number)
    );
    if let Some(timeout) = be32(find(&entry, CTA_TIMEOUT)) {
        let _ = write!(line, "{timeout} ");
    }
    let tcp_state = find(&entry, CTA_PROTOINFO)
        .map(attributes)
        .and_then(|info| find(&info, CTA_PROTOINFO_TCP).map(attributes))
        .and_then(|tcp| byte(find(&tcp, CTA_PROTOINFO_TCP_STATE)));
    if let Some(state) = tcp_state {
        line.push_str(TCP_STATES.get(usize::from(state)).unwrap_or(&"UNKNOWN"));
        line.push(' ');
    }
    line.push_str(&original);
    if status & IPS_SEEN_REPLY == 0 {
        line.push_str("[UNREPLIED] ");
    }
    line.push_str(&reply);
    if status & IPS_HW_OFFLOAD != 0 {
        line.push_str("[HW_OFFLOAD] ");
    } else if status & IPS_OFFLOAD != 0 {
        line.push_str("[OFFLOAD] ");
    } else if status & IPS_ASSURED != 0 {
        line.push_str("[ASSURED] ");
    }
    let mark = be32(find(&entry, CTA_MARK)).unwrap_or(0);
    let zone = be16(find(&entry, CTA_ZONE)).unwrap_or(0);
    let _ = write!(line, "mark={mark} zone={zone} ");
    let _ = write!(line, "use={}", be32(find(&entry, CTA_USE)).unwrap_or(1));
    Some(line)
}
