//! `tracer path --pcap FILE`: the traced skbs as a pcapng capture that Wireshark and tshark open.
//!
//! `path` prints one line per hop: one skb at one tracepoint. The capture holds one packet per
//! such line, so Wireshark shows the same journey with its dissectors: the packet's headers as
//! they were AT that hop (after a DNAT in `PREROUTING`, the destination is already rewritten),
//! and the hop itself — tracepoint, namespace, interface, drop reason — as the packet's comment
//! (`frame.comment`; Wireshark shows it above the dissection, `tshark -T fields -e
//! frame.comment` prints it).
//!
//! How each part of an event becomes pcapng (the format: <https://ietf-opsawg-wg.github.io/draft-ietf-opsawg-pcap/draft-ietf-opsawg-pcapng.html>):
//! - **Bytes**: the kernel side copies the first [`HDR_BYTES`] bytes from the skb's network
//!   header (`Event::hdr`), so a packet starts at its IP header: link type `RAW` (101), where
//!   the version nibble says IPv4 or IPv6. A tracer in the middle of the stack sees no trustworthy
//!   Ethernet header (on the way out it is not built yet), so none is invented. A hop without
//!   an IP header (ARP, or an skb with no linear data left) goes to a second interface of the
//!   same name with link type `USER0`: its bytes are shown undissected, its comment still tells
//!   the hop.
//! - **Lengths**: captured = the bytes copied; original = the IP packet's length at this hop
//!   (`Event::net_len`: `skb->len` adjusted to start at the network header, since `skb->len`
//!   counts from `skb->data`, which moves from hop to hop), so Wireshark says "96 bytes
//!   captured" of a longer datagram, as with `tcpdump -s 96`.
//! - **Time**: the kernel's `bpf_ktime_get_ns` converted to wall-clock ([`crate::output::Clock`]),
//!   in nanoseconds (`if_tsresol` = 9 on every interface).
//! - **Interfaces**: one Interface Description Block per (network namespace, ifindex) the first
//!   time it appears, named `node:ifname` (`dind2:eth0`), so Wireshark's interface column
//!   (`frame.interface_name`) tells the hops apart even where every namespace has an `eth0`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use tracer_common::{Event, HDR_BYTES};

use crate::output::Record;

/// `if_tsresol` = 9: timestamps count nanoseconds (pcapng's default is microseconds).
/// pcap-file writes `EnhancedPacketBlock::timestamp` as a raw count of nanoseconds, so this is
/// what makes the file say what it means.
const NANOSECONDS: u8 = 9;

/// The link type of hops that have no IP header to show: ARP, and skbs whose linear data is
/// empty at that hop. `USER0` (147) is reserved for private use: Wireshark shows such a packet's
/// bytes undissected (and its comment), where RAW would call them a malformed IP packet.
const NO_IP_HEADER: DataLink = DataLink::USER0;

/// The text of a packet's comment: everything about the hop that is not in the packet's bytes.
///
/// `kfree_skb NO_SOCKET at __udp4_lib_rcv+0x141 | netns 4026532588(dind2) | eth0(2) |
/// skb 0xffff88800a1b2c00` — one line (tshark prints one line per packet), parts separated
/// by ` | `, the tracepoint first as in `path`'s EVENT column. This is the ONE place that
/// decides it: what `path` learns about a hop in the future goes here.
pub fn hop_comment(r: &Record) -> String {
    let mut event = r.event.clone();
    if let Some(reason) = r.short_reason() {
        event.push_str(&format!(" {reason}"));
    }
    if let Some(loc) = &r.location {
        event.push_str(&format!(" at {loc}"));
    }
    let mut parts = vec![
        event,
        format!("netns {}", r.netns_label()),
        r.iface_label(),
        format!("skb {}", r.skb),
    ];
    // The conntrack entry the skb carries here: which flow, its NAT and status bits, beside
    // the headers they explain.
    if let Some(ct) = &r.ct {
        parts.push(format!("ct {}", ct.compact()));
    }
    if let Some(explain) = &r.explain {
        parts.push(explain.clone());
    }
    parts.join(" | ")
}

/// The name of a hop's interface in the capture: `dind2:eth0`, `4026532417:lo`, or
/// `dind2:-` for an skb on no device yet (a socket's, before routing).
fn interface_name(r: &Record) -> String {
    let ns = r.node.clone().unwrap_or_else(|| r.netns.to_string());
    let dev = if r.ifindex == 0 { "-" } else { &r.ifname };
    format!("{ns}:{dev}")
}

