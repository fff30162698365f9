//! Kernel timestamps, switched on for sure before the story's packets flow.
//!
//! The kernel stamps each arriving packet with the time only while some socket on the
//! machine asked for timestamps (`SO_TIMESTAMP*`). The first socket that asks switches
//! stamping on *in the background* (a static key flipped by a workqueue), so packets in
//! the next moments may still carry no stamp — and a packet without one is stamped when
//! it is *read*. A capture opened just before the story runs could then report the time
//! it read each frame, not the time the frame crossed the wire.
//!
//! [`switch_on`] asks for timestamps and waits, with a time limit, until a datagram
//! sent over a node's loopback comes back stamped before it was read. Keep the returned
//! value alive until your capture is open: while some socket wants timestamps, they
//! stay on.

use std::io::IoSliceMut;
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use netlab::Netns;
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;

/// Proof that the kernel stamps packets as they arrive; they stay stamped while this lives.
#[derive(Debug)]
pub struct KernelTimestamps {
    _socket: UdpSocket,
}

/// Ask for timestamps inside `netns` (any node: every one has its loopback up) and wait
/// until the kernel stamps packets on arrival (usually at once; at most `limit`).
pub fn switch_on(netns: &Netns, limit: Duration) -> Result<KernelTimestamps> {
    netns.run(|| {
        let socket = UdpSocket::bind("127.0.0.1:0").context("a UDP socket on the loopback")?;
        setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
        let started = Instant::now();
        while started.elapsed() < limit {
            socket.send_to(b"what time is it?", socket.local_addr()?)?;
            // Read it a little later: a stamp taken on arrival is older than that.
            std::thread::sleep(Duration::from_millis(5));
            let read_at = now();
            let stamped_at = receive_stamp(&socket)?;
            if stamped_at + Duration::from_millis(2) < read_at {
                return Ok(KernelTimestamps { _socket: socket });
            }
        }
        bail!("the kernel did not start stamping packets on arrival within {limit:?}")
    })
}

fn receive_stamp(socket: &UdpSocket) -> Result<Duration> {
    use std::os::fd::AsRawFd;
    let mut buffer = [0u8; 64];
    let mut iov = [IoSliceMut::new(&mut buffer)];
    let mut control = nix::cmsg_space!(TimeSpec);
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::empty(),
    )?;
    for cmsg in message.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(time) = cmsg {
            return Ok(Duration::new(time.tv_sec() as u64, time.tv_nsec() as u32));
        }
    }
    bail!("no timestamp came with the datagram")
}

fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}
