//! Root tests with real drops: each test makes its own network namespaces, sends datagrams only
//! inside them, runs the built `tracer` binary with `--json --ready-file`, and asserts what the
//! kernel reported. Nothing here adds an address, route, link or rule in the root namespace; every
//! test checks afterwards that the root namespace and the loaded BPF programs are as before.
//!
//! Without root these tests print `SKIPPED: …` and fail: a skip is never a pass.

use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

#[path = "common/filter_cases.rs"]
mod filter_cases;

/// Root tests run one at a time: each checks that the BPF programs of ITS tracer are gone, and
/// that is only meaningful when no other tracer of ours is starting or stopping meanwhile.
static SERIAL: Mutex<()> = Mutex::new(());

fn need_root() -> MutexGuard<'static, ()> {
    if !nix::unistd::geteuid().is_root() {
        let msg = "SKIPPED: needs root (run: cargo test --no-run, then sudo -E the test binary \
                   it prints, e.g. sudo -E target/debug/deps/root-…)";
        println!("{msg}");
        panic!("{msg}");
    }
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace of our own: a thread that called `unshare(CLONE_NEWNET)` and then runs
/// the closures it is given. Sockets it creates, and processes it starts, live in that namespace.
/// The namespace dies with the thread (when this value is dropped).
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    inode: u32,
    /// `/proc/PID/task/TID/ns/net`, usable by `ip link set … netns PATH`.
    path: PathBuf,
}

impl Netns {
    fn new() -> Netns {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let (info_tx, info_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Changes only this thread's network namespace.
            let result = if let Err(errno) = unshare(CloneFlags::CLONE_NEWNET) {
                Err(errno.to_string())
            } else {
                let path = PathBuf::from(format!(
                    "/proc/{}/task/{}/ns/net",
                    std::process::id(),
                    nix::unistd::gettid()
                ));
                let inode = std::fs::metadata("/proc/thread-self/ns/net")
                    .map(|m| m.ino() as u32)
                    .map_err(|e| e.to_string());
                inode.map(|i| (i, path))
            };
            let ok = result.is_ok();
            info_tx.send(result).unwrap();
            if ok {
                for job in jobs_rx {
                    job();
                }
            }
        });
        let (inode, path) = info_rx
            .recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("unshare(CLONE_NEWNET): {e}"));
        let ns = Netns {
            jobs: Some(jobs_tx),
            thread: Some(thread),
            inode,
            path,
        };
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs `f` on the namespace's thread and returns its result.
    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> R {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .unwrap()
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .unwrap();
        rx.recv().expect("the namespace thread died")
    }

    /// Runs a shell command inside the namespace; panics with its output if it fails.
    fn sh(&self, cmd: &str) {
        let cmd = cmd.to_string();
        let out = self.run(move || Command::new("sh").arg("-c").arg(&cmd).output());
        let out = out.expect("cannot run sh");
        assert!(
            out.status.success(),
            "command failed in test namespace: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends one UDP datagram from an ephemeral port; returns that port.
    fn send_udp(&self, dst: &str) -> u16 {
        let dst = dst.to_string();
        self.run(move || {
            let bind = if dst.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(bind).unwrap();
            s.send_to(b"where did my packet go?", &dst).unwrap();
            s.local_addr().unwrap().port()
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The state of the root network namespace that no test may change.
fn root_ns_state() -> String {
    let mut s = String::new();
    for args in [
        &["-br", "link"][..],
        &["route"][..],
        &["-6", "route"][..],
        &["netns"][..],
    ] {
        let out = Command::new("ip").args(args).output().expect("ip");
        s.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    s
}

/// IDs of loaded BPF programs (from `bpftool prog show`).
fn bpf_prog_ids() -> Vec<u32> {
    let out = Command::new("bpftool")
        .args(["prog", "show"])
        .output()
        .expect("bpftool (apt-get install bpftool)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// A running `tracer` binary. Its stdout and stderr are read by threads as they come: a
/// tracer that prints a lot must never block on a full pipe.
struct Tracer {
    child: Child,
    ready: PathBuf,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

impl Tracer {
    /// Starts `tracer ARGS --json --ready-file …` and waits until it is attached.
    fn start(args: &[&str]) -> Tracer {
        Tracer::start_with_env(args, &[])
    }

    /// Start the tracer with extra environment variables.
    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Tracer {
        let ready = std::env::temp_dir().join(format!(
            "tracer-test-ready-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        let _ = std::fs::remove_file(&ready);
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(args)
            .envs(env.iter().copied())
            .arg("--json")
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the tracer binary");
        let stdout = Some(drain(child.stdout.take().unwrap()));
        let stderr = Some(drain(child.stderr.take().unwrap()));
        let mut t = Tracer {
            child,
            ready,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !t.ready.exists() {
            if let Some(status) = t.child.try_wait().unwrap() {
                let (_, err) = t.output();
                panic!("tracer exited before it was ready ({status}): {err}");
            }
            assert!(Instant::now() < deadline, "tracer not ready after 30 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        t
    }

    /// Waits for the tracer to exit (it was started with --count/--duration) and returns
    /// (stdout JSON objects, stderr). After 30 s it is sent SIGTERM, after 35 s SIGKILL.
    fn finish(mut self) -> (Vec<Value>, String) {
        let start = Instant::now();
        let mut termed = false;
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) && !termed {
                // Our own child, not yet waited for: its pid cannot have been reused.
                let _ = kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM);
                termed = true;
            }
            if start.elapsed() > Duration::from_secs(35) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (out, err) = self.output();
        let events = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect();
        (events, err)
    }

    /// Everything the tracer printed (call after it exited).
    fn output(&mut self) -> (String, String) {
        let out = self
            .stdout
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap())
            .unwrap_or_default();
        (out, err)
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.ready);
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

/// Runs `body` and checks that the root namespace and the set of BPF programs are unchanged
/// afterwards (so the tracer left nothing behind).
fn hygienic(body: impl FnOnce()) {
    let before_ns = root_ns_state();
    let before_progs = bpf_prog_ids();
    body();
    // Program fds close when the tracer process exits; give the kernel a moment to free them.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leftover: Vec<u32> = bpf_prog_ids()
            .into_iter()
            .filter(|id| !before_progs.contains(id))
            .collect();
        if leftover.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "BPF programs left behind: {leftover:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        root_ns_state(),
        before_ns,
        "the root network namespace changed"
    );
}

fn inode_arg(ns: &Netns) -> String {
    ns.inode.to_string()
}

#[test]
fn udp_to_a_closed_port_ipv4_is_no_socket() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let t = Tracer::start(&[
            "drops",
            "--netns",
            &ino,
            "--count",
            "1",
            "--duration",
            "20",
            "udp and dst port 4000",
        ]);
        let sport = ns.send_udp("127.0.0.1:4000");
        let (events, err) = t.finish();
        assert_eq!(events.len(), 1, "stderr: {err}");
        let e = &events[0];
        assert_eq!(e["reason"], "SKB_DROP_REASON_NO_SOCKET", "{e}");
        assert_eq!(e["netns"], ns.inode, "{e}");
        assert_eq!(e["proto"], "udp");
        assert_eq!(e["src"], "127.0.0.1");
        assert_eq!(e["dst"], "127.0.0.1");
        assert_eq!(e["sport"], sport);
        assert_eq!(e["dport"], 4000);
        assert_eq!(e["ifname"], "lo");
        assert_udp_receive_function(&e["location"], false);
        assert!(err.contains("0 lost"), "{err}");
    });
}

/// The drop of a datagram to a closed port happens in the kernel's UDP receive function. Its
/// NAME depends on the kernel (`__udp4_lib_rcv`/`__udp6_lib_rcv` up to 6.x, `udp_rcv`/`udpv6_rcv`
/// on 7.2, where the former were folded in): assert what holds on all of them — the location
/// symbolises (`function+0xoffset`, not a bare address) to a function whose name says UDP and
/// receive (and 6 for IPv6).
fn assert_udp_receive_function(location: &Value, ipv6: bool) {
    let loc = location.as_str().unwrap_or_default();
    let (function, offset) = loc
        .split_once("+0x")
        .unwrap_or_else(|| panic!("location {loc:?} is not symbolised as function+0xoffset"));
    assert!(u64::from_str_radix(offset, 16).is_ok(), "{loc}");
    assert!(
        function.contains("udp") && function.contains("rcv"),
        "a datagram to a closed port is dropped in the UDP receive path, not in {loc}"
    );
    assert_eq!(function.contains('6'), ipv6, "IPv6 or not: {loc}");
}

#[test]
fn udp_to_a_closed_port_ipv6_is_no_socket() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let t = Tracer::start(&[
            "drops",
            "--netns",
            &ino,
            "--count",
            "1",
            "--duration",
            "20",
            "ip6",
            "and",
            "udp",
        ]);
        let sport = ns.send_udp("[::1]:4001");
        let (events, err) = t.finish();
        assert_eq!(events.len(), 1, "stderr: {err}");
        let e = &events[0];
        assert_eq!(e["reason"], "SKB_DROP_REASON_NO_SOCKET", "{e}");
        assert_eq!(e["netns"], ns.inode);
        assert_eq!(e["src"], "::1");
        assert_eq!(e["dst"], "::1");
        assert_eq!(e["sport"], sport);
        assert_eq!(e["dport"], 4001);
        assert_udp_receive_function(&e["location"], true);
    });
}

#[test]
fn the_filter_runs_in_the_kernel() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        // Three datagrams are dropped (NO_SOCKET); only one matches, the others are filtered
        // out in the kernel, never sent to userspace.
        let t = Tracer::start(&[
            "drops",
            "--netns",
            &ino,
            "--count",
            "2",
            "--duration",
            "5",
            "dst host 127.0.0.3 and dst port 4005",
        ]);
        ns.send_udp("127.0.0.1:4004");
        ns.send_udp("127.0.0.1:4005");
        ns.send_udp("127.0.0.3:4004");
        ns.send_udp("127.0.0.3:4005");
        let (events, err) = t.finish();
        assert_eq!(events.len(), 1, "stderr: {err}");
        assert_eq!(events[0]["dst"], "127.0.0.3");
        assert_eq!(events[0]["dport"], 4005);
    });
}

#[test]
fn nft_drop_rule_is_netfilter_drop() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        ns.sh("nft add table inet tracer_test && \
             nft add chain inet tracer_test input '{ type filter hook input priority 0; }' && \
             nft add rule inet tracer_test input udp dport 4002 drop");
        let ino = inode_arg(&ns);
        let t = Tracer::start(&[
            "drops",
            "--netns",
            &ino,
            "--count",
            "1",
            "--duration",
            "20",
            "udp and port 4002",
        ]);
        ns.send_udp("127.0.0.1:4002");
        let (events, err) = t.finish();
        assert_eq!(events.len(), 1, "stderr: {err}");
        assert_eq!(events[0]["reason"], "SKB_DROP_REASON_NETFILTER_DROP");
        assert_eq!(events[0]["dport"], 4002);
    });
}

