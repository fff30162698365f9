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
//!
//! Given: the types ([`Frame`], [`Capture`], [`Direction`]), [`capture_to_file`] (which
//! puts your functions together), the `sockaddr_ll` to bind to (`link_address`), and
//! [`frame`], a small decoder of Ethernet/IPv4/UDP headers for filters. The book's
//! chapter 4 explains packet sockets, timestamps and the pcap format.

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
    // TODO: create the packet socket: nix::sys::socket::socket(AddressFamily::Packet,
    //   SockType::Raw, SockFlag::SOCK_CLOEXEC, None::<SockProtocol>). Protocol "none" on
    //   purpose: the socket receives nothing until `bind` ties it to one interface.
    // TODO: ask for kernel timestamps: setsockopt(&socket, sockopt::ReceiveTimestampns, &true).
    // TODO: find the interface's index with if_nametoindex(interface) — it looks in the
    //   calling thread's namespace; say so in the error if there is no such interface.
    // TODO: bind(socket.as_raw_fd(), &link_address(index, libc::ETH_P_ALL as u16)), and
    //   return a Capture with a buffer of SNAPLEN bytes.
    todo!()
}

impl Capture {
    /// The interface this capture is bound to.
    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The next frame, or `None` if none arrives within `timeout` (`Duration::ZERO`:
    /// only what is already queued).
    pub fn next_frame(&mut self, timeout: Duration) -> io::Result<Option<Frame>> {
        // TODO: wait until the socket is readable: nix::poll::poll on
        //   [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)] with
        //   PollTimeout::try_from(timeout). 0 ready descriptors: return Ok(None).
        // TODO: recvmsg::<LinkAddr>(fd, &mut [IoSliceMut::new(&mut self.buffer)],
        //   Some(&mut nix::cmsg_space!(TimeSpec)), MsgFlags::MSG_TRUNC). With MSG_TRUNC,
        //   `bytes` is the frame's length on the wire, even if the buffer held less.
        // TODO: the timestamp: the ControlMessageOwned::ScmTimestampns(time) among
        //   message.cmsgs()? (a Duration from tv_sec and tv_nsec). No timestamp: an error.
        // TODO: the direction: message.address's pkttype() is libc::PACKET_OUTGOING for a
        //   frame this namespace sent; anything else was received.
        // TODO: copy the bytes received (at most the buffer's length) into the Frame.
        todo!()
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
        // TODO: loop on self.next_frame(STOP_CHECK_INTERVAL), keeping each frame the filter
        //   accepts (every frame when `filter` is None).
        // TODO: once `stop` is set, remember when (`now()`), and read only what is already
        //   queued (timeout Duration::ZERO): return at the first `None`, or at the first
        //   frame stamped after that moment.
        todo!()
    }
}

/// Write `frames` to `out` as a pcap file: Ethernet frames, nanosecond timestamps.
pub fn write_pcap(frames: &[Frame], out: impl Write) -> io::Result<()> {
    // TODO: PcapWriter::with_header(out, PcapHeader { datalink: DataLink::ETHERNET,
    //   ts_resolution: TsResolution::NanoSecond, snaplen: SNAPLEN as u32,
    //   endianness: Endianness::native(), ..PcapHeader::default() }).
    //   pcap-file's errors become io errors with io::Error::other.
    // TODO: one PcapPacket::new(timestamp, original_len as u32, &data) per frame, then
    //   flush the writer you get back from into_writer().
    todo!()
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
