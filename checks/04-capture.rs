//! Checks for exercise 4 — Capture on the bridge.
//!
//! Each check builds the story's world exactly as the article's author had it (the
//! course's answers to exercises 1–3: the buggy proxy included), opens *your* capture on
//! `br-dind` inside `host`, lets the story's client ask once, stops the capture, and
//! reads what you caught. The pcap files are read back by `tshark` — Wireshark's own
//! dissectors — not by your code.

use std::io;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use rstest::rstest;
use story::{Outcome, Story};

use crate::under_test::{capture_to_file, frame, open_capture, Capture, Direction, Filter};

netlab::sandbox!();

/// How long the client waits for its (lost) answer.
const CLIENT_WAIT: Duration = Duration::from_secs(1);

fn at(address: &str) -> SocketAddrV4 {
    address.parse().unwrap()
}

/// The story, running: the reference world, NAT and buggy proxy — and the kernel
/// stamping packets as they arrive (it switches that on lazily: see
/// `story::timestamps`; keep the second value alive until your capture is open).
fn story() -> (Story, story::timestamps::KernelTimestamps) {
    netlab::require_sandbox();
    let story = Story::reference(false).unwrap_or_else(|e| panic!("the story's world: {e:#}"));
    let host = story.world.node("host").unwrap();
    let stamps = story::timestamps::switch_on(host, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("kernel timestamps: {e:#}"));
    (story, stamps)
}

/// Your capture, opened by a thread inside `node`.
fn open_in(story: &Story, node: &str, interface: &str) -> Capture {
    story
        .world
        .node(node)
        .unwrap()
        .run(|| open_capture(interface))
        .unwrap_or_else(|e| panic!("open_capture(\"{interface}\") inside {node}: {e}"))
}

/// The story's client asks once; the server must have answered (or nothing was lost).
fn client_asks(story: &Story) {
    let to = SocketAddr::new(story::HOST_LAN.parse().unwrap(), story::PORT);
    let outcome = story.client_ask(to, b"hello", CLIENT_WAIT).unwrap();
    assert!(
        matches!(outcome, Outcome::NoReply { .. }),
        "the story's client should hear nothing (the reference proxy is buggy); got {outcome:?}"
    );
    story
        .server_log(Duration::from_secs(2))
        .expect("the server should have received the client's datagram");
}

/// A pcap file in the temporary directory, removed when the check passes (kept, and
/// named in the failure, when it does not).
struct PcapFile(PathBuf);

impl PcapFile {
    fn new(name: &str) -> PcapFile {
        PcapFile(
            std::env::temp_dir().join(format!("course-capture-{}-{name}.pcap", std::process::id())),
        )
    }
}

impl Drop for PcapFile {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

/// `capture_to_file` running on a thread of its own, until [`Running::stop`].
struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<io::Result<usize>>,
}

fn start_capture_to_file(
    mut capture: Capture,
    path: &Path,
    filter: Option<Box<Filter>>,
) -> Running {
    let stop = Arc::new(AtomicBool::new(false));
    let path = path.to_path_buf();
    let thread = std::thread::spawn({
        let stop = Arc::clone(&stop);
        move || capture_to_file(&mut capture, &path, filter.as_deref(), &stop)
    });
    Running { stop, thread }
}

impl Running {
    /// Set the stop flag and wait for the capture to finish writing its file.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.join() {
            Ok(result) => result.unwrap_or_else(|e| panic!("capture_to_file failed: {e}")),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

/// Run `tshark -r FILE ARGS…` and return what it printed. As the learner, not as root:
/// the file comes in on stdin, and when this check runs as real root, tshark runs as
/// the user who called sudo (or `nobody`). Skips if tshark is not installed.
fn tshark(file: &Path, args: &[&str]) -> String {
    let program = netlab::programs::find("tshark");
    if !program.is_file() {
        netlab::skip!(
            "tshark is not installed: `sudo apt-get install tshark` (Debian/Ubuntu; `cargo xtask setup` \
             installs it as root), or your distribution's wireshark-cli/tshark package"
        );
    }
    let input = std::fs::File::open(file)
        .unwrap_or_else(|e| panic!("your capture wrote no file {}: {e}", file.display()));
    let mut command = Command::new(program);
    command
        .args(["-r", "-"])
        .args(args)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", std::env::temp_dir());
    let sandbox = netlab::require_sandbox();
    if sandbox.real_root && !sandbox.user_namespace {
        use std::os::unix::process::CommandExt;
        let id = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
        command
            .uid(id("SUDO_UID").unwrap_or(65_534))
            .gid(id("SUDO_GID").unwrap_or(65_534));
    }
    let output = command.output().expect("cannot run tshark");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let hint = match stderr.contains("damaged") || stderr.contains("corrupt") || stderr.contains("format") {
        true => "\n(is the file header right: magic number, version 2.4, link type Ethernet = 1? is each \
                 record's included length at most its original length?)",
        false => "",
    };
    assert!(
        output.status.success(),
        "tshark could not read your capture {} ({}):\n{stderr}{hint}",
        file.display(),
        output.status
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One UDP datagram as tshark reads it from the file.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    time: f64,
    src: SocketAddrV4,
    dst: SocketAddrV4,
}

/// The IPv4 UDP datagrams of a capture (not those quoted inside ICMP errors), as tshark
/// decodes them, in the order of the file.
fn udp_datagrams(file: &Path, display_filter: &str) -> Vec<Seen> {
    let filter = format!("ip && udp && !icmp && ({display_filter})");
    let text = tshark(
        file,
        &[
            "-Y",
            &filter,
            "-T",
            "fields",
            "-E",
            "separator=,",
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "udp.srcport",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
        ],
    );
    text.lines()
        .map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let parsed = (|| {
                Some(Seen {
                    time: f.first()?.parse().ok()?,
                    src: SocketAddrV4::new(f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?),
                    dst: SocketAddrV4::new(f.get(3)?.parse().ok()?, f.get(4)?.parse().ok()?),
                })
            })();
            parsed.unwrap_or_else(|| panic!("unexpected line from tshark: {line:?}"))
        })
        .collect()
}