/// Namespaces A (10.99.0.1) and B (10.99.0.2) joined by a veth cable; B DNATs UDP port 47003
/// to 47004, where nothing listens — so an skb sent from A to B:47003 changes its tuple in B
/// and dies there with NO_SOCKET.
fn cable_with_dnat_to_a_closed_port() -> (Netns, Netns) {
    let a = Netns::new();
    let b = Netns::new();
    a.sh(&format!(
        "ip link add name tr-a type veth peer name tr-b netns {} && \
         ip addr add 10.99.0.1/24 dev tr-a && ip link set tr-a up",
        b.path.display()
    ));
    b.sh(
        "ip addr add 10.99.0.2/24 dev tr-b && ip link set tr-b up && \
         nft add table ip tracer_test && \
         nft add chain ip tracer_test pre '{ type nat hook prerouting priority -100; }' && \
         nft add rule ip tracer_test pre udp dport 47003 dnat to 10.99.0.2:47004",
    );
    (a, b)
}

/// Two namespaces joined by a veth cable; B DNATs port 47003 to 47004, where nothing listens.
/// `path --track-skb` with the filter `dst port 47003` must follow the skb from A into B and to
/// its drop even though, after the DNAT, its tuple says 47004.
#[test]
fn path_track_skb_follows_the_skb_through_nat() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let t = Tracer::start(&[
            "path",
            "--track-skb",
            "--duration",
            "4",
            "udp and dst port 47003",
        ]);
        let sport = a.send_udp("10.99.0.2:47003");
        let (events, err) = t.finish();
        let dump = events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        // Several skbs may carry the datagram (e.g. one parked while ARP resolves the neighbour
        // is consumed and a copy is sent): follow the one that ends in the drop.
        let drop = events
            .iter()
            .find(|e| e["sport"] == sport && e["event"] == "kfree_skb")
            .unwrap_or_else(|| panic!("our datagram's drop not seen; stderr: {err}\n{dump}"));
        let skb = drop["skb"].as_str().unwrap();
        let ours: Vec<&Value> = events.iter().filter(|e| e["skb"] == skb).collect();
        assert!(
            ours.iter()
                .any(|e| e["netns"] == a.inode && e["event"] == "net_dev_queue"),
            "not seen leaving A:\n{dump}"
        );
        assert!(
            ours.iter()
                .any(|e| e["netns"] == b.inode && e["dport"] == 47003),
            "not seen entering B before the DNAT:\n{dump}"
        );
        let last = ours.last().unwrap();
        assert_eq!(last["event"], "kfree_skb", "{dump}");
        assert_eq!(last["reason"], "SKB_DROP_REASON_NO_SOCKET", "{dump}");
        assert_eq!(
            last["dport"], 47004,
            "after DNAT the filter no longer matches: --track-skb kept it\n{dump}"
        );
        assert_eq!(last["netns"], b.inode);
    });
}

