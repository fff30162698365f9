//! Root tests with real drops: each test makes its own network namespaces, sends datagrams only
//! inside them, runs the built `tracer` binary with `--json --ready-file`, and asserts what the
//! kernel reported. Nothing here adds an address, route, link or rule in the root namespace; every
//! test checks afterwards that the root namespace and the loaded BPF programs are as before.
//!
//! Every test reads as three steps, on the fixtures of the first half of this file:
//! - stage: [`Netns`] (one namespace), [`cable`] (two joined by a veth), [`Netns::nft`] (rules);
//! - trace: [`Tracer::drops`] / [`Tracer::path`] build the command line option by option,
//!   `.start()` waits until the tracer is attached, `.finish()` returns a [`Traced`];
//! - assert: on the JSON events of [`Traced`], with the helpers after the fixtures.
//!
//! Without root these tests print `SKIPPED: …` and fail: a skip is never a pass.

use std::collections::BTreeSet;
use std::io::{Read, Write as _};
use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;

#[path = "common/filter_cases.rs"]
mod filter_cases;

// =============================================================================================
// Fixtures: root, namespaces, temporary files, the tracer.

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

/// The frame of every root test: needs root, runs alone, and leaves nothing behind
/// ([`hygienic`]).
fn as_root(body: impl FnOnce()) {
    let _serial = need_root();
    hygienic(body);
}

/// Runs `body` and checks that the root namespace and the sets of BPF programs, links and maps
/// are unchanged afterwards (so the tracer left nothing behind, however it ended).
fn hygienic(body: impl FnOnce()) {
    let before_ns = root_ns_state();
    let before: Vec<(&str, Vec<u32>)> = BPF_OBJECTS
        .iter()
        .map(|&object| (object, bpf_ids(object)))
        .collect();
    body();
    // File descriptors close when the tracer process exits; give the kernel a moment to free
    // what they held.
    let deadline = Instant::now() + Duration::from_secs(5);
    for (object, before) in &before {
        loop {
            let leftover: Vec<u32> = bpf_ids(object)
                .into_iter()
                .filter(|id| !before.contains(id))
                .collect();
            if leftover.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "BPF {object}s left behind: {leftover:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert_eq!(
        root_ns_state(),
        before_ns,
        "the root network namespace changed"
    );
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
        s.push_str(&stdout_of("ip", args, "apt-get install iproute2"));
    }
    s
}