fn seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn the_capture_opens_in_tshark_and_shows_the_wrong_source_on_the_bridge() {
    let (story, _stamps) = story();
    let pcap = PcapFile::new("story");
    let opened_at = SystemTime::now();
    let running = start_capture_to_file(open_in(&story, "host", "br-dind"), &pcap.0, None);
    client_asks(&story);
    let written = running.stop();
    let stopped_at = SystemTime::now();

    // Wireshark's dissectors read every frame of the file without complaint.
    let frames = tshark(&pcap.0, &["-T", "fields", "-e", "frame.number"]);
    assert_eq!(
        frames.lines().count(),
        written,
        "capture_to_file said it wrote {written} frames; tshark reads {} in {}",
        frames.lines().count(),
        pcap.0.display()
    );
    let malformed = tshark(
        &pcap.0,
        &[
            "-Y",
            "_ws.malformed || _ws.expert.severity == error",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ],
    );
    assert!(
        malformed.trim().is_empty(),
        "tshark finds malformed frames (numbers {}) in {}: each record must hold a whole frame from its \
         Ethernet header on, with the length the kernel reported",
        malformed.split_whitespace().collect::<Vec<_>>().join(", "),
        pcap.0.display()
    );

    // The story's four datagrams, in this order, on the bridge.
    let seen = udp_datagrams(&pcap.0, "udp.port == 4000");
    let expected_order =
        "1. the request arriving from dind2: 172.18.0.3:34320 > 192.168.0.239:4000\n\
         2. the proxy relaying it to dind1: 172.18.0.1:P > 172.18.0.2:4000\n\
         3. the server's answer, back to the proxy: 172.18.0.2:4000 > 172.18.0.1:P\n\
         4. the proxy's answer to dind2: 172.18.0.1:4000 > 172.18.0.3:34320";
    assert_eq!(
        seen.len(),
        4,
        "the bridge should carry exactly four datagrams with port 4000:\n{expected_order}\n\
         tshark reads these in {}: {seen:#?}",
        pcap.0.display()
    );
    let proxy = seen[1].src;
    let expected = [
        (at("172.18.0.3:34320"), at("192.168.0.239:4000")),
        (proxy, at("172.18.0.2:4000")),
        (at("172.18.0.2:4000"), proxy),
        (at("172.18.0.1:4000"), at("172.18.0.3:34320")),
    ];
    let tuples: Vec<_> = seen.iter().map(|s| (s.src, s.dst)).collect();
    assert_eq!(
        tuples, expected,
        "the datagrams on the bridge, in order, should be:\n{expected_order}"
    );
    assert_eq!(
        proxy.ip().to_string(),
        story::HOST_BRIDGE_ADDRESS,
        "the relay leaves from the host's bridge address"
    );
    // The wrong source, visible on the wire: the client wrote to 192.168.0.239:4000.
    assert_ne!(
        seen[3].src,
        at("192.168.0.239:4000"),
        "with the buggy proxy the answer cannot come from the address the client wrote to"
    );

    // The timestamps are the kernel's clock: each datagram is caused by the one
    // before, so they increase; all lie within the capture's lifetime.
    for pair in seen.windows(2) {
        assert!(
            pair[0].time < pair[1].time,
            "timestamps must increase along the story (each datagram causes the next): {seen:#?}"
        );
    }
    let (from, to) = (seconds(opened_at) - 1.0, seconds(stopped_at));
    for datagram in &seen {
        assert!(
            (from..=to).contains(&datagram.time),
            "frame time {} is not within the capture ({from}..{to}): timestamps come from the kernel's \
             SCM_TIMESTAMPNS (seconds and nanoseconds since the Unix epoch), written with nanosecond \
             resolution",
            datagram.time
        );
    }
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn a_filtered_capture_keeps_exactly_the_frames_its_filter_accepts() {
    let (story, _stamps) = story();
    // Two captures of the same run, side by side on the same interface: one keeps
    // everything, one keeps only UDP datagrams from or to port 4000.
    let (all, filtered) = (PcapFile::new("all"), PcapFile::new("filtered"));
    let port_4000: Box<Filter> = Box::new(|bytes: &[u8]| {
        frame::udp(bytes).is_some_and(|udp| udp.src.port() == 4000 || udp.dst.port() == 4000)
    });
    let everything = start_capture_to_file(open_in(&story, "host", "br-dind"), &all.0, None);
    let only_4000 = start_capture_to_file(
        open_in(&story, "host", "br-dind"),
        &filtered.0,
        Some(port_4000),
    );
    client_asks(&story);
    let (written_all, written_filtered) = (everything.stop(), only_4000.stop());

    // tshark applies the same filter to the unfiltered file.
    let expected = udp_datagrams(&all.0, "udp.port == 4000");
    let kept = udp_datagrams(&filtered.0, "frame");
    assert_eq!(
        expected.len(),
        4,
        "the unfiltered capture should hold the story's four datagrams: {expected:#?}"
    );
    assert_eq!(
        kept, expected,
        "the filtered capture should hold exactly the port-4000 datagrams of the unfiltered one, same \
         order, same timestamps"
    );
    assert_eq!(
        written_filtered,
        kept.len(),
        "every frame the filter kept is a port-4000 datagram; the filtered file holds {written_filtered} \
         frames"
    );
    assert!(
        written_all > written_filtered,
        "the unfiltered capture should hold more than the datagrams (ARP, dind2's ICMP port unreachable): \
         {written_all} frames"
    );
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn each_frame_says_whether_the_host_received_or_sent_it() {
    let (story, _stamps) = story();
    let mut capture = open_in(&story, "host", "br-dind");
    client_asks(&story);
    // Read only now, a second after the client sent: the kernel's timestamps say when
    // each frame crossed the bridge, not when we read it.
    let reading_from = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = capture.next_frame(Duration::ZERO).unwrap() {
        frames.push(frame);
    }
    let story_frames = frames
        .iter()
        .filter(|f| frame::udp(&f.data).is_some_and(|u| u.dst.port() == 4000));
    for f in story_frames {
        assert!(
            f.timestamp + CLIENT_WAIT / 2 < reading_from,
            "a frame read {:?} after the client sent is stamped {:?} before it was read: the timestamp \
             must be the kernel's (the SCM_TIMESTAMPNS control message), not the time you read the frame",
            CLIENT_WAIT,
            reading_from.saturating_sub(f.timestamp)
        );
    }
    let datagrams: Vec<(Direction, SocketAddrV4, SocketAddrV4)> = frames
        .iter()
        .filter_map(|f| {
            let udp = frame::udp(&f.data)?;
            (udp.src.port() == 4000 || udp.dst.port() == 4000).then_some((
                f.direction,
                udp.src,
                udp.dst,
            ))
        })
        .collect();
    let directions: Vec<Direction> = datagrams.iter().map(|d| d.0).collect();
    assert_eq!(
        directions,
        [
            Direction::Incoming,
            Direction::Outgoing,
            Direction::Incoming,
            Direction::Outgoing
        ],
        "on br-dind the host receives the request, sends the relay, receives the server's answer and \
         sends its own answer (PACKET_OUTGOING in the sender's sockaddr_ll); your frames: {datagrams:#?}"
    );
    for f in &frames {
        assert_eq!(
            f.data.len(),
            f.original_len,
            "the story's frames are small: each should be captured whole"
        );
    }
}

#[rstest]
#[timeout(netlab::time_limit(30))]
fn a_capture_sees_only_the_interface_it_is_bound_to() {
    let (story, _stamps) = story();
    let mut bridge = open_in(&story, "host", "br-dind");
    let mut lan = open_in(&story, "host", "lan0");
    // The host sends a datagram to the peer on its LAN link: it crosses lan0, never
    // br-dind.
    let marker = b"only on lan0";
    story
        .world
        .node("host")
        .unwrap()
        .run(|| std::net::UdpSocket::bind("192.168.0.239:0")?.send_to(marker, "192.168.0.10:9"))
        .unwrap();
    let drain = |capture: &mut Capture| {
        let mut frames = Vec::new();
        while let Some(frame) = capture.next_frame(Duration::from_millis(500)).unwrap() {
            frames.push(frame);
        }
        frames
    };
    let carries_marker =
        |f: &crate::under_test::Frame| frame::udp(&f.data).is_some_and(|udp| udp.payload == marker);
    let on_lan = drain(&mut lan);
    assert!(
        on_lan.iter().any(carries_marker),
        "a capture on lan0 should see the host's datagram to 192.168.0.10 ({} frames seen)",
        on_lan.len()
    );
    let on_bridge = drain(&mut bridge);
    assert!(
        !on_bridge.iter().any(carries_marker),
        "a capture on br-dind saw a datagram that only crossed lan0: bind the packet socket to the \
         interface's index (sockaddr_ll.sll_ifindex), not to 0 (every interface)"
    );
}