#[test]
fn explain_finds_the_nat_near_miss() {
    explain_near_miss(&[]);
}

/// The same, with the conntrack table read over netlink — as on kernels built without
/// `/proc/net/nf_conntrack` (forced with `NETLAB_CONNTRACK_SOURCE`).
#[test]
fn explain_reads_conntrack_over_netlink_where_proc_is_missing() {
    explain_near_miss(&[("NETLAB_CONNTRACK_SOURCE", "netlink")]);
}

fn explain_near_miss(env: &[(&str, &str)]) {
    let _serial = need_root();
    hygienic(|| {
        // The story's failure in one namespace: a client talks to 10.98.0.1:4000, so conntrack
        // expects the reply from 10.98.0.1:4000; a "proxy" answers from 10.98.0.2:4000 instead
        // (another address of the same machine, as docker-proxy did), and the client's port has
        // no socket for that stray answer. A `ct state` rule turns conntrack on in the namespace.
        let ns = Netns::new();
        ns.sh(
            "ip addr add 10.98.0.1/32 dev lo && ip addr add 10.98.0.2/32 dev lo && \
             nft add table ip tracer_test && \
             nft add chain ip tracer_test out '{ type filter hook output priority 0; }' && \
             nft add rule ip tracer_test out ct state new counter",
        );
        let ino = inode_arg(&ns);
        let t = Tracer::start_with_env(
            &[
                "drops",
                "--explain",
                "--netns",
                &ino,
                "--count",
                "1",
                "--duration",
                "20",
                "udp and src port 4000",
            ],
            env,
        );
        let client_port = ns.run(|| {
            let server = UdpSocket::bind("10.98.0.1:4000").unwrap();
            let client = UdpSocket::bind("10.98.0.1:0").unwrap();
            client.send_to(b"request", "10.98.0.1:4000").unwrap();
            let port = client.local_addr().unwrap().port();
            drop(client); // the client gave up: its port is closed now
                          // The answer comes from another address of the machine, like docker-proxy's.
            let proxy = UdpSocket::bind("10.98.0.2:4000").unwrap();
            proxy.send_to(b"reply", ("10.98.0.1", port)).unwrap();
            drop(server);
            port
        });
        let (events, err) = t.finish();
        assert_eq!(events.len(), 1, "stderr: {err}");
        let e = &events[0];
        assert_eq!(e["reason"], "SKB_DROP_REASON_NO_SOCKET", "{e}");
        assert_eq!(e["dport"], client_port);
        let text = e["explain"].as_str().unwrap_or_default();
        assert!(
            text.starts_with(
                "expected the reply from 10.98.0.1:4000, got it from 10.98.0.2:4000 — conntrack could not reverse the NAT"
            ),
            "{e}"
        );
    });
}

#[test]
fn a_malformed_filter_fails_before_loading() {
    // No root needed: the filter is checked before anything touches the kernel.
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(["drops", "udp", "or", "ether", "host", "02:00:00:00:00:01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown filter word \"ether\""), "{err}");
    assert!(err.contains("supported: and/&&, or/||"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

/// Reads `tracer: N events, M lost …` from the tracer's stderr.
fn summary(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("tracer: ") && l.contains(" lost"))
        .unwrap_or_else(|| panic!("no summary line in: {stderr}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].parse().unwrap(), words[3].parse().unwrap())
}

/// A ring buffer of one page cannot hold a burst: the loss must be counted and reported.
#[test]
fn lost_events_are_counted_not_hidden() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let t = Tracer::start(&[
            "path",
            "--ring-kib",
            "4",
            "--netns",
            &ino,
            "--duration",
            "2",
            "udp",
        ]);
        ns.run(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..2000 {
                let _ = s.send_to(b"burst", "127.0.0.1:4009");
            }
        });
        let (events, err) = t.finish();
        let (printed, lost) = summary(&err);
        assert_eq!(printed, events.len() as u64);
        assert!(
            lost > 0,
            "2000 datagrams × several tracepoints fit in 4 KiB? {err}"
        );
    });
}

/// Ctrl-C / SIGTERM: detach, print the summary, exit 0.
#[test]
fn sigterm_exits_cleanly_with_a_summary() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let mut t = Tracer::start(&["drops", "--netns", &ino]);
        // Our own child, not yet waited for: its pid cannot have been reused.
        kill(Pid::from_raw(t.child.id() as i32), Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let status = loop {
            if let Some(s) = t.child.try_wait().unwrap() {
                break s;
            }
            assert!(Instant::now() < deadline, "tracer ignored SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        };
        let (_, err) = t.output();
        assert!(status.success(), "{status}: {err}");
        assert_eq!(summary(&err), (0, 0));
    });
}

/// The contrast to `path_track_skb_follows_the_skb_through_nat`: without `--track-skb` the
/// filter `dst port 47003` loses the skb once DNAT rewrote it to 47004 — its drop is not shown.
#[test]
fn path_without_track_skb_loses_the_skb_after_nat() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let t = Tracer::start(&["path", "--duration", "3", "udp and dst port 47003"]);
        let sport = a.send_udp("10.99.0.2:47003");
        let (events, err) = t.finish();
        let ours: Vec<&Value> = events.iter().filter(|e| e["sport"] == sport).collect();
        assert!(
            ours.iter().any(|e| e["netns"] == b.inode),
            "seen entering B: {err}"
        );
        assert!(
            !ours.iter().any(|e| e["event"] == "kfree_skb"),
            "without --track-skb the drop (dport 47004) must not match"
        );
    });
}

/// `--explain` must read the conntrack table of a namespace that no process is in any more but
/// a file descriptor still holds (as `netlab::Netns` does): through a helper thread that `setns`es
/// into it and reads `/proc/thread-self/net/nf_conntrack`.
#[test]
fn conntrack_of_a_namespace_held_only_by_a_file_descriptor() {
    let _serial = need_root();
    hygienic(|| {
        let (fd, inode) = std::thread::spawn(|| {
            // Changes only this thread's network namespace; the thread ends below.
            unshare(CloneFlags::CLONE_NEWNET).unwrap();
            let run = |cmd: &str| {
                let ok = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
                assert!(ok.success(), "{cmd}");
            };
            run("ip link set lo up && nft add table ip tracer_test && \
                 nft add chain ip tracer_test out '{ type filter hook output priority 0; }' && \
                 nft add rule ip tracer_test out ct state new counter");
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"remember me", "127.0.0.1:4010").unwrap();
            let fd = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
            let inode = fd.metadata().unwrap().ino() as u32;
            (fd, inode)
        })
        .join()
        .unwrap();
        // Let the thread's task disappear from /proc: only the fd holds the namespace now.
        std::thread::sleep(Duration::from_millis(100));
        let text = tracer::explain::read_conntrack(inode).unwrap();
        let entries = tracer::explain::parse_conntrack(&text);
        assert!(
            entries
                .iter()
                .any(|e| e.original.dport == 4010 && e.proto == "udp"),
            "{text}"
        );
        drop(fd);
    });
}