/// What `program ARGS` prints on stdout, run in this thread's network namespace; panics with
/// its stderr if it fails (`install` says how to get the program if it is missing).
fn stdout_of(program: &str, args: &[&str], install: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {install}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What the tracer loads into the kernel: programs, the links that attach them, and maps.
const BPF_OBJECTS: [&str; 3] = ["prog", "link", "map"];

/// IDs of the kernel's BPF objects of one kind (`bpftool prog|link|map show`).
fn bpf_ids(object: &str) -> Vec<u32> {
    stdout_of("bpftool", &[object, "show"], "apt-get install bpftool")
        .lines()
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

/// What [`Netns::send_udp`] sends.
const PAYLOAD: &[u8] = b"where did my packet go?";

type Job = Box<dyn FnOnce() + Send>;

/// A network namespace of our own: a thread that called `unshare(CLONE_NEWNET)` and then runs
/// the closures it is given. Sockets it creates, and processes it starts, live in that namespace.
/// The namespace dies with the thread (when this value is dropped), unless a file descriptor
/// still holds it.
struct Netns {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
    inode: u32,
    /// `/proc/PID/task/TID/ns/net`, usable by `ip link set … netns PATH`.
    path: PathBuf,
}

impl Netns {
    /// A new namespace with its loopback up.
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

    /// Runs `program ARGS` inside the namespace with `input` on its stdin; panics with the
    /// command and its output if it fails.
    fn exec(&self, program: &'static str, args: &[&str], input: &str) {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let stdin_text = input.to_string();
        let shown = format!("{program} {}", args.join(" "));
        let out = self.run(move || -> std::io::Result<Output> {
            let mut child = Command::new(program)
                .args(&args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()?;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(stdin_text.as_bytes())?;
            child.wait_with_output()
        });
        let out = out.unwrap_or_else(|e| panic!("cannot run {program} (installed?): {e}"));
        assert!(
            out.status.success(),
            "command failed in test namespace: {shown}\n{input}\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Runs a shell command inside the namespace; panics with its output if it fails.
    fn sh(&self, cmd: &str) {
        self.exec("sh", &["-c", cmd], "");
    }

    /// Loads an nftables ruleset (the syntax of `nft list ruleset`) into the namespace.
    fn nft(&self, ruleset: &str) {
        self.exec("nft", &["-f", "-"], ruleset);
    }

    /// Turns conntrack on in the namespace: a rule that asks for `ct state` makes the kernel
    /// track every connection (as Docker's rules do).
    fn turn_on_conntrack(&self) {
        self.nft(
            "table ip tracer_test {
                chain out { type filter hook output priority 0; ct state new counter; }
            }",
        );
    }

    /// The namespace's nftables tables (`nft list tables`), one `family name` each.
    fn nft_tables(&self) -> Vec<String> {
        self.run(nft_tables_here)
    }

    /// Sends one UDP datagram ([`PAYLOAD`]) from an ephemeral port; returns that port.
    fn send_udp(&self, dst: &str) -> u16 {
        let dst = dst.to_string();
        self.run(move || {
            let bind = if dst.starts_with('[') {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(bind).unwrap();
            s.send_to(PAYLOAD, &dst).unwrap();
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

/// Two namespaces, A and B, joined by a veth cable: `NAME-a` in A and `NAME-b` in B, both up,
/// with these addresses (`ADDR/PREFIX`; IPv6 ones without duplicate address detection, so that
/// they are usable at once).
fn cable(name: &str, a_addrs: &[&str], b_addrs: &[&str]) -> (Netns, Netns) {
    let a = Netns::new();
    let b = Netns::new();
    a.sh(&format!(
        "ip link add name {name}-a type veth peer name {name}-b netns {}",
        b.path.display()
    ));
    for (ns, end, addrs) in [(&a, "a", a_addrs), (&b, "b", b_addrs)] {
        let mut cmd = String::new();
        for addr in addrs {
            let nodad = if addr.contains(':') { " nodad" } else { "" };
            cmd += &format!("ip addr add {addr} dev {name}-{end}{nodad} && ");
        }
        ns.sh(&format!("{cmd}ip link set {name}-{end} up"));
    }
    (a, b)
}

/// A path in the temporary directory, unique to this process and call, removed (file or
/// directory) when dropped — also when an assertion fails first.
struct TempPath(PathBuf);

impl TempPath {
    /// `…/tracer-test-PID-N-WHAT`: WHAT says what it is for (and may end in `.pcapng`).
    fn new(what: &str) -> TempPath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("tracer-test-{}-{n}-{what}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    fn as_str(&self) -> &str {
        self.0.to_str().expect("a temporary path in UTF-8")
    }
}

impl std::ops::Deref for TempPath {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for TempPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The tracer's command line, built option by option: `Tracer::drops().netns(&ns)
/// .until_first_event().filter("udp").start()`. `start` adds `--json --ready-file …`.
struct TracerArgs {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl TracerArgs {
    fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// `--netns INODE`: only events in this namespace.
    fn netns(self, ns: &Netns) -> Self {
        self.arg("--netns").arg(ns.inode.to_string())
    }

    /// `--count N`: exit after N events.
    fn count(self, events: u32) -> Self {
        self.arg("--count").arg(events.to_string())
    }

    /// `--duration SECONDS`: exit after that long.
    fn duration(self, seconds: f64) -> Self {
        self.arg("--duration").arg(seconds.to_string())
    }

    /// `--count 1 --duration 20`: exit at the first event (or after 20 s without one).
    fn until_first_event(self) -> Self {
        self.count(1).duration(20.0)
    }

    /// `path --track-skb`: follow an skb once it matched, whatever its tuple becomes.
    fn track_skb(self) -> Self {
        self.arg("--track-skb")
    }

    /// `drops --explain`: look up the conntrack table for each drop.
    fn explain(self) -> Self {
        self.arg("--explain")
    }

    /// `path --verdicts INODE`: trace the nftables rules of this namespace.
    fn verdicts(self, ns: &Netns) -> Self {
        self.arg("--verdicts").arg(ns.inode.to_string())
    }

    /// `path --pcap FILE`: write every hop's packet to FILE (pcapng).
    fn pcap(self, file: &TempPath) -> Self {
        self.arg("--pcap").arg(file.as_str())
    }

    /// `--ring-kib KIB`: the size of the ring buffer to userspace.
    fn ring_kib(self, kib: u32) -> Self {
        self.arg("--ring-kib").arg(kib.to_string())
    }

    /// The filter expression, as one argument.
    fn filter(self, expr: &str) -> Self {
        self.arg(expr)
    }

    /// The filter expression as separate words, as a shell passes it when typed unquoted.
    fn filter_words(self, words: &[&str]) -> Self {
        words.iter().fold(self, |args, w| args.arg(*w))
    }

    /// An environment variable for the tracer.
    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Environment variables for the tracer.
    fn envs(self, vars: &[(&str, &str)]) -> Self {
        vars.iter()
            .fold(self, |args, (key, value)| args.env(key, value))
    }

    /// Starts `tracer ARGS --json --ready-file …` and waits until it is attached.
    fn start(self) -> Tracer {
        let ready = TempPath::new("ready");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracer"))
            .args(&self.args)
            .envs(self.env)
            .arg("--json")
            .arg("--ready-file")
            .arg(&*ready)
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
}

/// A running `tracer` binary. Its stdout and stderr are read by threads as they come: a
/// tracer that prints a lot must never block on a full pipe.
struct Tracer {
    child: Child,
    ready: TempPath,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr: Option<std::thread::JoinHandle<String>>,
}

fn drain(mut r: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// What a tracer printed until it exited: its JSON events and its stderr.
struct Traced {
    events: Vec<Value>,
    stderr: String,
}

impl Tracer {
    /// `tracer drops …`, to be completed with [`TracerArgs`]' options.
    fn drops() -> TracerArgs {
        TracerArgs {
            args: vec!["drops".into()],
            env: Vec::new(),
        }
    }

    /// `tracer path …`, to be completed with [`TracerArgs`]' options.
    fn path() -> TracerArgs {
        TracerArgs {
            args: vec!["path".into()],
            env: Vec::new(),
        }
    }

    /// Our own child, not yet waited for: its pid cannot have been reused.
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// `inet tracer-PID`: the nftables table this tracer makes for `--verdicts`.
    fn nft_table(&self) -> String {
        format!("inet tracer-{}", self.child.id())
    }

    /// Waits for the tracer to exit (it was started with --count/--duration) and returns what
    /// it printed. After 30 s it is sent SIGTERM, after 35 s SIGKILL.
    fn finish(mut self) -> Traced {
        let start = Instant::now();
        let mut termed = false;
        while self.child.try_wait().unwrap().is_none() {
            if start.elapsed() > Duration::from_secs(30) && !termed {
                let _ = kill(self.pid(), Signal::SIGTERM);
                termed = true;
            }
            if start.elapsed() > Duration::from_secs(35) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let (out, stderr) = self.output();
        let events = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON {l:?}: {e}")))
            .collect();
        Traced { events, stderr }
    }

    /// Sends `signal` and waits (up to 5 s) for the tracer to exit.
    fn stop_with(&mut self, signal: Signal) -> ExitStatus {
        kill(self.pid(), signal).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "tracer ignored {signal}");
            std::thread::sleep(Duration::from_millis(20));
        }
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
    }
}

/// Runs the tracer to its end with these arguments only (no `--json`, no ready file): for
/// what it refuses before it attaches anything. Returns its exit status and stderr.
fn run_tracer(args: &[&str]) -> (ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tracer"))
        .args(args)
        .output()
        .expect("cannot start the tracer binary");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// =============================================================================================
// Reading and asserting what the tracer printed.

impl Traced {
    /// The one event; fails with the tracer's stderr if there is not exactly one.
    fn only_event(&self) -> &Value {
        assert_eq!(self.events.len(), 1, "stderr: {}", self.stderr);
        &self.events[0]
    }

    /// The events of the datagram sent from this source port.
    fn sent_from_port(&self, sport: u16) -> Vec<&Value> {
        self.events.iter().filter(|e| e["sport"] == sport).collect()
    }

    /// The drop (`kfree_skb`) of the datagram sent from this source port.
    fn drop_of(&self, sport: u16) -> &Value {
        self.events
            .iter()
            .find(|e| e["sport"] == sport && e["event"] == "kfree_skb")
            .unwrap_or_else(|| {
                panic!(
                    "the drop of our datagram (source port {sport}) not seen; stderr: {}\n{}",
                    self.stderr,
                    self.dump()
                )
            })
    }

    /// Every event, one JSON line each (for failure messages).
    fn dump(&self) -> String {
        dump(&self.events)
    }

    /// Reads `tracer: N events, M lost …` from the stderr: (N, M).
    fn summary(&self) -> (u64, u64) {
        let line = self
            .stderr
            .lines()
            .find(|l| l.starts_with("tracer: ") && l.contains(" lost"))
            .unwrap_or_else(|| panic!("no summary line in: {}", self.stderr));
        let words: Vec<&str> = line.split_whitespace().collect();
        (words[1].parse().unwrap(), words[3].parse().unwrap())
    }
}

/// Events, one JSON line each (for failure messages).
fn dump<'a>(events: impl IntoIterator<Item = &'a Value>) -> String {
    events
        .into_iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// A JSON value as text: a string without quotes, null as nothing.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        v => v.to_string(),
    }
}

/// A datagram from `loopback` to `loopback:dport` (a closed port) in `ns`, dropped with
/// NO_SOCKET on `lo` in the UDP receive function.
fn assert_closed_port_drop(e: &Value, ns: &Netns, loopback: &str, sport: u16, dport: u16) {
    assert_eq!(e["reason"], "SKB_DROP_REASON_NO_SOCKET", "{e}");
    assert_eq!(e["netns"], ns.inode, "{e}");
    assert_eq!(e["proto"], "udp", "{e}");
    assert_eq!(e["src"], loopback, "{e}");
    assert_eq!(e["dst"], loopback, "{e}");
    assert_eq!(e["sport"], sport, "{e}");
    assert_eq!(e["dport"], dport, "{e}");
    assert_eq!(e["ifname"], "lo", "{e}");
    assert_udp_receive_function(&e["location"], loopback.contains(':'));
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

/// The status bits of an event's conntrack entry (`CONFIRMED`, `DST_NAT`, …).
fn ct_status(e: &Value) -> Vec<String> {
    e["ct"]["status"]
        .as_array()
        .unwrap_or_else(|| panic!("no ct status in {e}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

fn has_ct_bit(e: &Value, bit: &str) -> bool {
    ct_status(e).iter().any(|s| s == bit)
}

/// An event's conntrack entry: its state for this skb, and its two tuples in the kernel's
/// order (`src:sport>dst:dport`, the reply tuple naming the destination after NAT).
fn assert_ct(e: &Value, state: &str, orig: &str, reply: &str, dump: &str) {
    assert_eq!(e["ct"]["state"], state, "{dump}");
    assert_eq!(e["ct"]["orig"], orig, "{dump}");
    assert_eq!(e["ct"]["reply"], reply, "{dump}");
}

/// The tables of the namespace this thread is in (`nft list tables`), one `family name` each.
fn nft_tables_here() -> Vec<String> {
    stdout_of("nft", &["list", "tables"], "apt-get install nftables")
        .lines()
        .filter_map(|l| l.strip_prefix("table "))
        .map(str::to_string)
        .collect()
}

/// The root namespace's nftables tables when taken, to check that no tracer adds one there.
struct RootTables(Vec<String>);

impl RootTables {
    fn now() -> RootTables {
        RootTables(nft_tables_here())
    }

    fn assert_unchanged(&self) {
        assert_eq!(nft_tables_here(), self.0, "the root namespace got a table");
    }
}

/// The tracer's table is in the namespace (`node` names it in the message).
fn assert_table_made(ns: &Netns, table: &str, node: &str) {
    let tables = ns.nft_tables();
    assert!(
        tables.iter().any(|t| t == table),
        "{table} not made in {node}: {tables:?}"
    );
}

/// Waits (up to 5 s: the kernel removes an owned table when the socket is released) until
/// the namespace has no table of this tracer.
fn assert_table_gone(ns: &Netns, table: &str, how: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while ns.nft_tables().iter().any(|t| t == table) {
        assert!(
            Instant::now() < deadline,
            "{table} survived the tracer ({how}): {:?}",
            ns.nft_tables()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// Runs `tshark -r FILE ARGS` and returns its stdout (panics with its stderr if it fails).
fn tshark(file: &Path, args: &[&str]) -> String {
    let file = file.to_str().expect("a capture path in UTF-8");
    let args: Vec<&str> = ["-r", file].iter().chain(args).copied().collect();
    stdout_of(
        "tshark",
        &args,
        "apt-get install tshark (cargo xtask setup does)",
    )
}

/// tshark reads FILE with no malformed packet and no expert error (`context` helps the message).
fn assert_tshark_clean(file: &Path, context: &str) {
    let malformed = tshark(file, &["-Y", "_ws.malformed"]);
    assert_eq!(malformed, "", "malformed packets; {context}");
    let errors = tshark(file, &["-Y", "_ws.expert.severity == error"]);
    assert_eq!(errors, "", "expert errors; {context}");
}

/// These dissected fields of every packet of FILE, one line a packet, separated by `;`
/// (split them with [`rows`]).
fn tshark_fields(file: &Path, fields: &[&str]) -> String {
    let mut args = vec!["-T", "fields", "-E", "separator=;"];
    for field in fields {
        args.extend(["-e", field]);
    }
    tshark(file, &args)
}

fn rows(fields: &str) -> Vec<Vec<&str>> {
    fields.lines().map(|l| l.split(';').collect()).collect()
}

// =============================================================================================
// Drops in one namespace.

#[test]
fn udp_to_a_closed_port_ipv4_is_no_socket() {
    as_root(|| {
        let ns = Netns::new();
        let t = Tracer::drops()
            .netns(&ns)
            .until_first_event()
            .filter("udp and dst port 4000")
            .start();
        let sport = ns.send_udp("127.0.0.1:4000");
        let run = t.finish();
        assert_closed_port_drop(run.only_event(), &ns, "127.0.0.1", sport, 4000);
        assert!(run.stderr.contains("0 lost"), "{}", run.stderr);
    });
}

#[test]
fn udp_to_a_closed_port_ipv6_is_no_socket() {
    as_root(|| {
        let ns = Netns::new();
        let t = Tracer::drops()
            .netns(&ns)
            .until_first_event()
            .filter_words(&["ip6", "and", "udp"])
            .start();
        let sport = ns.send_udp("[::1]:4001");
        let run = t.finish();
        assert_closed_port_drop(run.only_event(), &ns, "::1", sport, 4001);
    });
}

#[test]
fn the_filter_runs_in_the_kernel() {
    as_root(|| {
        let ns = Netns::new();
        // Three datagrams are dropped (NO_SOCKET); only one matches, the others are filtered
        // out in the kernel, never sent to userspace.
        let t = Tracer::drops()
            .netns(&ns)
            .count(2)
            .duration(5.0)
            .filter("dst host 127.0.0.3 and dst port 4005")
            .start();
        ns.send_udp("127.0.0.1:4004");
        ns.send_udp("127.0.0.1:4005");
        ns.send_udp("127.0.0.3:4004");
        ns.send_udp("127.0.0.3:4005");
        let run = t.finish();
        let e = run.only_event();
        assert_eq!(e["dst"], "127.0.0.3");
        assert_eq!(e["dport"], 4005);
    });
}

#[test]
fn nft_drop_rule_is_netfilter_drop() {
    as_root(|| {
        let ns = Netns::new();
        ns.nft(
            "table inet tracer_test {
                chain input { type filter hook input priority 0; udp dport 4002 drop; }
            }",
        );
        let t = Tracer::drops()
            .netns(&ns)
            .until_first_event()
            .filter("udp and port 4002")
            .start();
        ns.send_udp("127.0.0.1:4002");
        let run = t.finish();
        let e = run.only_event();
        assert_eq!(e["reason"], "SKB_DROP_REASON_NETFILTER_DROP");
        assert_eq!(e["dport"], 4002);
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
    as_root(|| {
        // The story's failure in one namespace: a client talks to 10.98.0.1:4000, so conntrack
        // expects the reply from 10.98.0.1:4000; a "proxy" answers from 10.98.0.2:4000 instead
        // (another address of the same machine, as docker-proxy did), and the client's port has
        // no socket for that stray answer.
        let ns = Netns::new();
        ns.sh("ip addr add 10.98.0.1/32 dev lo && ip addr add 10.98.0.2/32 dev lo");
        ns.turn_on_conntrack();
        let t = Tracer::drops()
            .envs(env)
            .explain()
            .netns(&ns)
            .until_first_event()
            .filter("udp and src port 4000")
            .start();
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
        let run = t.finish();
        let e = run.only_event();
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

/// `--explain` must read the conntrack table of a namespace that no process is in any more but
/// a file descriptor still holds (as `netlab::Netns` does): through a helper thread that `setns`es
/// into it and reads `/proc/thread-self/net/nf_conntrack`.
#[test]
fn conntrack_of_a_namespace_held_only_by_a_file_descriptor() {
    as_root(|| {
        let ns = Netns::new();
        ns.turn_on_conntrack();
        ns.send_udp("127.0.0.1:4010");
        let fd = ns.run(|| std::fs::File::open("/proc/thread-self/ns/net").unwrap());
        let inode = fd.metadata().unwrap().ino() as u32;
        assert_eq!(inode, ns.inode);
        // The namespace's thread ends: only the fd holds the namespace now. Let the thread's
        // task disappear from /proc.
        drop(ns);
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

#[test]
fn a_malformed_filter_fails_before_loading() {
    // No root needed: the filter is checked before anything touches the kernel.
    let (status, err) = run_tracer(&["drops", "udp", "or", "ether", "host", "02:00:00:00:00:01"]);
    assert!(!status.success());
    assert!(err.contains("unknown filter word \"ether\""), "{err}");
    assert!(err.contains("supported: and/&&, or/||"), "{err}");
    assert_eq!(err.lines().count(), 1, "one clear line: {err}");
}

/// A ring buffer of one page cannot hold a burst: the loss must be counted and reported.
#[test]
fn lost_events_are_counted_not_hidden() {
    as_root(|| {
        let ns = Netns::new();
        let t = Tracer::path()
            .ring_kib(4)
            .netns(&ns)
            .duration(2.0)
            .filter("udp")
            .start();
        ns.run(|| {
            let s = UdpSocket::bind("127.0.0.1:0").unwrap();
            for _ in 0..2000 {
                let _ = s.send_to(b"burst", "127.0.0.1:4009");
            }
        });
        let run = t.finish();
        let (printed, lost) = run.summary();
        assert_eq!(printed, run.events.len() as u64);
        assert!(
            lost > 0,
            "2000 datagrams × several tracepoints fit in 4 KiB? {}",
            run.stderr
        );
    });
}

/// Ctrl-C / SIGTERM: detach, print the summary, exit 0.
#[test]
fn sigterm_exits_cleanly_with_a_summary() {
    as_root(|| {
        let ns = Netns::new();
        let mut t = Tracer::drops().netns(&ns).start();
        let status = t.stop_with(Signal::SIGTERM);
        let run = t.finish();
        assert!(status.success(), "{status}: {}", run.stderr);
        assert_eq!(run.summary(), (0, 0));
    });
}

// =============================================================================================
// `path` over a veth cable and a DNAT.

/// Namespaces A (10.99.0.1) and B (10.99.0.2) joined by a veth cable; B DNATs UDP port 47003
/// to 47004, where nothing listens — so an skb sent from A to B:47003 changes its tuple in B
/// and dies there with NO_SOCKET.
fn cable_with_dnat_to_a_closed_port() -> (Netns, Netns) {
    let (a, b) = cable("tr", &["10.99.0.1/24"], &["10.99.0.2/24"]);
    b.nft(
        "table ip tracer_test {
            chain pre {
                type nat hook prerouting priority -100;
                udp dport 47003 dnat to 10.99.0.2:47004;
            }
        }",
    );
    (a, b)
}

/// Two namespaces joined by a veth cable; B DNATs port 47003 to 47004, where nothing listens.
/// `path --track-skb` with the filter `dst port 47003` must follow the skb from A into B and to
/// its drop even though, after the DNAT, its tuple says 47004.
#[test]
fn path_track_skb_follows_the_skb_through_nat() {
    as_root(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let t = Tracer::path()
            .track_skb()
            .duration(4.0)
            .filter("udp and dst port 47003")
            .start();
        let sport = a.send_udp("10.99.0.2:47003");
        let run = t.finish();
        let dump = run.dump();
        // Several skbs may carry the datagram (e.g. one parked while ARP resolves the neighbour
        // is consumed and a copy is sent): follow the one that ends in the drop.
        let skb = run.drop_of(sport)["skb"].as_str().unwrap();
        let ours: Vec<&Value> = run.events.iter().filter(|e| e["skb"] == skb).collect();
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

/// The contrast to `path_track_skb_follows_the_skb_through_nat`: without `--track-skb` the
/// filter `dst port 47003` loses the skb once DNAT rewrote it to 47004 — its drop is not shown.
#[test]
fn path_without_track_skb_loses_the_skb_after_nat() {
    as_root(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let t = Tracer::path()
            .duration(3.0)
            .filter("udp and dst port 47003")
            .start();
        let sport = a.send_udp("10.99.0.2:47003");
        let run = t.finish();
        let ours = run.sent_from_port(sport);
        assert!(
            ours.iter().any(|e| e["netns"] == b.inode),
            "seen entering B: {}",
            run.stderr
        );
        assert!(
            !ours.iter().any(|e| e["event"] == "kfree_skb"),
            "without --track-skb the drop (dport 47004) must not match"
        );
    });
}

/// `path --pcap`: the DNAT-to-a-closed-port case, exported. tshark opens the file with no
/// malformed packet and no expert error, finds one packet per event line, in the same order,
/// with that hop's comment and interface; and the packet BYTES (copied by the kernel side at
/// each hop, dissected by Wireshark) show the tuple that the tracer's own parser showed — the
/// destination port 47003 entering B, 47004 after the DNAT, at the drop.
#[test]
fn path_pcap_exports_every_hop_for_tshark() {
    as_root(|| {
        let (a, b) = cable_with_dnat_to_a_closed_port();
        let file = TempPath::new("hops.pcapng");
        let t = Tracer::path()
            .track_skb()
            .pcap(&file)
            .duration(4.0)
            .filter("udp and dst port 47003")
            .start();
        let sport = a.send_udp("10.99.0.2:47003");
        let run = t.finish();
        let (events, err, dump) = (&run.events, &run.stderr, run.dump());
        assert!(
            err.contains(&format!("tracer: {} packet", events.len()))
                && err.contains(" written to "),
            "{err}"
        );
        assert_tshark_clean(&file, &format!("events:\n{dump}"));
        let fields = tshark_fields(
            &file,
            &[
                "frame.interface_name",
                "ip.src",
                "udp.srcport",
                "ip.dst",
                "udp.dstport",
                "frame.len",
                "ip.len",
                "frame.comment",
            ],
        );
        let packets = rows(&fields);
        assert_eq!(
            packets.len(),
            events.len(),
            "one packet per event line:\n{fields}\n{dump}"
        );
        for (p, e) in packets.iter().zip(events) {
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
            .zip(events)
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
    as_root(|| {
        let ns = Netns::new();
        let file = TempPath::new("icmp6.pcapng");
        let t = Tracer::path()
            .netns(&ns)
            .pcap(&file)
            .duration(3.0)
            .filter("ip6")
            .start();
        let sport = ns.send_udp("[::1]:4001");
        let run = t.finish();
        assert_tshark_clean(&file, &format!("stderr: {}", run.stderr));
        let fields = tshark_fields(
            &file,
            &[
                "icmpv6.type",
                "udp.srcport",
                "udp.dstport",
                "frame.cap_len",
                "frame.len",
                "frame.comment",
            ],
        );
        let packets = rows(&fields);
        assert_eq!(
            packets.len(),
            run.events.len(),
            "one packet per event:\n{fields}"
        );
        let datagram = 40 + 8 + PAYLOAD.len();
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

// =============================================================================================
// The kernel's filter against tcpdump's, on real traffic.

/// The key by which a packet is recognised on both sides: protocol, addresses, ports as the
/// tracer's JSON shows them (`-` for none); every non-IP packet (ARP) is `other`.
fn key_of_event(e: &Value) -> String {
    if e["src"].is_null() {
        return "other".into();
    }
    let s = |v: &Value| if v.is_null() { "-".into() } else { text(v) };
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

/// The keys of the packets of a pcap stream.
fn keys_of_pcap(pcap: impl Read) -> BTreeSet<String> {
    let mut r = pcap_file::pcap::PcapReader::new(pcap).unwrap();
    let mut keys = BTreeSet::new();
    while let Some(pkt) = r.next_packet() {
        keys.insert(key_of_frame(&pkt.unwrap().data));
    }
    keys
}

/// `tcpdump -i IFACE -w PCAP` in a namespace; stopped (or killed, if a test fails first)
/// when dropped.
struct Tcpdump(Child);

impl Tcpdump {
    /// Starts the capture and returns once it is open (tcpdump says "listening on …").
    fn start(ns: &Netns, iface: &str, pcap: &Path) -> Tcpdump {
        let (iface, pcap) = (iface.to_string(), pcap.to_path_buf());
        let mut capture = Tcpdump(ns.run(move || {
            Command::new("tcpdump")
                .args(["-i", &iface, "-U", "-n", "-w"])
                .arg(&pcap)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("cannot run tcpdump: apt-get install tcpdump")
        }));
        // Read in place: the pipe stays open until tcpdump is stopped. It writes its statistics
        // there on exit; a closed pipe would kill it (SIGPIPE) before it wrote the capture.
        let err = capture.0.stderr.as_mut().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("listening on") {
            assert_eq!(
                err.read(&mut byte).unwrap(),
                1,
                "tcpdump: {}",
                String::from_utf8_lossy(&seen)
            );
            seen.push(byte[0]);
        }
        capture
    }

    /// Ctrl-C: tcpdump writes what it has and exits.
    fn stop(mut self) {
        // Our own child, not yet waited for: its pid cannot have been reused.
        kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT).unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
            s.send_to(PAYLOAD, dst).unwrap();
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
    as_root(|| {
        let (a, _b) = cable(
            "tf",
            &["10.9.0.1/24", "fd09::1/64"],
            &["10.9.0.2/24", "fd09::2/64"],
        );
        let ours = ["10.9.0.1", "10.9.0.2", "fd09::1", "fd09::2"];
        let in_universe =
            |k: &String| k == "other" || ours.iter().any(|a| k.split(' ').any(|w| w == *a));
        let dir = TempPath::new("kfilter");
        std::fs::create_dir_all(&dir).unwrap();
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
            let capture = Tcpdump::start(&a, "tf-a", &pcap);
            let t = Tracer::path().netns(&a).duration(3.0).filter(expr).start();
            varied_traffic(&a);
            let run = t.finish();
            capture.stop();

            let got: BTreeSet<String> = run
                .events
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
            let mut want = keys_of_pcap(&out.stdout[..]);
            want.retain(in_universe);
            let mut all = keys_of_pcap(std::fs::File::open(&pcap).unwrap());
            all.retain(in_universe);
            assert!(
                !want.is_empty() && want.len() < all.len(),
                "{expr:?} must match some but not all of the traffic: {want:?} of {all:?}"
            );
            assert_eq!(
                got, want,
                "{expr:?}: tracer (left) vs tcpdump (right); stderr: {}",
                run.stderr
            );
            eprintln!(
                "{expr:?}: {} of {} flows, {} events, as tcpdump",
                want.len(),
                all.len(),
                run.events.len()
            );
            checked += 1;
        }
        assert_eq!(checked, 12);
    });
}

/// The verifier accepts the longest filter programs: the three longest expressions of the
/// differential test and one of the maximum length (64 instructions).
#[test]
fn every_differential_expression_loads_in_the_kernel() {
    as_root(|| {
        let ns = Netns::new();
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
            let t = Tracer::drops()
                .netns(&ns)
                .duration(0.2)
                .filter(expr)
                .start();
            let run = t.finish();
            assert!(!run.stderr.contains("verifier"), "{expr:?}: {}", run.stderr);
        }
    });
}

// =============================================================================================
// Conntrack at every hop.

/// Namespaces A (10.99.0.1) and B (10.99.0.2) joined by a veth cable, where only B runs NAT
/// (so only B's skbs get conntrack entries): B DNATs UDP port 47013 to 47014, where an echo
/// socket answers, port 47016 to 47015, which B's INPUT chain drops, and port 47017 to 47018,
/// where nothing listens.
fn cable_with_dnat_in_b() -> (Netns, Netns) {
    let (a, b) = cable("ct", &["10.99.0.1/24"], &["10.99.0.2/24"]);
    b.nft(
        "table ip tracer_ct {
            chain pre {
                type nat hook prerouting priority -100;
                udp dport 47013 dnat to 10.99.0.2:47014;
                udp dport 47016 dnat to 10.99.0.2:47015;
                udp dport 47017 dnat to 10.99.0.2:47018;
            }
            chain in {
                type filter hook input priority 0;
                udp dport 47015 drop;
            }
        }",
    );
    (a, b)
}

/// `tracer path` reads the skb's conntrack entry at every hop: none in A (no NAT there, so no
/// conntrack); in B, `reply` on the echo's answer to a DNATed request, whose entry has then
/// seen a reply; and, as in the story, a DNATed datagram that finds no socket: the ICMP error
/// about it is `related_reply` to the entry the datagram started, confirmed (it passed every
/// hook) with the DNAT set up on it. The tuples are the entry's own, in the kernel's order: the
/// reply tuple names the NEW destination.
#[test]
fn conntrack_at_every_hop_of_a_dnat_and_its_answer() {
    as_root(|| {
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
        let t = Tracer::path()
            .duration(3.0)
            .filter("(udp and (port 47013 or port 47014 or port 47017 or port 47018)) or (icmp and host 10.99.0.1)")
            .start();
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
        let run = t.finish();
        let ours: Vec<&Value> = run
            .events
            .iter()
            .filter(|e| e["netns"] == a.inode || e["netns"] == b.inode)
            .filter(|e| e["sport"] == port || e["dport"] == port || e["proto"] == "icmp")
            .collect();
        let dump = dump(ours.iter().copied());
        assert!(!ours.is_empty(), "nothing traced; stderr: {}", run.stderr);

        // A has no conntrack: none of its events carries an entry.
        let in_a: Vec<&&Value> = ours.iter().filter(|e| e["netns"] == a.inode).collect();
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
        let in_b = |e: &&&Value| e["netns"] == b.inode && e.get("ct").is_some();

        // The answer in B, leaving: the request's entry, in the reply direction.
        let answer = ours
            .iter()
            .filter(in_b)
            .find(|e| e["dport"] == port && e["event"] == "net_dev_queue")
            .unwrap_or_else(|| panic!("the answer leaving B not seen:\n{dump}"));
        assert_eq!(answer["sport"], 47013, "un-DNATed before it leaves\n{dump}");
        assert_ct(
            answer,
            "reply",
            &format!("10.99.0.1:{port}>10.99.0.2:47013"),
            &format!("10.99.0.2:47014>10.99.0.1:{port}"),
            &dump,
        );
        for bit in ["CONFIRMED", "DST_NAT", "SEEN_REPLY"] {
            assert!(has_ct_bit(answer, bit), "{bit} missing:\n{dump}");
        }
        assert!(!has_ct_bit(answer, "SRC_NAT"), "no SNAT here:\n{dump}");

        // The datagram to 47017, DNATed to a port nobody listens on, started an entry. UDP
        // lets go of it before the drop (`nf_reset_ct`), so kfree_skb shows none; but B's ICMP
        // "port unreachable" about it is conntrack's RELATED traffic, in the reply direction of
        // the very entry the datagram started.
        let error = ours
            .iter()
            .filter(in_b)
            .find(|e| e["proto"] == "icmp" && e["event"] == "net_dev_queue")
            .unwrap_or_else(|| panic!("B's ICMP error not seen:\n{dump}"));
        assert_ct(
            error,
            "related_reply",
            &format!("10.99.0.1:{port}>10.99.0.2:47017"),
            &format!("10.99.0.2:47018>10.99.0.1:{port}"),
            &dump,
        );
        for bit in ["CONFIRMED", "DST_NAT"] {
            assert!(has_ct_bit(error, bit), "{bit} missing:\n{dump}");
        }
        assert!(
            !has_ct_bit(error, "SEEN_REPLY") && !has_ct_bit(error, "SRC_NAT"),
            "{dump}"
        );
    });
}

/// A datagram DNATed in B, then dropped by B's INPUT chain: conntrack had created its entry in
/// PREROUTING, but the packet never reached the end of the hooks where entries are confirmed,
/// so the drop shows a `new`, unconfirmed entry — with the DNAT already set up on it.
#[test]
fn a_drop_before_confirmation_shows_an_unconfirmed_entry() {
    as_root(|| {
        let (a, b) = cable_with_dnat_in_b();
        let t = Tracer::path()
            .duration(3.0)
            .filter("udp and port 47015")
            .start();
        let port = a.send_udp("10.99.0.2:47016");
        let run = t.finish();
        let dump = run.dump();
        let drop = run.drop_of(port);
        assert_eq!(drop["netns"], b.inode, "{dump}");
        assert_eq!(drop["reason"], "SKB_DROP_REASON_NETFILTER_DROP", "{dump}");
        assert_ct(
            drop,
            "new",
            &format!("10.99.0.1:{port}>10.99.0.2:47016"),
            &format!("10.99.0.2:47015>10.99.0.1:{port}"),
            &dump,
        );
        assert!(has_ct_bit(drop, "DST_NAT"), "{dump}");
        assert!(!has_ct_bit(drop, "CONFIRMED"), "{dump}");
    });
}

// =============================================================================================
// `path --verdicts`: nftables rule tracing in the namespaces the user names.

/// The story's rule, in miniature: A (10.98.0.1) sends to B (10.98.0.2) port 47010 over the
/// cable tv-a/tv-b. B has Docker's NAT rules, written with iptables-nft as Docker writes them:
/// PREROUTING jumps to DOCKER, DOCKER RETURNs for packets from the bridge side (`-i tv-b`),
/// before the DNAT rule that would send port 47010 to 47011. The datagram arrives from tv-b,
/// so DOCKER returns, no DNAT happens, and it dies with NO_SOCKET on 47010.
fn cable_with_docker_rules() -> (Netns, Netns) {
    let (a, b) = cable("tv", &["10.98.0.1/24"], &["10.98.0.2/24"]);
    b.sh(
        "iptables-nft -t nat -N DOCKER && \
         iptables-nft -t nat -A PREROUTING -p udp -j DOCKER && \
         iptables-nft -t nat -A DOCKER -i tv-b -j RETURN && \
         iptables-nft -t nat -A DOCKER -p udp --dport 47010 -j DNAT --to-destination 10.98.0.2:47011",
    );
    (a, b)
}

/// The rule that decided is shown under the hop where the packet entered B: DOCKER's RETURN
/// for `-i tv-b`, and never the DNAT rule after it.
#[test]
fn verdicts_show_the_docker_chain_return() {
    as_root(|| {
        let (a, b) = cable_with_docker_rules();
        let root_tables = RootTables::now();
        let t = Tracer::path()
            .verdicts(&b)
            .duration(3.0)
            .filter("udp and port 47010")
            .start();
        let table = t.nft_table();
        assert_table_made(&b, &table, "B");
        assert!(!a.nft_tables().contains(&table), "A was not named");
        root_tables.assert_unchanged();
        let sport = a.send_udp("10.98.0.2:47010");
        let run = t.finish();
        let dump = run.dump();
        let ours = run.sent_from_port(sport);
        let with_verdicts: Vec<&&Value> = ours
            .iter()
            .filter(|e| e.get("verdicts").is_some())
            .collect();
        assert_eq!(
            with_verdicts.len(),
            1,
            "verdicts belong under one hop, where the datagram entered B; stderr: {}\n{dump}",
            run.stderr
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
        let drop = run.drop_of(sport);
        assert_eq!(drop["dport"], 47010, "no DNAT happened: {dump}");
        assert_table_gone(&b, &table, "normal exit");
        root_tables.assert_unchanged();
    });
}

/// The tracer's table goes with the tracer however it ends: Ctrl-C (SIGINT), and SIGKILL,
/// which nothing in the tracer can handle (the `owner` flag: the kernel removes the table
/// with the netlink socket that made it).
#[test]
fn the_verdict_table_dies_with_the_tracer() {
    as_root(|| {
        let ns = Netns::new();
        let root_tables = RootTables::now();
        for signal in [Signal::SIGINT, Signal::SIGKILL] {
            let mut t = Tracer::path().verdicts(&ns).filter("udp").start();
            let table = t.nft_table();
            assert_table_made(&ns, &table, "the namespace");
            root_tables.assert_unchanged();
            let status = t.stop_with(signal);
            if signal == Signal::SIGINT {
                let (_, err) = t.output();
                assert!(status.success(), "{status}: {err}");
            }
            assert_table_gone(&ns, &table, &format!("{signal}"));
        }
        root_tables.assert_unchanged();
    });
}

/// A lab node name that is in fact the machine's root namespace is refused: the root
/// namespace gets a table only when named by its inode. A namespace without rules is said
/// to have nothing to trace.
#[test]
fn verdicts_refuse_the_root_namespace_by_name_and_say_when_nothing_can_decide() {
    as_root(|| {
        let root_tables = RootTables::now();
        // The tests run in the root namespace; /proc/1 may not be readable in a container,
        // our own namespace is.
        let root = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let names = TempPath::new("names.json");
        std::fs::write(
            &names,
            format!(r#"{{"pid": 0, "nodes": {{"sneaky": {root}}}}}"#),
        )
        .unwrap();
        let (status, err) = run_tracer(&[
            "path",
            "--verdicts",
            "sneaky",
            "--duration",
            "0.1",
            "--netns-names",
            names.as_str(),
        ]);
        assert!(!status.success(), "{err}");
        assert!(
            err.contains("that node is the machine's root namespace (or the tracer's own)"),
            "{err}"
        );
        root_tables.assert_unchanged();

        let ns = Netns::new();
        let t = Tracer::path()
            .verdicts(&ns)
            .duration(0.5)
            .filter("udp")
            .start();
        let run = t.finish();
        assert!(
            run.stderr
                .contains("no nftables table but the tracer's own"),
            "{}",
            run.stderr
        );
        assert!(ns.nft_tables().is_empty(), "{:?}", ns.nft_tables());
    });
}

/// On a kernel without nftables' owner flag (Linux < 5.12; simulated here), the tracer deletes
/// its table itself on a normal exit and on Ctrl-C, and says that a SIGKILL would leave it.
#[test]
fn without_the_owner_flag_the_table_is_deleted_and_the_sigkill_gap_is_said() {
    as_root(|| {
        let ns = Netns::new();
        let without_owner_flag = || {
            Tracer::path()
                .verdicts(&ns)
                .env(tracer::nftrace::NO_OWNER_FLAG, "1")
        };
        let t = without_owner_flag().duration(0.5).start();
        let table = t.nft_table();
        assert_table_made(&ns, &table, "the namespace");
        let run = t.finish();
        assert!(
            run.stderr.contains("no nftables `owner` flag")
                && run.stderr.contains("a SIGKILL would leave it"),
            "{}",
            run.stderr
        );
        // Deleted by the tracer, not by the kernel: at once.
        assert!(!ns.nft_tables().contains(&table), "normal exit");

        let mut t = without_owner_flag().start();
        let table = t.nft_table();
        t.stop_with(Signal::SIGINT);
        assert!(!ns.nft_tables().contains(&table), "Ctrl-C");
    });
}
