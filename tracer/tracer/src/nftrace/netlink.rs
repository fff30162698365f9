//! Just enough netlink to speak to nf_tables, the kernel side of `nft`: a socket, batches and
//! dumps. The wire format (messages, attributes) is `netlab::netlink`'s, shared with the
//! course's conntrack dump.
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

pub use netlab::netlink::{
    attributes, be32, be64, error_code, find, messages, string, Message, Received, NLA_F_NESTED,
    NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_MULTI,
    NLM_F_REQUEST,
};

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