/// The key by which a packet is recognised on both sides: protocol, addresses, ports as the
/// tracer's JSON shows them (`-` for none); every non-IP packet (ARP) is `other`.
fn key_of_event(e: &Value) -> String {
    if e["src"].is_null() {
        return "other".into();
    }
    let s = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    format!(
        "{} {} {} {} {}",
        e["ip_proto"],
        s(&e["src"]),
        s(&e["dst"]),
        s(&e["sport"]),
        s(&e["dport"])
    )
}

fn key_of_frame(frame: &[u8]) -> String {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use tracer_common::program::{K_IP, K_IP6};
    let p = tracer::filter::packet_of_frame(frame);
    let ip = |w: [u32; 4]| -> IpAddr {
        let b: Vec<u8> = w.iter().flat_map(|x| x.to_ne_bytes()).collect();
        if p.kind == K_IP {
            Ipv4Addr::new(b[0], b[1], b[2], b[3]).into()
        } else {
            Ipv6Addr::from(<[u8; 16]>::try_from(&b[..]).unwrap()).into()
        }
    };
    if p.kind != K_IP && p.kind != K_IP6 {
        return "other".into();
    }
    // The tracer shows TCP/UDP ports, 0 for an IPv4 fragment after the first.
    let (sp, dp) = match (p.proto, p.ports_ok) {
        (6 | 17, 1) => (p.sport.to_string(), p.dport.to_string()),
        (6 | 17, _) => ("0".into(), "0".into()),
        _ => ("-".into(), "-".into()),
    };
    format!("{} {} {} {sp} {dp}", p.proto, ip(p.saddr), ip(p.daddr))
}

/// Traffic of many kinds from A to B over a veth cable: UDP to closed ports (so ICMP and ICMPv6
/// "port unreachable" errors come back), TCP to closed ports (RST), a UDP datagram too big for
/// the cable (IPv4 fragments), and the ARP and IPv6 neighbour discovery that these cause.
fn varied_traffic(a: &Netns) {
    a.sh("ip neigh flush all");
    a.run(|| {
        for (src, dst) in [
            ("10.9.0.1:5301", "10.9.0.2:53"),
            ("10.9.0.1:5302", "10.9.0.2:4000"),
            ("[fd09::1]:5303", "[fd09::2]:53"),
            ("[fd09::1]:5304", "[fd09::2]:4000"),
        ] {
            let s = UdpSocket::bind(src).unwrap();
            s.send_to(b"where did my packet go?", dst).unwrap();
            if src.ends_with("5302") {
                s.send_to(&[7u8; 3000], dst).unwrap(); // fragments
            }
        }
        for dst in ["10.9.0.2:80", "[fd09::2]:443"] {
            let _ =
                std::net::TcpStream::connect_timeout(&dst.parse().unwrap(), Duration::from_secs(1));
        }
    });
    // Let the last answers arrive.
    std::thread::sleep(Duration::from_millis(300));
}

/// The real in-kernel evaluation: for each expression the tracer (`path`, in namespace A) and
/// tcpdump (on A's end of the cable) watch the same traffic; the packets the tracer reports must
/// be exactly those tcpdump's filter accepts — compared by protocol, addresses and ports.
#[test]
fn the_kernel_filter_decides_like_tcpdump() {
    let _serial = need_root();
    hygienic(|| {
        let a = Netns::new();
        let b = Netns::new();
        a.sh(&format!(
            "ip link set lo up && \
             ip link add name tf-a type veth peer name tf-b netns {} && \
             ip addr add 10.9.0.1/24 dev tf-a && ip addr add fd09::1/64 dev tf-a nodad && \
             ip link set tf-a up",
            b.path.display()
        ));
        b.sh("ip link set lo up && ip addr add 10.9.0.2/24 dev tf-b && \
              ip addr add fd09::2/64 dev tf-b nodad && ip link set tf-b up");
        let ours = ["10.9.0.1", "10.9.0.2", "fd09::1", "fd09::2"];
        let in_universe =
            |k: &String| k == "other" || ours.iter().any(|a| k.split(' ').any(|w| w == *a));
        let dir = std::env::temp_dir().join(format!("tracer-kfilter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = inode_arg(&a);
        let mut checked = 0;
        for (n, expr) in [
            "udp",
            "tcp or icmp",
            "not ip and not ip6",
            "host 10.9.0.2",
            "ip6 and not icmp6",
            "port 4000",
            "portrange 50-500 or arp",
            "src net 10.9.0.0/24 and (udp or tcp)",
            "not port 53 and udp",
            "dst host fd09::2 and tcp dst port 443",
            "proto 17 and not src port 5301",
            "icmp6 or (ip and not udp)",
        ]
        .into_iter()
        .enumerate()
        {
            let pcap = dir.join(format!("{n}.pcap"));
            let mut dump = a.run({
                let pcap = pcap.clone();
                move || {
                    Command::new("tcpdump")
                        .args(["-i", "tf-a", "-U", "-n", "-w"])
                        .arg(&pcap)
                        .stdout(Stdio::null())
                        .stderr(Stdio::piped())
                        .spawn()
                        .expect("cannot run tcpdump: apt-get install tcpdump")
                }
            });
            // tcpdump says "listening on …" once its capture is open.
            let mut err = dump.stderr.take().unwrap();
            let mut seen = Vec::new();
            let mut byte = [0u8; 1];
            while !String::from_utf8_lossy(&seen).contains("listening on") {
                use std::io::Read as _;
                assert_eq!(
                    err.read(&mut byte).unwrap(),
                    1,
                    "tcpdump: {}",
                    String::from_utf8_lossy(&seen)
                );
                seen.push(byte[0]);
            }
            let t = Tracer::start(&["path", "--netns", &ino, "--duration", "3", expr]);
            varied_traffic(&a);
            let (events, stderr) = t.finish();
            // SAFETY: signalling our own child by its pid.
            unsafe { libc::kill(dump.id() as i32, libc::SIGINT) };
            dump.wait().unwrap();

            let got: std::collections::BTreeSet<String> = events
                .iter()
                .map(key_of_event)
                .filter(in_universe)
                .collect();
            let out = Command::new("tcpdump")
                .args(["-r"])
                .arg(&pcap)
                .args(["-w", "-", expr])
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut r = pcap_file::pcap::PcapReader::new(&out.stdout[..]).unwrap();
            let mut want = std::collections::BTreeSet::new();
            while let Some(pkt) = r.next_packet() {
                want.insert(key_of_frame(&pkt.unwrap().data));
            }
            let want: std::collections::BTreeSet<String> =
                want.into_iter().filter(in_universe).collect();
            let mut all = std::collections::BTreeSet::new();
            let mut r =
                pcap_file::pcap::PcapReader::new(std::fs::File::open(&pcap).unwrap()).unwrap();
            while let Some(pkt) = r.next_packet() {
                all.insert(key_of_frame(&pkt.unwrap().data));
            }
            all.retain(in_universe);
            assert!(
                !want.is_empty() && want.len() < all.len(),
                "{expr:?} must match some but not all of the traffic: {want:?} of {all:?}"
            );
            assert_eq!(
                got, want,
                "{expr:?}: tracer (left) vs tcpdump (right); stderr: {stderr}"
            );
            eprintln!(
                "{expr:?}: {} of {} flows, {} events, as tcpdump",
                want.len(),
                all.len(),
                events.len()
            );
            checked += 1;
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(checked, 12);
    });
}

/// The verifier accepts the longest filter programs: the three longest expressions of the
/// differential test and one of the maximum length (64 instructions).
#[test]
fn every_differential_expression_loads_in_the_kernel() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        // The longest expressions stress the verifier most: load the three longest.
        let mut exprs: Vec<&str> = filter_cases::EXPRESSIONS.iter().map(|e| e.0).collect();
        exprs.sort_by_key(|e| std::cmp::Reverse(tracer::filter::parse(e).unwrap().len));
        // And the longest program the kernel side accepts: 64 instructions.
        let longest = (1..=13)
            .map(|i| format!("(host 10.0.0.{i} and not port {i})"))
            .collect::<Vec<_>>()
            .join(" or ");
        assert_eq!(tracer::filter::parse(&longest).unwrap().len, 64);
        exprs.insert(0, &longest);
        for expr in &exprs[..4] {
            let t = Tracer::start(&["drops", "--netns", &ino, "--duration", "0.2", expr]);
            let (_, err) = t.finish();
            assert!(!err.contains("verifier"), "{expr:?}: {err}");
        }
    });
}

