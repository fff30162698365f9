//! # Exercise 4 — Capture on the bridge
//!
//! The article's author first looked at the wire: a capture on the host's docker
//! bridge. It already says a lot — the request arrives, the proxy relays it, the server
//! answers, and the proxy's answer leaves the host **from 172.18.0.1:4000**, not from
//! 192.168.0.239:4000, the address the client wrote to.
//!
//! You write that capture, the way `tcpdump -i br-dind -w story.pcap` does it:
//!
//! 1. [`open_capture`]: a **packet socket** (`AF_PACKET`) inside the `host` node, bound
//!    to one interface, with kernel timestamps switched on;
//! 2. [`Capture::next_frame`]: wait (with a timeout) for the next frame, and read it with
//!    its timestamp and its direction from the kernel's control data;
//! 3. [`Capture::frames_until`]: keep reading until told to stop, keeping the frames a
//!    filter accepts;
//! 4. [`write_pcap`]: write the frames as a pcap file that Wireshark and `tshark` open.
//!
//! Then run `cargo xtask check 4`: the check captures the story on `br-dind` with your
//! code, and reads your file back with `tshark`.

use std::fs::File;
use std::io::{self, BufWriter, IoSliceMut, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::net::if_::if_nametoindex;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, LinkAddr,
    MsgFlags, SockFlag, SockProtocol, SockType, SockaddrLike,
};
use nix::sys::time::TimeSpec;
use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

pub mod frame;

/// The most bytes kept of one frame (tcpdump's default "snapshot length").
pub const SNAPLEN: usize = 65_535;

/// How often [`Capture::frames_until`] looks at its stop flag while nothing arrives.
pub const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// Did the frame arrive on the interface, or did this machine send it?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received on the interface (`PACKET_HOST`, `PACKET_BROADCAST`, …).
    Incoming,
    /// Sent by this network namespace through the interface (`PACKET_OUTGOING`).
    Outgoing,
}

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// When the kernel saw the frame, since the Unix epoch (`CLOCK_REALTIME`).
    pub timestamp: Duration,
    pub direction: Direction,
    /// The frame's length on the wire; `data` may hold less (at most [`SNAPLEN`]).
    pub original_len: usize,
    /// The frame's bytes, from the Ethernet header on.
    pub data: Vec<u8>,
}

/// A filter: given a frame's bytes, keep it or not ([`frame`] helps to read them).
pub type Filter = dyn Fn(&[u8]) -> bool + Send + Sync;

/// A packet socket bound to one interface, ready to read its frames.
#[derive(Debug)]
pub struct Capture {
    socket: OwnedFd,
    interface: String,
    buffer: Vec<u8>,
}

/// Open a capture on `interface` — **in the network namespace of the calling thread**.
///
/// Both the socket and the interface index belong to a namespace: the socket to the one
/// its creator lived in, and `br-dind` means something only in `host`. So call this
/// from a thread inside the node (`world.node("host")?.run(|| open_capture("br-dind"))`);
/// the capture can then be read from any thread.
pub fn open_capture(interface: &str) -> io::Result<Capture> {
    // A raw packet socket sees whole frames, Ethernet header included. Its protocol
    // (the third argument) says which EtherTypes it receives; we pass none here, so
    // that it receives *nothing* until `bind` has tied it to one interface — created
    // with ETH_P_ALL, it would already get the frames of every interface meanwhile.
    let socket = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None::<SockProtocol>,
    )
    .map_err(|errno| explain(errno, "cannot create a packet socket (AF_PACKET)"))?;
    // Ask the kernel to attach to every frame the time it saw it, in nanoseconds: an
    // SCM_TIMESTAMPNS control message with each recvmsg.
    setsockopt(&socket, sockopt::ReceiveTimestampns, &true)?;
    // Interfaces are numbered per namespace: this looks `interface` up in ours.
    let index = if_nametoindex(interface).map_err(|errno| {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("no interface `{interface}` in this network namespace ({errno}): is the calling thread inside the right node?"),
        )
    })?;
    // Bind: frames of every protocol (ETH_P_ALL), on this interface only.
    bind(
        socket.as_raw_fd(),
        &link_address(index, libc::ETH_P_ALL as u16),
    )?;
    Ok(Capture {
        socket,
        interface: interface.to_string(),
        buffer: vec![0; SNAPLEN],
    })
}