/// Writes events as pcapng packets, one per [`PcapExport::write`].
pub struct PcapExport<W: Write> {
    writer: PcapNgWriter<W>,
    /// (netns inode, ifindex, link type) → interface id in the file (the order of their
    /// blocks).
    interfaces: HashMap<(u32, u32, u32), u32>,
    packets: u64,
}

impl PcapExport<BufWriter<File>> {
    /// Creates (or truncates) `path` and writes the section header.
    pub fn create(path: &Path) -> Result<Self> {
        let file = File::create(path).with_context(|| {
            format!(
                "cannot create the --pcap file {}: does its directory exist, and may we write there?",
                path.display()
            )
        })?;
        PcapExport::new(BufWriter::new(file))
            .with_context(|| format!("cannot write the --pcap file {}", path.display()))
    }
}

impl<W: Write> PcapExport<W> {
    /// Starts a capture in `out`: the section header block, naming the tracer as its author.
    pub fn new(out: W) -> Result<Self> {
        let section = SectionHeaderBlock {
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "tracer {} (path --pcap)",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        let writer = PcapNgWriter::with_section_header(out, section)
            .context("cannot write the pcapng section header")?;
        Ok(PcapExport {
            writer,
            interfaces: HashMap::new(),
            packets: 0,
        })
    }

    /// The interface id of the record's (netns, ifindex) for packets of `linktype`, writing
    /// its description block the first time.
    fn interface(&mut self, r: &Record, linktype: DataLink) -> Result<u32> {
        let key = (r.netns, r.ifindex, u32::from(linktype));
        if let Some(&id) = self.interfaces.get(&key) {
            return Ok(id);
        }
        let id = self.interfaces.len() as u32;
        let node = r
            .node
            .as_deref()
            .map(|n| format!(" (lab node {n})"))
            .unwrap_or_default();
        let what = if linktype == DataLink::RAW {
            "packets from their IP header on"
        } else {
            "hops without an IP header: the bytes from the network header on, not dissected"
        };
        let description = format!(
            "network namespace {}{node}, interface index {}: {what}",
            r.netns, r.ifindex
        );
        let block = InterfaceDescriptionBlock {
            linktype,
            snaplen: HDR_BYTES as u32,
            options: vec![
                InterfaceDescriptionOption::IfName(Cow::Owned(interface_name(r))),
                InterfaceDescriptionOption::IfDescription(Cow::Owned(description)),
                InterfaceDescriptionOption::IfTsResol(NANOSECONDS),
            ],
        };
        self.writer
            .write_pcapng_block(block)
            .context("cannot write a pcapng interface block")?;
        self.interfaces.insert(key, id);
        Ok(id)
    }

    /// Writes one hop: `ev`'s header bytes, `r`'s time, length and [`hop_comment`].
    pub fn write(&mut self, r: &Record, ev: &Event) -> Result<()> {
        let data = ev.headers();
        // Only IP bytes go into a RAW packet: anything else (and an empty packet) would be
        // "[Malformed Packet]" there.
        let ip = (ev.l3 == 4 || ev.l3 == 6) && !data.is_empty();
        let linktype = if ip { DataLink::RAW } else { NO_IP_HEADER };
        let interface_id = self.interface(r, linktype)?;
        let packet = EnhancedPacketBlock {
            interface_id,
            timestamp: Duration::from_nanos(r.time_ns),
            // The IP packet's length as the kernel side measured it from the network header
            // (not `skb->len`, which counts from wherever `skb->data` points at this hop).
            original_len: if ev.net_len != 0 { ev.net_len } else { r.len }.max(data.len() as u32),
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Comment(Cow::Owned(hop_comment(r)))],
        };
        self.writer
            .write_pcapng_block(packet)
            .context("cannot write a pcapng packet")?;
        self.packets += 1;
        Ok(())
    }

    /// Packets written so far.
    pub fn packets(&self) -> u64 {
        self.packets
    }

    /// Pushes what is buffered to the file, so that a capture is readable while the tracer
    /// runs (and complete up to here if it is killed).
    pub fn flush(&mut self) -> Result<()> {
        self.writer
            .get_mut()
            .flush()
            .context("cannot write the --pcap file")
    }