/// Runs `tshark -r FILE ARGS` and returns its stdout (panics with its stderr if it fails).
fn tshark(file: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
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

/// `path --pcap`: the DNAT-to-a-closed-port case, exported. tshark opens the file with no
/// malformed packet and no expert error, finds one packet per event line, in the same order,
/// with that hop's comment and interface; and the packet BYTES (copied by the kernel side at
/// each hop, dissected by Wireshark) show the tuple that the tracer's own parser showed — the
/// destination port 47003 entering B, 47004 after the DNAT, at the drop.
#[test]
fn path_pcap_exports_every_hop_for_tshark() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let file = std::env::temp_dir().join(format!(
            "tracer-test-{}-{}.pcapng",
            std::process::id(),
            rand_suffix()
        ));
        let file_arg = file.to_str().unwrap().to_string();
        let t = Tracer::start(&[
            "path",
            "--track-skb",
            "--pcap",
            &file_arg,
            "--duration",
            "4",
            "udp and dst port 47003",
        ]);
        let sport = a.send_udp("10.99.0.2:47003");
        let (events, err) = t.finish();
        let dump = events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            err.contains(&format!("tracer: {} packet", events.len()))
                && err.contains(" written to "),
            "{err}"
        );
        let malformed = tshark(&file, &["-Y", "_ws.malformed"]);
        let errors = tshark(&file, &["-Y", "_ws.expert.severity == error"]);
        let fields = tshark(
            &file,
            &[
                "-T",
                "fields",
                "-E",
                "separator=;",
                "-e",
                "frame.interface_name",
                "-e",
                "ip.src",
                "-e",
                "udp.srcport",
                "-e",
                "ip.dst",
                "-e",
                "udp.dstport",
                "-e",
                "frame.len",
                "-e",
                "ip.len",
                "-e",
                "frame.comment",
            ],
        );
        let _ = std::fs::remove_file(&file);
        assert_eq!(malformed, "", "malformed packets; events:\n{dump}");
        assert_eq!(errors, "", "expert errors; events:\n{dump}");
        let packets: Vec<Vec<&str>> = fields.lines().map(|l| l.split(';').collect()).collect();
        assert_eq!(
            packets.len(),
            events.len(),
            "one packet per event line:\n{fields}\n{dump}"
        );
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            Value::Null => String::new(),
            v => v.to_string(),
        };
        for (p, e) in packets.iter().zip(&events) {
            let netns = e["netns"].as_u64().unwrap();
            let iface = if e["ifindex"] == 0 {
                "-".to_string()
            } else {
                text(&e["ifname"])
            };
            assert_eq!(p[0], format!("{netns}:{iface}"), "{p:?} {e}");
            let comment = p[7];
            assert!(
                comment.starts_with(e["event"].as_str().unwrap())
                    && comment.contains(&format!(" | netns {netns} | "))
                    && comment.ends_with(&format!(" | skb {}", text(&e["skb"]))),
                "{comment:?} {e}"
            );
            if p[6].is_empty() {
                // Not dissected as IP: only for a hop without IP, or with no data left (a
                // freed skb whose tuple the tracer read from stale memory).
                assert!(e["src"].is_null() || e["len"] == 0, "{p:?} {e}");
                continue;
            }
            // The bytes Wireshark dissected say what the tracer's parser said.
            assert_eq!(
                p[1..5],
                [
                    text(&e["src"]),
                    text(&e["sport"]),
                    text(&e["dst"]),
                    text(&e["dport"])
                ],
                "{p:?} {e}"
            );
            // The packet's length, measured by the kernel side from the network header at
            // this hop (skb->len counts from skb->data, which moves), is what its IP header says.
            assert_eq!(p[5], p[6], "frame.len vs ip.len: {p:?} {e}");
        }
        // Our datagram, in B: before the DNAT (47003) and at its drop (47004, NO_SOCKET).
        let ours: Vec<(&Vec<&str>, &Value)> = packets
            .iter()
            .zip(&events)
            .filter(|(_, e)| e["sport"] == sport && e["netns"] == b.inode)
            .collect();
        assert!(
            ours.iter().any(|(p, _)| p[4] == "47003"),
            "no packet entering B with port 47003:\n{fields}"
        );
        let (drop, _) = ours
            .iter()
            .find(|(_, e)| e["event"] == "kfree_skb")
            .unwrap_or_else(|| panic!("no drop among B's packets:\n{fields}\n{dump}"));
        assert_eq!(
            drop[1..5],
            ["10.99.0.1", &sport.to_string(), "10.99.0.2", "47004"]
        );
        assert!(
            drop[7].starts_with("kfree_skb NO_SOCKET at "),
            "the drop's comment: {:?}",
            drop[7]
        );
    });
}