impl Capture {
    /// The interface this capture is bound to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The next frame, or `None` if none arrives within `timeout` (`Duration::ZERO`:
    /// only what is already queued).
    pub fn next_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        // Wait until the socket is readable, or the timeout passes. (A blocking recvmsg
        // alone could wait forever: a capture must always be able to stop.)
        let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
        loop {
            match poll(&mut fds, timeout) {
                Ok(0) => return Ok(None),
                Ok(_) => break,
                Err(Errno::EINTR) => continue,
                Err(errno) => return Err(errno.into()),
            }
        }
        // Read one frame, with room for one control message: the timestamp. MSG_TRUNC
        // makes a packet socket return the frame's real length, even when the buffer
        // held less of it.
        let mut control = nix::cmsg_space!(TimeSpec);
        let mut iov = [IoSliceMut::new(&mut self.buffer)];
        let message = recvmsg::<LinkAddr>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_TRUNC,
        )?;
        let original_len = message.bytes;
        let mut timestamp = None;
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmTimestampns(time) = cmsg {
                timestamp = Some(Duration::new(time.tv_sec() as u64, time.tv_nsec() as u32));
            }
        }
        // The sender's address is a `sockaddr_ll`: its packet type says where the frame
        // came from. PACKET_OUTGOING: this namespace sent it.
        let direction = match message.address.map(|address| address.pkttype()) {
            Some(libc::PACKET_OUTGOING) => Direction::Outgoing,
            _ => Direction::Incoming,
        };
        let timestamp = timestamp.ok_or_else(|| {
            io::Error::other("the kernel sent no timestamp with the frame (is SO_TIMESTAMPNS on?)")
        })?;
        let captured = original_len.min(self.buffer.len());
        Ok(Some(Frame {
            timestamp,
            direction,
            original_len,
            data: self.buffer[..captured].to_vec(),
        }))
    }

    /// Read frames until `stop` is set, keeping those `filter` accepts (all of them
    /// without a filter).
    ///
    /// Stopping keeps what the kernel had already queued when `stop` was seen, and
    /// nothing later: a frame stamped after that moment ends the capture.
    pub fn frames_until(
        &mut self,
        stop: &AtomicBool,
        filter: Option<&Filter>,
    ) -> io::Result<Vec<Frame>> {
        let mut frames = Vec::new();
        let mut stopped_at: Option<Duration> = None;
        loop {
            if stopped_at.is_none() && stop.load(Ordering::SeqCst) {
                stopped_at = Some(now());
            }
            // Running: wait a little at a time, to notice `stop` soon. Stopping: only
            // take what is already there.
            let wait = match stopped_at {
                None => STOP_CHECK_INTERVAL,
                Some(_) => Duration::ZERO,
            };
            match self.next_frame(wait)? {
                Some(frame) if stopped_at.is_some_and(|at| frame.timestamp > at) => {
                    return Ok(frames)
                }
                Some(frame) if filter.is_none_or(|keep| keep(&frame.data)) => frames.push(frame),
                Some(_) => {}
                None if stopped_at.is_some() => return Ok(frames),
                None => {}
            }
        }
    }
}

/// Write `frames` to `out` as a pcap file: Ethernet frames, nanosecond timestamps.
pub fn write_pcap(frames: &[Frame], out: impl Write) -> io::Result<()> {
    // The file header says how to read what follows: the link type of the frames
    // (Ethernet), the timestamps' resolution (the magic number a1b23c4d means
    // nanoseconds), the snapshot length, and the byte order.
    let header = PcapHeader {
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::NanoSecond,
        snaplen: SNAPLEN as u32,
        endianness: Endianness::native(),
        ..PcapHeader::default()
    };
    let mut writer = PcapWriter::with_header(out, header).map_err(io::Error::other)?;
    // Each record: the timestamp, the bytes kept, the length on the wire, the bytes.
    for frame in frames {
        let packet = PcapPacket::new(frame.timestamp, frame.original_len as u32, &frame.data);
        writer.write_packet(&packet).map_err(io::Error::other)?;
    }
    writer.into_writer().flush()
}

/// Capture on `capture` until `stop` is set, and write what `filter` kept to the pcap
/// file `path`. Returns how many frames it wrote.
pub fn capture_to_file(
    capture: &mut Capture,
    path: &Path,
    filter: Option<&Filter>,
    stop: &AtomicBool,
) -> io::Result<usize> {
    // Create the file first: better to learn it cannot be written before capturing.
    let file = File::create(path)?;
    let frames = capture.frames_until(stop, filter)?;
    write_pcap(&frames, BufWriter::new(file))?;
    Ok(frames.len())
}

/// A packet-socket address (`struct sockaddr_ll`) to bind to: interface number `index`,
/// frames of EtherType `protocol` (`ETH_P_ALL`: all of them).
fn link_address(index: u32, protocol: u16) -> LinkAddr {
    let address = libc::sockaddr_ll {
        sll_family: libc::AF_PACKET as u16,
        // Protocol numbers travel in network byte order, even in this struct.
        sll_protocol: protocol.to_be(),
        sll_ifindex: index as i32,
        sll_hatype: 0,
        sll_pkttype: 0,
        sll_halen: 0,
        sll_addr: [0; 8],
    };
    // SAFETY: nix has no safe constructor for a LinkAddr; `address` is a fully
    // initialised sockaddr_ll and we pass its exact size.
    unsafe {
        LinkAddr::from_raw(
            (&address as *const libc::sockaddr_ll).cast(),
            Some(std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t),
        )
    }
    .expect("a sockaddr_ll with family AF_PACKET is a LinkAddr")
}

/// Now, as the kernel's timestamps count it (`CLOCK_REALTIME`, since the Unix epoch).
fn now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// An errno with what we were doing, and what to do about EPERM.
fn explain(errno: Errno, doing: &str) -> io::Error {
    let hint = match errno {
        Errno::EPERM | Errno::EACCES => {
            " — a packet socket needs CAP_NET_RAW in the namespace (run inside the lab's sandbox)"
        }
        _ => "",
    };
    io::Error::new(
        io::Error::from(errno).kind(),
        format!("{doing}: {errno}{hint}"),
    )
}