    /// Flushes and returns the output.
    pub fn finish(mut self) -> Result<W> {
        self.flush()?;
        Ok(self.writer.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;
    use std::process::Command;

    use pcap_file::pcapng::{Block, PcapNgReader};

    use super::*;

    /// The internet checksum (RFC 1071) of `bytes`.
    fn checksum(bytes: &[u8]) -> u16 {
        let mut sum: u32 = bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
            .sum();
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    /// A whole IPv4 + UDP datagram with `payload`, correct lengths and checksums.
    fn udp4(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, payload: &[u8]) -> Vec<u8> {
        let total = 20 + 8 + payload.len();
        let mut p = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        let ip_sum = checksum(&p);
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        let udp_len = (8 + payload.len()) as u16;
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]); // checksum, below
        p.extend_from_slice(payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src);
        pseudo.extend_from_slice(&dst);
        pseudo.extend_from_slice(&[0, 17]);
        pseudo.extend_from_slice(&udp_len.to_be_bytes());
        pseudo.extend_from_slice(&p[20..]);
        let udp_sum = checksum(&pseudo);
        p[26..28].copy_from_slice(&udp_sum.to_be_bytes());
        p
    }

    /// A whole IPv6 + UDP datagram. (Its UDP checksum is mandatory: Wireshark calls a 0 there
    /// an error.)
    fn udp6(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, payload: &[u8]) -> Vec<u8> {
        let udp_len = (8 + payload.len()) as u16;
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&src.octets());
        p.extend_from_slice(&dst.octets());
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&udp_len.to_be_bytes());
        p.extend_from_slice(&[0, 0]); // checksum, below
        p.extend_from_slice(payload);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[8..40]); // source and destination
        pseudo.extend_from_slice(&(udp_len as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 17]);
        pseudo.extend_from_slice(&p[40..]);
        let udp_sum = checksum(&pseudo);
        p[46..48].copy_from_slice(&udp_sum.to_be_bytes());
        p
    }

    /// An event as the kernel side writes it for `packet`: the first `HDR_BYTES` bytes.
    fn event_of(packet: &[u8]) -> Event {
        let mut ev = Event {
            l3: packet[0] >> 4,
            // `skb->len` counts from `skb->data`, which a protocol handler may have pulled past
            // a header (here 8 bytes): it is not the IP packet's length.
            len: packet.len() as u32 - 8,
            net_len: packet.len() as u32,
            ..Event::ZERO
        };
        let n = packet.len().min(HDR_BYTES);
        ev.hdr[..n].copy_from_slice(&packet[..n]);
        ev.hdr_len = n as u16;
        ev
    }

    fn record(
        event: &str,
        netns: u32,
        node: Option<&str>,
        ifname: &str,
        ifindex: u32,
        t: u64,
    ) -> Record {
        Record {
            time_ns: 1_700_000_000_000_000_000 + t,
            event: event.into(),
            skb: "0xffff88800a1b2c00".into(),
            netns,
            node: node.map(str::to_string),
            ifindex,
            ifname: ifname.into(),
            ..Default::default()
        }
    }

    /// The story's DNAT case in four hops, as `path --track-skb` reports it: the request
    /// leaves the client (A), enters B, is DNATed from port 47003 to 47004 and dropped, NO_SOCKET.
    /// Plus an IPv6 hop, a datagram longer than the snapshot, an ARP hop and an empty skb.
    fn story_capture() -> Vec<(Record, Event)> {
        let payload = b"where did my packet go?";
        let before = udp4([10, 99, 0, 1], 40000, [10, 99, 0, 2], 47003, payload);
        let after = udp4([10, 99, 0, 1], 40000, [10, 99, 0, 2], 47004, payload);
        let mut hops = Vec::new();
        let mut hop = |mut r: Record, ev: Event| {
            r.len = ev.len;
            hops.push((r, ev));
        };
        hop(
            record("net_dev_queue", 4026532001, Some("client"), "tr-a", 2, 0),
            event_of(&before),
        );
        hop(
            record("netif_receive_skb", 4026532002, None, "tr-b", 2, 7_000),
            event_of(&before),
        );
        let mut drop = record("kfree_skb", 4026532002, None, "tr-b", 2, 9_000);
        drop.reason = Some("SKB_DROP_REASON_NO_SOCKET".into());
        drop.location = Some("__udp4_lib_rcv+0x141".into());
        hop(drop, event_of(&after));
        hop(
            record(
                "net_dev_xmit",
                4026532001,
                Some("client"),
                "tr-a",
                2,
                12_000,
            ),
            event_of(&udp6(
                "fd09::1".parse().unwrap(),
                5304,
                "fd09::2".parse().unwrap(),
                4000,
                payload,
            )),
        );
        // 3000 bytes of payload: only the first HDR_BYTES are exported.
        hop(
            record(
                "net_dev_queue",
                4026532001,
                Some("client"),
                "tr-a",
                2,
                13_000,
            ),
            event_of(&udp4([10, 99, 0, 1], 40001, [10, 99, 0, 2], 53, &[7; 3000])),
        );
        let mut arp = Event {
            len: 28,
            net_len: 28,
            ..Event::ZERO
        };
        arp.hdr[..4].copy_from_slice(&[0, 1, 8, 0]);
        arp.hdr_len = 28;
        hop(
            record(
                "net_dev_queue",
                4026532001,
                Some("client"),
                "tr-a",
                2,
                14_000,
            ),
            arp,
        );
        // An skb with no data left, freed (`len` 0): an IP tuple, but no bytes to show.
        let empty = Event {
            l3: 4,
            ..Event::ZERO
        };
        hop(
            record("consume_skb", 4026532001, Some("client"), "-", 0, 15_000),
            empty,
        );
        hops
    }

    fn write_story(path: &Path) -> Vec<(Record, Event)> {
        let hops = story_capture();
        let mut pcap = PcapExport::create(path).unwrap();
        for (r, ev) in &hops {
            pcap.write(r, ev).unwrap();
        }
        assert_eq!(pcap.packets(), hops.len() as u64);
        pcap.finish().unwrap();
        hops
    }

    fn temp_file(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("tracer-pcap-{}-{name}.pcapng", std::process::id()))
    }

    #[test]
    fn the_comment_names_the_hop() {
        let hops = story_capture();
        let mut drop = hops[2].0.clone();
        assert_eq!(
            hop_comment(&drop),
            "kfree_skb NO_SOCKET at __udp4_lib_rcv+0x141 | netns 4026532002 | tr-b(2) | \
             skb 0xffff88800a1b2c00"
        );
        drop.node = Some("dind2".into());
        assert!(hop_comment(&drop).contains(" | netns 4026532002(dind2) | "));
        let mut socket = hops[0].0.clone();
        socket.ifindex = 0;
        assert_eq!(
            hop_comment(&socket),
            "net_dev_queue | netns 4026532001(client) | - | skb 0xffff88800a1b2c00"
        );
        assert_eq!(interface_name(&socket), "client:-");
        assert_eq!(interface_name(&hops[1].0), "4026532002:tr-b");
    }

    /// pcap-file reads back what was written: one interface per (netns, ifindex) with the
    /// nanosecond resolution, one packet per hop with its bytes, lengths, time and comment.
    #[test]
    fn the_capture_reads_back() {
        let path = temp_file("readback");
        let hops = write_story(&path);
        let mut reader = PcapNgReader::new(File::open(&path).unwrap()).unwrap();
        let mut interfaces = Vec::new();
        let mut packets = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(i) => interfaces.push(i.into_owned()),
                Block::EnhancedPacket(p) => packets.push(p.into_owned()),
                other => panic!("unexpected block {other:?}"),
            }
        }
        let _ = std::fs::remove_file(&path);
        assert_eq!(interfaces.len(), 4, "{interfaces:?}");
        let linktypes: Vec<DataLink> = interfaces.iter().map(|i| i.linktype).collect();
        assert_eq!(
            linktypes,
            [DataLink::RAW, DataLink::RAW, NO_IP_HEADER, NO_IP_HEADER]
        );
        for i in &interfaces {
            assert!(i
                .options
                .contains(&InterfaceDescriptionOption::IfTsResol(NANOSECONDS)));
        }
        assert!(interfaces[0]
            .options
            .contains(&InterfaceDescriptionOption::IfName("client:tr-a".into())));
        assert_eq!(packets.len(), hops.len());
        for (p, (r, ev)) in packets.iter().zip(&hops) {
            assert_eq!(p.timestamp, Duration::from_nanos(r.time_ns));
            assert_eq!(p.original_len, ev.net_len, "the IP length, not skb->len");
            let comment = EnhancedPacketOption::Comment(hop_comment(r).into());
            assert_eq!(p.options, vec![comment]);
            assert_eq!(&p.data[..], ev.headers());
        }
        // The drop hop's packet is the datagram after the DNAT: destination port 47004.
        assert_eq!(&packets[2].data[22..24], &47004u16.to_be_bytes());
        assert_eq!(packets[1].interface_id, 1, "B's tr-b is a second interface");
        assert_eq!(packets[4].data.len(), HDR_BYTES);
        assert_eq!(packets[4].original_len, 20 + 8 + 3000);
        assert_eq!(packets[5].interface_id, 2, "ARP is not written as IP");
        assert_eq!(packets[6].interface_id, 3, "nor an empty packet (client:-)");
    }

    /// Runs tshark on `path` with `args`, returns its stdout.
    fn tshark(path: &Path, args: &[&str]) -> String {
        let out = Command::new("tshark")
            .arg("-r")
            .arg(path)
            .args(args)
            .output()
            .expect("cannot run tshark: apt-get install tshark (cargo xtask setup does)");
        assert!(
            out.status.success(),
            "tshark {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The file is a capture Wireshark understands: tshark finds no malformed packet and no
    /// expert error, shows each hop's comment and interface, the tuples before and after the
    /// DNAT, and the lengths.
    #[test]
    fn tshark_opens_the_capture() {
        let path = temp_file("tshark");
        let hops = write_story(&path);
        let malformed = tshark(&path, &["-Y", "_ws.malformed"]);
        let errors = tshark(&path, &["-Y", "_ws.expert.severity == error"]);
        let fields = tshark(
            &path,
            &[
                "-T",
                "fields",
                "-E",
                "separator=;",
                "-e",
                "frame.interface_name",
                "-e",
                "frame.cap_len",
                "-e",
                "frame.len",
                "-e",
                "ip.src",
                "-e",
                "ipv6.src",
                "-e",
                "udp.srcport",
                "-e",
                "ip.dst",
                "-e",
                "ipv6.dst",
                "-e",
                "udp.dstport",
                "-e",
                "frame.comment",
            ],
        );
        let times = tshark(&path, &["-T", "fields", "-e", "frame.time_epoch"]);
        let _ = std::fs::remove_file(&path);
        assert_eq!(malformed, "", "malformed packets");
        assert_eq!(errors, "", "expert errors");
        let lines: Vec<&str> = fields.lines().collect();
        assert_eq!(lines.len(), hops.len(), "{fields}");
        let comments: Vec<String> = hops.iter().map(|(r, _)| hop_comment(r)).collect();
        assert_eq!(
            lines[0],
            format!(
                "client:tr-a;51;51;10.99.0.1;;40000;10.99.0.2;;47003;{}",
                comments[0]
            )
        );
        assert_eq!(
            lines[1],
            format!(
                "4026532002:tr-b;51;51;10.99.0.1;;40000;10.99.0.2;;47003;{}",
                comments[1]
            )
        );
        assert_eq!(
            lines[2],
            format!(
                "4026532002:tr-b;51;51;10.99.0.1;;40000;10.99.0.2;;47004;{}",
                comments[2]
            )
        );
        assert!(lines[2].ends_with("kfree_skb NO_SOCKET at __udp4_lib_rcv+0x141 | netns 4026532002 | tr-b(2) | skb 0xffff88800a1b2c00"));
        assert_eq!(
            lines[3],
            format!(
                "client:tr-a;71;71;;fd09::1;5304;;fd09::2;4000;{}",
                comments[3]
            )
        );
        assert_eq!(
            lines[4],
            format!(
                "client:tr-a;96;3028;10.99.0.1;;40001;10.99.0.2;;53;{}",
                comments[4]
            )
        );
        assert_eq!(lines[5], format!("client:tr-a;28;28;;;;;;;{}", comments[5]));
        assert_eq!(lines[6], format!("client:-;0;0;;;;;;;{}", comments[6]));
        // Nanoseconds survive: the second hop is 7 µs after the first.
        let times: Vec<&str> = times.lines().collect();
        assert_eq!(times[0], "1700000000.000000000");
        assert_eq!(times[1], "1700000000.000007000");
    }
}