/// `path --pcap` with IPv6, and why an event carries 96 bytes: a datagram to a closed port over
/// IPv6 loopback is answered with an ICMPv6 "port unreachable" that quotes it — 40 + 8 bytes of
/// ICMPv6, then the datagram's own 40 + 8 bytes of headers, then its payload. tshark dissects
/// that error (captured: exactly 96 bytes of its 119) down to the quoted UDP ports, with no
/// malformed packet.
#[test]
fn path_pcap_ipv6_icmp_error_keeps_the_quoted_headers() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let file = std::env::temp_dir().join(format!(
            "tracer-test-{}-{}.pcapng",
            std::process::id(),
            rand_suffix()
        ));
        let file_arg = file.to_str().unwrap().to_string();
        let t = Tracer::start(&[
            "path",
            "--netns",
            &ino,
            "--pcap",
            &file_arg,
            "--duration",
            "3",
            "ip6",
        ]);
        let sport = ns.send_udp("[::1]:4001");
        let (events, err) = t.finish();
        let malformed = tshark(&file, &["-Y", "_ws.malformed"]);
        let errors = tshark(&file, &["-Y", "_ws.expert.severity == error"]);
        let fields = tshark(
            &file,
            &[
                "-T",
                "fields",
                "-E",
                "separator=;",
                "-e",
                "icmpv6.type",
                "-e",
                "udp.srcport",
                "-e",
                "udp.dstport",
                "-e",
                "frame.cap_len",
                "-e",
                "frame.len",
                "-e",
                "frame.comment",
            ],
        );
        let _ = std::fs::remove_file(&file);
        assert_eq!(malformed, "", "malformed packets; stderr: {err}");
        assert_eq!(errors, "", "expert errors");
        let packets: Vec<Vec<&str>> = fields.lines().map(|l| l.split(';').collect()).collect();
        assert_eq!(
            packets.len(),
            events.len(),
            "one packet per event:\n{fields}"
        );
        let datagram = 40 + 8 + "where did my packet go?".len();
        let sport = sport.to_string();
        assert!(
            packets.iter().any(|p| p[0].is_empty()
                && p[1..5] == [&sport, "4001", &datagram.to_string(), &datagram.to_string()]),
            "the datagram, whole:\n{fields}"
        );
        // Type 1 = destination unreachable; the quoted datagram's ports are dissected.
        let error = packets
            .iter()
            .find(|p| p[0] == "1" && p[1] == sport && p[2] == "4001")
            .unwrap_or_else(|| panic!("no ICMPv6 error quoting our datagram:\n{fields}"));
        assert_eq!(error[3], tracer_common::HDR_BYTES.to_string(), "{error:?}");
        assert_eq!(error[4], (40 + 8 + datagram).to_string(), "{error:?}");
    });
}

/// Namespaces A (10.99.0.1) and B (10.99.0.2) joined by a veth cable, where only B runs NAT
/// (so only B's skbs get conntrack entries): B DNATs UDP port 47013 to 47014, where an echo
/// socket answers, port 47016 to 47015, which B's INPUT chain drops, and port 47017 to 47018,
/// where nothing listens.
fn cable_with_dnat_in_b() -> (Netns, Netns) {
    let a = Netns::new();
    let b = Netns::new();
    a.sh(&format!(
        "ip link add name ct-a type veth peer name ct-b netns {} && \
         ip addr add 10.99.0.1/24 dev ct-a && ip link set ct-a up",
        b.path.display()
    ));
    b.sh(
        "ip addr add 10.99.0.2/24 dev ct-b && ip link set ct-b up && \
         nft add table ip tracer_ct && \
         nft add chain ip tracer_ct pre '{ type nat hook prerouting priority -100; }' && \
         nft add rule ip tracer_ct pre udp dport 47013 dnat to 10.99.0.2:47014 && \
         nft add rule ip tracer_ct pre udp dport 47016 dnat to 10.99.0.2:47015 && \
         nft add rule ip tracer_ct pre udp dport 47017 dnat to 10.99.0.2:47018 && \
         nft add chain ip tracer_ct in '{ type filter hook input priority 0; }' && \
         nft add rule ip tracer_ct in udp dport 47015 drop",
    );
    (a, b)
}

