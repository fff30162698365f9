//! The capture step of `repro`: what the host's bridge carried while the client asked,
//! from the course's own capture (exercise 4's reference answer), one line per datagram,
//! the way `tcpdump -n -i br-dind` would print them.
//!
//! The packet socket is opened before the client sends, and read after its timeout: by
//! then every frame of the story waits in the socket's queue, so the step costs no time.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use solution_capture::frame::{self, IPPROTO_ICMP};
use solution_capture::{Capture, Direction, Frame};
use story::Story;

use crate::style::{bold, dim, red};

/// Open the capture on the host's bridge, inside `host`, once the kernel stamps
/// packets as they arrive (see `story::timestamps`).
pub fn start(story: &Story) -> Option<Capture> {
    let opened = story.world.node("host").and_then(|host| {
        let _stamps = story::timestamps::switch_on(host, Duration::from_secs(2))?;
        Ok(host.run(|| solution_capture::open_capture(story::HOST_BRIDGE))?)
    });
    match opened {
        Ok(capture) => Some(capture),
        Err(error) => {
            println!("  (no capture on {}: {error:#})", story::HOST_BRIDGE);
            None
        }
    }
}

/// Print the datagrams the bridge carried (UDP with port 4000, and ICMP errors).
pub fn show(capture: Option<Capture>) {
    let Some(mut capture) = capture else { return };
    let mut frames = Vec::new();
    loop {
        match capture.next_frame(Duration::ZERO) {
            Ok(Some(frame)) => frames.push(frame),
            Ok(None) => break,
            Err(error) => {
                println!("  (the capture failed: {error})");
                return;
            }
        }
    }
    println!(
        "\n  {}",
        bold(&format!(
            "On the wire: {} in host (the course's capture, exercise 4)",
            story::HOST_BRIDGE
        ))
    );
    // Times count from the first datagram shown (ARP and the like are left out).
    let first = frames
        .iter()
        .find(|f| describe(f, Duration::ZERO).is_some())
        .map(|f| f.timestamp)
        .unwrap_or_default();
    let mut shown = 0;
    for frame in &frames {
        if let Some(line) = describe(frame, first) {
            println!("  {line}");
            shown += 1;
        }
    }
    if shown == 0 {
        println!("  (no datagram of the story crossed the bridge)");
    }
}

/// One tcpdump-like line for a story datagram or an ICMP error; `None` for the rest.
fn describe(frame: &Frame, first: Duration) -> Option<String> {
    let ip = frame::ipv4(&frame.data)?;
    let time = format!(
        "{:>8.3}ms",
        (frame.timestamp.saturating_sub(first)).as_secs_f64() * 1e3
    );
    let way = match frame.direction {
        Direction::Incoming => "In ",
        Direction::Outgoing => "Out",
    };
    if let Some(udp) = frame::udp(&frame.data) {
        if udp.src.port() != story::PORT && udp.dst.port() != story::PORT {
            return None;
        }
        let tuple = format!(
            "{} > {}: UDP, length {}",
            dotted(udp.src),
            dotted(udp.dst),
            udp.payload.len()
        );
        let (tuple, note) = match explain(udp.src, udp.dst) {
            Some((note, true)) => (red(&tuple), red(&note)),
            Some((note, false)) => (tuple, dim(&note)),
            None => (tuple, String::new()),
        };
        return Some(format!("+{time} {way} {tuple}  {note}"));
    }
    if ip.protocol == IPPROTO_ICMP {
        // Destination unreachable (type 3), port unreachable (code 3): it quotes the IP
        // header and the first 8 bytes of the datagram it refuses.
        if ip.payload.get(0..2)? != [3, 3] {
            return None;
        }
        let quoted = ip.payload.get(8..)?;
        let quoted_header = usize::from(quoted.first()? & 0x0f) * 4;
        let port = quoted.get(quoted_header + 2..quoted_header + 4)?;
        let port = u16::from_be_bytes([port[0], port[1]]);
        return Some(format!(
            "+{time} {way} {} > {}: ICMP {} udp port {port} unreachable  {}",
            ip.src,
            ip.dst,
            ip.src,
            dim("dind2 refuses the answer: no socket of its own wants it")
        ));
    }
    None
}

/// What a datagram is in the story, and whether it is the one that goes wrong.
fn explain(src: SocketAddrV4, dst: SocketAddrV4) -> Option<(String, bool)> {
    let lan: Ipv4Addr = story::HOST_LAN.parse().ok()?;
    let dind1: Ipv4Addr = story::DIND1.parse().ok()?;
    let port = story::PORT;
    if *dst.ip() == lan && dst.port() == port {
        return Some((
            "the request, from dind2 (MASQUERADEd), to the proxy".into(),
            false,
        ));
    }
    if *dst.ip() == dind1 && dst.port() == port {
        return Some(("the proxy relays it to dind1".into(), false));
    }
    if *src.ip() == dind1 && src.port() == port {
        return Some(("the server's answer, back to the proxy".into(), false));
    }
    if src.port() == port && *src.ip() != lan {
        return Some((
            format!(
                "the proxy's answer: from {src}, not {lan}:{port}, the address the client wrote to"
            ),
            true,
        ));
    }
    None
}

/// tcpdump's way of writing an address and port: `172.18.0.3.34320`.
fn dotted(address: SocketAddrV4) -> String {
    format!("{}.{}", address.ip(), address.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use solution_capture::frame::tests_support::udp_frame;

    #[test]
    fn the_wrong_source_answer_is_named_as_such() {
        let frame = Frame {
            timestamp: Duration::from_millis(1),
            direction: Direction::Outgoing,
            original_len: 60,
            data: udp_frame([172, 18, 0, 1], 4000, [172, 18, 0, 3], 34320, b"hello"),
        };
        let line = describe(&frame, Duration::ZERO).unwrap();
        assert!(
            line.contains("Out 172.18.0.1.4000 > 172.18.0.3.34320: UDP, length 5"),
            "{line}"
        );
        assert!(line.contains("not 192.168.0.239:4000"), "{line}");
    }
}