/// The `ct` of every event, one line each (for failure messages).
fn ct_dump(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| {
            format!(
                "{} {} {}:{}>{}:{} ct={}",
                e["netns"], e["event"], e["src"], e["sport"], e["dst"], e["dport"], e["ct"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `tracer path` reads the skb's conntrack entry at every hop: none in A (no NAT there, so no
/// conntrack); in B, `reply` on the echo's answer to a DNATed request, whose entry has then
/// seen a reply; and, as in the story, a DNATed datagram that finds no socket: the ICMP error
/// about it is `related_reply` to the entry the datagram started, confirmed (it passed every
/// hook) with the DNAT set up on it. The tuples are the entry's own, in the kernel's order: the
/// reply tuple names the NEW destination.
#[test]
fn conntrack_at_every_hop_of_a_dnat_and_its_answer() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_dnat_in_b();
        let echo = b.run(|| {
            let s = UdpSocket::bind("10.99.0.2:47014").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        });
        let client = a.run(|| {
            let s = UdpSocket::bind("10.99.0.1:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        });
        let port = client.local_addr().unwrap().port();
        let t = Tracer::start(&[
            "path",
            "--duration",
            "3",
            "(udp and (port 47013 or port 47014 or port 47017 or port 47018)) or (icmp and host 10.99.0.1)",
        ]);
        client.send_to(b"ping", "10.99.0.2:47013").unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = echo
            .recv_from(&mut buf)
            .expect("the echo socket got nothing");
        echo.send_to(&buf[..n], from).unwrap();
        let (_, answered_by) = client.recv_from(&mut buf).expect("no answer in A");
        assert_eq!(
            answered_by.to_string(),
            "10.99.0.2:47013",
            "B's NAT undid the DNAT"
        );
        client.send_to(b"anyone?", "10.99.0.2:47017").unwrap();
        let (events, err) = t.finish();
        let ours: Vec<Value> = events
            .into_iter()
            .filter(|e| e["netns"] == a.inode || e["netns"] == b.inode)
            .filter(|e| e["sport"] == port || e["dport"] == port || e["proto"] == "icmp")
            .collect();
        let dump = ct_dump(&ours);
        assert!(!ours.is_empty(), "nothing traced; stderr: {err}");

        // A has no conntrack: none of its events carries an entry.
        let in_a: Vec<&Value> = ours.iter().filter(|e| e["netns"] == a.inode).collect();
        assert!(!in_a.is_empty(), "nothing seen in A:\n{dump}");
        assert!(
            in_a.iter().all(|e| e.get("ct").is_none()),
            "an skb of A has a conntrack entry:\n{dump}"
        );
        // Nor does an skb in B before conntrack's PREROUTING hook (netif_receive_skb).
        assert!(
            ours.iter()
                .filter(|e| e["netns"] == b.inode && e["event"] == "netif_receive_skb")
                .all(|e| e.get("ct").is_none()),
            "an entry before PREROUTING:\n{dump}"
        );

        let status = |e: &Value| -> Vec<String> {
            e["ct"]["status"]
                .as_array()
                .unwrap_or_else(|| panic!("no ct status in {e}"))
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect()
        };
        let has = |e: &Value, bit: &str| status(e).iter().any(|s| s == bit);
        let in_b = |e: &&Value| e["netns"] == b.inode && e.get("ct").is_some();

        // The answer in B, leaving: the request's entry, in the reply direction.
        let answer = ours
            .iter()
            .filter(in_b)
            .find(|e| e["dport"] == port && e["event"] == "net_dev_queue")
            .unwrap_or_else(|| panic!("the answer leaving B not seen:\n{dump}"));
        assert_eq!(answer["sport"], 47013, "un-DNATed before it leaves\n{dump}");
        assert_eq!(answer["ct"]["state"], "reply", "{dump}");
        assert_eq!(
            answer["ct"]["orig"],
            format!("10.99.0.1:{port}>10.99.0.2:47013").as_str(),
            "{dump}"
        );
        assert_eq!(
            answer["ct"]["reply"],
            format!("10.99.0.2:47014>10.99.0.1:{port}").as_str(),
            "{dump}"
        );
        for bit in ["CONFIRMED", "DST_NAT", "SEEN_REPLY"] {
            assert!(has(answer, bit), "{bit} missing:\n{dump}");
        }
        assert!(!has(answer, "SRC_NAT"), "no SNAT here:\n{dump}");

        // The datagram to 47017, DNATed to a port nobody listens on, started an entry. UDP
        // lets go of it before the drop (`nf_reset_ct`), so kfree_skb shows none; but B's ICMP
        // "port unreachable" about it is conntrack's RELATED traffic, in the reply direction of
        // the very entry the datagram started.
        let error = ours
            .iter()
            .filter(in_b)
            .find(|e| e["proto"] == "icmp" && e["event"] == "net_dev_queue")
            .unwrap_or_else(|| panic!("B's ICMP error not seen:\n{dump}"));
        assert_eq!(error["ct"]["state"], "related_reply", "{dump}");
        assert_eq!(
            error["ct"]["orig"],
            format!("10.99.0.1:{port}>10.99.0.2:47017").as_str(),
            "{dump}"
        );
        assert_eq!(
            error["ct"]["reply"],
            format!("10.99.0.2:47018>10.99.0.1:{port}").as_str(),
            "{dump}"
        );
        for bit in ["CONFIRMED", "DST_NAT"] {
            assert!(has(error, bit), "{bit} missing:\n{dump}");
        }
        assert!(
            !has(error, "SEEN_REPLY") && !has(error, "SRC_NAT"),
            "{dump}"
        );
    });
}

/// A datagram DNATed in B, then dropped by B's INPUT chain: conntrack had created its entry in
/// PREROUTING, but the packet never reached the end of the hooks where entries are confirmed,
/// so the drop shows a `new`, unconfirmed entry — with the DNAT already set up on it.
#[test]
fn a_drop_before_confirmation_shows_an_unconfirmed_entry() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_dnat_in_b();
        let t = Tracer::start(&["path", "--duration", "3", "udp and port 47015"]);
        let port = a.send_udp("10.99.0.2:47016");
        let (events, err) = t.finish();
        let dump = ct_dump(&events);
        let drop = events
            .iter()
            .find(|e| e["sport"] == port && e["event"] == "kfree_skb")
            .unwrap_or_else(|| panic!("the drop not seen; stderr: {err}\n{dump}"));
        assert_eq!(drop["netns"], b.inode, "{dump}");
        assert_eq!(drop["reason"], "SKB_DROP_REASON_NETFILTER_DROP", "{dump}");
        let ct = &drop["ct"];
        assert_eq!(ct["state"], "new", "{dump}");
        assert_eq!(
            ct["orig"],
            format!("10.99.0.1:{port}>10.99.0.2:47016").as_str(),
            "{dump}"
        );
        assert_eq!(
            ct["reply"],
            format!("10.99.0.2:47015>10.99.0.1:{port}").as_str(),
            "{dump}"
        );
        let status: Vec<&str> = ct["status"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert!(status.contains(&"DST_NAT"), "{dump}");
        assert!(!status.contains(&"CONFIRMED"), "{dump}");
    });
}

// ---------------------------------------------------------------------------------------------
// `path --verdicts`: nftables rule tracing in the namespaces the user names.

/// The tables of the namespace (`nft list tables`), one `family name` per line.
fn nft_tables(ns: Option<&Netns>) -> Vec<String> {
    let list = || Command::new("nft").args(["list", "tables"]).output();
    let out = match ns {
        Some(ns) => ns.run(list),
        None => list(),
    }
    .expect("nft (apt-get install nftables)");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// `inet tracer-PID`: the table the tracer with this pid makes.
fn tracer_table(t: &Tracer) -> String {
    format!("inet tracer-{}", t.child.id())
}

/// Waits (up to 5 s: the kernel removes an owned table when the socket is released) until
/// the namespace has no table of this tracer.
fn assert_table_gone(ns: &Netns, table: &str, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while nft_tables(Some(ns)).iter().any(|t| t == table) {
        assert!(
            Instant::now() < deadline,
            "{table} survived the tracer ({how}): {:?}",
            nft_tables(Some(ns))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The story's rule, in miniature: A (10.98.0.1) sends to B (10.98.0.2) port 47010 over the
/// cable tv-a/tv-b. B has Docker's NAT rules, written with iptables-nft as Docker writes them:
/// PREROUTING jumps to DOCKER, DOCKER RETURNs for packets from the bridge side (`-i tv-b`),
/// before the DNAT rule that would send port 47010 to 47011. The datagram arrives from tv-b,
/// so DOCKER returns, no DNAT happens, and it dies with NO_SOCKET on 47010.
fn cable_with_docker_rules() -> (Netns, Netns) {
    let a = Netns::new();
    let b = Netns::new();
    a.sh(&format!(
        "ip link add name tv-a type veth peer name tv-b netns {} && \
         ip addr add 10.98.0.1/24 dev tv-a && ip link set tv-a up",
        b.path.display()
    ));
    b.sh(
        "ip addr add 10.98.0.2/24 dev tv-b && ip link set tv-b up && \
         iptables-nft -t nat -N DOCKER && \
         iptables-nft -t nat -A PREROUTING -p udp -j DOCKER && \
         iptables-nft -t nat -A DOCKER -i tv-b -j RETURN && \
         iptables-nft -t nat -A DOCKER -p udp --dport 47010 -j DNAT --to-destination 10.98.0.2:47011",
    );
    (a, b)
}

/// One verdict of the JSON output as the human output words it.
fn verdict_line(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("?").to_string();
    let place = format!("{} {} {}", s("family"), s("table"), s("chain"));
    match s("kind").as_str() {
        "policy" => format!("{place}: policy {}", s("verdict")),
        "return" => format!("{place}: end of chain, {}", s("verdict")),
        _ => format!("{place}: {} → {}", s("rule"), s("verdict")),
    }
}

/// The rule that decided is shown under the hop where the packet entered B: DOCKER's RETURN
/// for `-i tv-b`, and never the DNAT rule after it.
#[test]
fn verdicts_show_the_docker_chain_return() {
    let _serial = need_root();
    hygienic(|| {
        let (a, b) = cable_with_docker_rules();
        let root_tables = nft_tables(None);
        let b_node = inode_arg(&b);
        let t = Tracer::start(&[
            "path",
            "--verdicts",
            &b_node,
            "--duration",
            "3",
            "udp and port 47010",
        ]);
        let table = tracer_table(&t);
        assert!(
            nft_tables(Some(&b)).contains(&table),
            "{table} not made in B: {:?}",
            nft_tables(Some(&b))
        );
        assert!(!nft_tables(Some(&a)).contains(&table), "A was not named");
        assert_eq!(
            nft_tables(None),
            root_tables,
            "the root namespace got a table"
        );
        let sport = a.send_udp("10.98.0.2:47010");
        let (events, err) = t.finish();
        let dump = events
            .iter()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join("\n");
        let ours: Vec<&Value> = events.iter().filter(|e| e["sport"] == sport).collect();
        let with_verdicts: Vec<&&Value> = ours
            .iter()
            .filter(|e| e.get("verdicts").is_some())
            .collect();
        assert_eq!(
            with_verdicts.len(),
            1,
            "verdicts belong under one hop, where the datagram entered B; stderr: {err}\n{dump}"
        );
        let hop = with_verdicts[0];
        assert_eq!(hop["netns"], b.inode, "{dump}");
        let first_in_b = ours.iter().find(|e| e["netns"] == b.inode).unwrap();
        assert_eq!(
            first_in_b["time_ns"], hop["time_ns"],
            "the first hop in B: {dump}"
        );
        let lines: Vec<String> = hop["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(verdict_line)
            .collect();
        assert_eq!(
            lines[..2],
            [
                "ip nat PREROUTING: meta l4proto udp counter jump DOCKER → jump DOCKER",
                "ip nat DOCKER: iifname \"tv-b\" counter return → return",
            ],
            "{lines:#?}"
        );
        assert!(
            lines.iter().all(|l| !l.contains("dnat")),
            "the DNAT rule never decided: {lines:#?}"
        );
        // DOCKER has no hook of its own: it was jumped to from PREROUTING.
        let docker = hop["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["chain"] == "DOCKER")
            .unwrap();
        assert_eq!(docker["hook"], "prerouting", "{docker}");
        let drop = ours
            .iter()
            .find(|e| e["event"] == "kfree_skb")
            .unwrap_or_else(|| panic!("no drop: {dump}"));
        assert_eq!(drop["dport"], 47010, "no DNAT happened: {dump}");
        assert_table_gone(&b, &table, "normal exit");
        assert_eq!(
            nft_tables(None),
            root_tables,
            "the root namespace got a table"
        );
    });
}

/// The tracer's table goes with the tracer however it ends: Ctrl-C (SIGINT), and SIGKILL,
/// which nothing in the tracer can handle (the `owner` flag: the kernel removes the table
/// with the netlink socket that made it).
#[test]
fn the_verdict_table_dies_with_the_tracer() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let root_tables = nft_tables(None);
        for signal in [Signal::SIGINT, Signal::SIGKILL] {
            let mut t = Tracer::start(&["path", "--verdicts", &ino, "udp"]);
            let table = tracer_table(&t);
            assert!(
                nft_tables(Some(&ns)).contains(&table),
                "{table} not made: {:?}",
                nft_tables(Some(&ns))
            );
            assert_eq!(
                nft_tables(None),
                root_tables,
                "the root namespace got a table"
            );
            // Our own child, not yet waited for: its pid cannot have been reused.
            kill(Pid::from_raw(t.child.id() as i32), signal).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            let status = loop {
                if let Some(s) = t.child.try_wait().unwrap() {
                    break s;
                }
                assert!(Instant::now() < deadline, "tracer ignored {signal}");
                std::thread::sleep(Duration::from_millis(20));
            };
            if signal == Signal::SIGINT {
                let (_, err) = t.output();
                assert!(status.success(), "{status}: {err}");
            }
            assert_table_gone(&ns, &table, &format!("{signal}"));
        }
        assert_eq!(
            nft_tables(None),
            root_tables,
            "the root namespace got a table"
        );
    });
}

/// A lab node name that is in fact the machine's root namespace is refused: the root
/// namespace gets a table only when named by its inode. A namespace without rules is said
/// to have nothing to trace.
#[test]
fn verdicts_refuse_the_root_namespace_by_name_and_say_when_nothing_can_decide() {
    let _serial = need_root();
    hygienic(|| {
        let root_tables = nft_tables(None);
        // The tests run in the root namespace; /proc/1 may not be readable in a container,
        // our own namespace is.
        let root = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let names = std::env::temp_dir().join(format!("tracer-test-names-{}", rand_suffix()));
        std::fs::write(
            &names,
            format!(r#"{{"pid": 0, "nodes": {{"sneaky": {root}}}}}"#),
        )
        .unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args([
                "path",
                "--verdicts",
                "sneaky",
                "--duration",
                "0.1",
                "--netns-names",
            ])
            .arg(&names)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&names);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{err}");
        assert!(
            err.contains("that node is the machine's root namespace (or the tracer's own)"),
            "{err}"
        );
        assert_eq!(
            nft_tables(None),
            root_tables,
            "the root namespace got a table"
        );

        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let t = Tracer::start(&["path", "--verdicts", &ino, "--duration", "0.5", "udp"]);
        let (_, err) = t.finish();
        assert!(
            err.contains("no nftables table but the tracer's own"),
            "{err}"
        );
        assert!(
            nft_tables(Some(&ns)).is_empty(),
            "{:?}",
            nft_tables(Some(&ns))
        );
    });
}

/// On a kernel without nftables' owner flag (Linux < 5.12; simulated here), the tracer deletes
/// its table itself on a normal exit and on Ctrl-C, and says that a SIGKILL would leave it.
#[test]
fn without_the_owner_flag_the_table_is_deleted_and_the_sigkill_gap_is_said() {
    let _serial = need_root();
    hygienic(|| {
        let ns = Netns::new();
        let ino = inode_arg(&ns);
        let env = [(tracer::nftrace::NO_OWNER_FLAG, "1")];
        let t = Tracer::start_with_env(&["path", "--verdicts", &ino, "--duration", "0.5"], &env);
        let table = tracer_table(&t);
        assert!(nft_tables(Some(&ns)).contains(&table));
        let (_, err) = t.finish();
        assert!(
            err.contains("no nftables `owner` flag") && err.contains("a SIGKILL would leave it"),
            "{err}"
        );
        // Deleted by the tracer, not by the kernel: at once.
        assert!(!nft_tables(Some(&ns)).contains(&table), "normal exit");

        let mut t = Tracer::start_with_env(&["path", "--verdicts", &ino], &env);
        let table = tracer_table(&t);
        // Our own child, not yet waited for: its pid cannot have been reused.
        kill(Pid::from_raw(t.child.id() as i32), Signal::SIGINT).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while t.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "tracer ignored SIGINT");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!nft_tables(Some(&ns)).contains(&table), "Ctrl-C");
    });
}
