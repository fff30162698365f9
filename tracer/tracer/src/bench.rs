//! `tracer bench`: what does tracing cost?
//!
//! Everything runs inside a network namespace made for the purpose (a thread that calls
//! `unshare(CLONE_NEWNET)`): a sender floods 64-byte UDP datagrams over its loopback to a
//! receiver that drains them, for a fixed time, and we count datagrams per second
//! - with no tracer (measured before and after each traced row: each traced row is compared with
//!   the mean of the two bare rows around it, which cancels most of the drift of a busy machine),
//! - with `drops` (one program on kfree_skb),
//! - with `path` (every skb tracepoint) and a filter that matches nothing,
//! - with `path --netns` of a namespace no skb is in: the programs decide from the device
//!   alone, without reading a header — the floor of what 30 programs cost,
//! - with `path` and a filter that matches the flood: every datagram becomes several events, and
//!   we count how many reach userspace and how many are lost (ring buffer full),
//! - with `path` and the flood PACED to about 50 000 events/s: are any lost?
//! - with bpftrace counting `tracepoint:skb:kfree_skb`, when bpftrace is installed (it needs
//!   tracefs, mounted only inside a private mount namespace of its own).
//!
//! Then the start-up cost: loading and attaching every `path` program with no filter, a typical
//! filter and a 64-instruction one, as wall time, CPU time (all threads; the part of the wall time
//! that a busy machine cannot inflate) and instructions the verifier processed.
//!
//! This is a benchmark, not a test: the numbers depend on the machine and on its load, which is
//! printed with them (`/proc/loadavg` before and after).

use std::io::Write;
use std::net::UdpSocket;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracer_common::Filter;

use crate::btf;
use crate::collection::{KernelInfo, Tracer};
use crate::filter;

/// A namespace of our own: a thread that unshared its network namespace and runs jobs there.
struct Netns {
    jobs: Option<mpsc::Sender<Box<dyn FnOnce() + Send>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    inode: u32,
}

impl Netns {
    fn new() -> Result<Netns> {
        let (jobs_tx, jobs_rx) = mpsc::channel::<Box<dyn FnOnce() + Send>>();
        let (info_tx, info_rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            // Changes only this thread's network namespace.
            if let Err(errno) = unshare(CloneFlags::CLONE_NEWNET) {
                let _ = info_tx.send(Err(format!("unshare(CLONE_NEWNET): {errno}")));
                return;
            }
            let up = Command::new("ip")
                .args(["link", "set", "lo", "up"])
                .status();
            let inode = std::fs::metadata("/proc/thread-self/ns/net").map(|m| m.ino() as u32);
            let _ = info_tx.send(match (up, inode) {
                (Ok(s), Ok(i)) if s.success() => Ok(i),
                (up, inode) => Err(format!("ip link set lo up: {up:?}; inode: {inode:?}")),
            });
            for job in jobs_rx {
                job();
            }
        });
        let inode = info_rx
            .recv()
            .map_err(|_| anyhow!("namespace thread died"))?
            .map_err(|e| anyhow!("cannot make a network namespace: {e}"))?;
        Ok(Netns {
            jobs: Some(jobs_tx),
            thread: Some(thread),
            inode,
        })
    }

    fn run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .as_ref()
            .ok_or_else(|| anyhow!("namespace gone"))?
            .send(Box::new(move || {
                let _ = tx.send(f());
            }))
            .map_err(|_| anyhow!("namespace thread died"))?;
        rx.recv().map_err(|_| anyhow!("namespace thread died"))
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

/// What one flood measured.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct Rate {
    /// Datagrams sent per second.
    sent: f64,
    /// Datagrams the receiver read per second.
    received: f64,
    /// CPU time of the sending thread per datagram sent, in µs. On loopback, the sender's
    /// system call also runs the receive path in softirq (IP, UDP, the queue of the receiving
    /// socket) and so every tracepoint but the receiver's own. Unlike the rates, a busy machine
    /// changes it less: time spent waiting for a CPU is not counted.
    cpu_us_per_datagram: f64,
}

/// Floods UDP inside the namespace for `time` (at most `pace` datagrams/s, if given); returns
/// the rates. The port of the receiver is sent to `port_out`.
fn flood(
    ns: &Netns,
    port_out: &mpsc::Sender<u16>,
    time: Duration,
    pace: Option<f64>,
) -> Result<Rate> {
    let (rx_sock, tx_sock) = ns.run(|| -> std::io::Result<(UdpSocket, UdpSocket)> {
        Ok((
            UdpSocket::bind("127.0.0.1:0")?,
            UdpSocket::bind("127.0.0.1:0")?,
        ))
    })??;
    let port = rx_sock.local_addr()?.port();
    let _ = port_out.send(port);
    rx_sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let receiver = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if rx_sock.recv(&mut buf).is_ok() {
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let sender_cpu = thread_cpu_time();
    let payload = [0x42u8; 64];
    let started = Instant::now();
    let mut sent = 0u64;
    let batch = if pace.is_some() { 16 } else { 256 };
    while started.elapsed() < time {
        if let Some(rate) = pace {
            // Ahead of schedule: wait until the clock catches up.
            let due = Duration::from_secs_f64(sent as f64 / rate);
            let now = started.elapsed();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        for _ in 0..batch {
            if tx_sock.send_to(&payload, ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let sender_cpu = thread_cpu_time().saturating_sub(sender_cpu);
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    Ok(Rate {
        sent: sent as f64 / secs,
        received: received.load(Ordering::Relaxed) as f64 / secs,
        cpu_us_per_datagram: sender_cpu.as_secs_f64() * 1e6 / (sent.max(1) as f64),
    })
}

/// CPU time of the whole process (every thread), to tell the work of loading from the waiting
/// for a busy CPU.
fn process_cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// CPU time of the calling thread.
fn thread_cpu_time() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// The 1-minute load average (`/proc/loadavg`), to print beside the numbers.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// The cost of loading and attaching: wall time, CPU time, verified instructions.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct Attach {
    programs: usize,
    wall_ms: f64,
    /// Of `wall_ms`: reading the object and creating its maps.
    object_ms: f64,
    cpu_ms: f64,
    verified_insns: Option<u64>,
}

/// One measurement with a tracer loaded: floods while draining the ring buffer.
#[derive(Clone, Copy, Default, serde::Serialize)]
struct Traced {
    attach: Attach,
    rate: Rate,
    /// Events per second read from the ring buffer.
    events: f64,
    lost: u64,
}

/// Loads a tracer, measuring what that costs.
fn load(
    kernel: &KernelInfo,
    tps: &[btf::SkbTracepoint],
    filter: Filter,
) -> Result<(Tracer, Attach)> {
    let cpu = process_cpu_time();
    let tracer = Tracer::load(kernel, tps, filter, false)?;
    let attach = Attach {
        programs: tracer.attached(),
        wall_ms: tracer.attach_time.as_secs_f64() * 1e3,
        object_ms: tracer.object_time.as_secs_f64() * 1e3,
        cpu_ms: (process_cpu_time().saturating_sub(cpu)).as_secs_f64() * 1e3,
        verified_insns: tracer.verified_instructions(),
    };
    Ok((tracer, attach))
}

fn traced(
    kernel: &KernelInfo,
    ns: &Netns,
    tps: &[btf::SkbTracepoint],
    filter: Filter,
    time: Duration,
    pace: Option<f64>,
) -> Result<Traced> {
    let (mut tracer, attach) = load(kernel, tps, filter)?;
    let (port_tx, _port_rx) = mpsc::channel();
    let result = std::thread::scope(|s| -> Result<Traced> {
        let flooding = s.spawn(|| flood(ns, &port_tx, time, pace));
        let mut events = 0u64;
        let started = Instant::now();
        while !flooding.is_finished() {
            events += tracer.poll(Duration::from_millis(20), |_| {})? as u64;
        }
        events += tracer.poll(Duration::from_millis(50), |_| {})? as u64;
        let secs = started.elapsed().as_secs_f64();
        let rate = flooding.join().map_err(|_| anyhow!("flood panicked"))??;
        Ok(Traced {
            attach,
            rate,
            events: events as f64 / secs,
            lost: tracer.lost()?,
        })
    })?;
    Ok(result)
}
/// bpftrace counting kfree_skb by reason during a flood, if bpftrace is installed.
fn bpftrace(ns: &Netns, time: Duration) -> Result<Option<(Duration, f64)>> {
    if Command::new("bpftrace").arg("--version").output().is_err() {
        return Ok(None);
    }
    // Its own mount namespace: tracefs is mounted there only, and vanishes with it.
    let started = Instant::now();
    let mut child = Command::new("unshare")
        .args([
            "--mount",
            "sh",
            "-c",
            "mount -t tracefs none /sys/kernel/tracing && exec bpftrace -e \
             'tracepoint:skb:kfree_skb { @[args->reason] = count(); }'",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start bpftrace")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
        {
            if line.starts_with("Attaching") {
                let _ = ready_tx.send(());
            }
        }
    });
    let attached = ready_rx.recv_timeout(Duration::from_secs(30)).is_ok();
    let attach = started.elapsed();
    let rate = if attached {
        let (tx, _rx) = mpsc::channel();
        Some(flood(ns, &tx, time, None)?.sent)
    } else {
        None
    };
    // Our own child, not yet waited for: its pid cannot have been reused.
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    let _ = child.wait();
    let _ = reader.join();
    Ok(rate.map(|r| (attach, r)))
}

/// What `tracer bench` is asked for.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How long each flood lasts.
    pub per: Duration,
    /// Print one JSON object (every number, unrounded) after the tables.
    pub json: bool,
}

/// The events per second the paced row aims at (the target: none lost at this rate).
pub const PACED_EVENTS_PER_SEC: f64 = 50_000.0;

/// A filter of the maximum length (64 instructions): 13 `(host … and not port …)` joined by `or`.
pub fn longest_filter() -> String {
    (1..=13)
        .map(|i| format!("(host 10.0.0.{i} and not port {i})"))
        .collect::<Vec<_>>()
        .join(" or ")
}

/// Everything one run measured (the `--json` output).
#[derive(Default, serde::Serialize)]
struct Report {
    load_average_before: String,
    load_average_after: String,
    btf_ms: f64,
    seconds_per_row: f64,
    /// Every bare flood, in the order they ran.
    bare: Vec<Rate>,
    drops: Traced,
    /// `drops` datagrams/s ÷ the mean of the bare rows before and after it.
    drops_ratio: f64,
    /// `drops` CPU per datagram ÷ the same for the bare rows around it.
    drops_cpu_ratio: f64,
    path_nonmatching: Traced,
    path_nonmatching_ratio: f64,
    path_nonmatching_cpu_ratio: f64,
    /// `path --netns` of a namespace no skb is in: the cost of running the programs at all.
    path_other_netns: Traced,
    path_other_netns_ratio: f64,
    path_other_netns_cpu_ratio: f64,
    path_every_skb: Traced,
    path_paced: Traced,
    /// Datagrams/s the paced row was paced at.
    paced_datagrams_per_sec: f64,
    attach_no_filter: Attach,
    attach_typical_filter: Attach,
    attach_longest_filter: Attach,
    bpftrace: Option<(f64, f64)>,
}

/// Runs every measurement and writes Markdown tables to `out` (and JSON, if asked).
pub fn run(options: &Options, out: &mut dyn Write) -> Result<()> {
    let per = options.per;
    if per < Duration::from_millis(200) {
        bail!("--seconds must be at least 0.2");
    }
    let mut report = Report {
        load_average_before: load_average(),
        seconds_per_row: per.as_secs_f64(),
        ..Default::default()
    };
    let t = Instant::now();
    let kernel = KernelInfo::load()?;
    let btf_time = t.elapsed();
    report.btf_ms = btf_time.as_secs_f64() * 1e3;
    let ns = Netns::new()?;
    let all = btf::skb_tracepoints(&kernel.btf)?;
    let kfree = vec![btf::kfree_skb_tracepoint(&kernel.btf)?];
    let mut nothing = filter::parse("udp and port 1")?;
    filter::restrict(&mut nothing, Some(ns.inode), None);

    writeln!(
        out,
        "Load average (1 min) {}; reading the kernel's BTF (offsets, reasons, tracepoints): {:.0} ms",
        report.load_average_before,
        btf_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "UDP flood, 64-byte datagrams over loopback in a private namespace, {:.1} s per row; \
         each traced row is compared with the mean of the bare rows before and after it.\n",
        per.as_secs_f64()
    )?;
    writeln!(
        out,
        "| setup | attach | datagrams/s sent | vs bare | received | sender CPU µs/datagram | vs bare | events/s to userspace | lost |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|---|---|---|")?;
    let bare = |out: &mut dyn Write, report: &mut Report| -> Result<Rate> {
        let (tx, _rx) = mpsc::channel();
        let r = flood(&ns, &tx, per, None)?;
        writeln!(
            out,
            "| no tracer | – | {:.0} | – | {:.0} | {:.2} | – | – | – |",
            r.sent, r.received, r.cpu_us_per_datagram
        )?;
        out.flush()?;
        report.bare.push(r);
        Ok(r)
    };
    let percent =
        |x: Option<f64>| x.map_or("–".into(), |x| format!("{:+.0} %", (x - 1.0) * 100.0));
    let row =
        |out: &mut dyn Write, name: &str, r: &Traced, ratios: Option<(f64, f64)>| -> Result<()> {
            writeln!(
                out,
                "| {name} | {} programs, {:.0} ms | {:.0} | {} | {:.0} | {:.2} | {} | {:.0} | {} |",
                r.attach.programs,
                r.attach.wall_ms,
                r.rate.sent,
                percent(ratios.map(|r| r.0)),
                r.rate.received,
                r.rate.cpu_us_per_datagram,
                percent(ratios.map(|r| r.1)),
                r.events,
                r.lost
            )?;
            out.flush()?;
            Ok(())
        };
    let b0 = bare(out, &mut report)?;
    report.drops = traced(&kernel, &ns, &kfree, Filter::default(), per, None)?;
    let b1 = bare(out, &mut report)?;
    report.drops_ratio = report.drops.rate.sent / ((b0.sent + b1.sent) / 2.0);
    report.drops_cpu_ratio = report.drops.rate.cpu_us_per_datagram
        / ((b0.cpu_us_per_datagram + b1.cpu_us_per_datagram) / 2.0);
    row(
        out,
        "`drops` (kfree_skb), no filter",
        &report.drops,
        Some((report.drops_ratio, report.drops_cpu_ratio)),
    )?;
    report.path_nonmatching = traced(&kernel, &ns, &all, nothing, per, None)?;
    let b2 = bare(out, &mut report)?;
    report.path_nonmatching_ratio = report.path_nonmatching.rate.sent / ((b1.sent + b2.sent) / 2.0);
    report.path_nonmatching_cpu_ratio = report.path_nonmatching.rate.cpu_us_per_datagram
        / ((b1.cpu_us_per_datagram + b2.cpu_us_per_datagram) / 2.0);
    row(
        out,
        "`path`, non-matching filter",
        &report.path_nonmatching,
        Some((
            report.path_nonmatching_ratio,
            report.path_nonmatching_cpu_ratio,
        )),
    )?;
    // The floor: a namespace no skb is in (inode 1 is never a namespace's). Every program then
    // decides from the skb's device alone — three loads, no packet header, no filter program:
    // what remains is the cost of running 30 programs at all.
    let mut elsewhere = Filter::default();
    filter::restrict(&mut elsewhere, Some(1), None);
    report.path_other_netns = traced(&kernel, &ns, &all, elsewhere, per, None)?;
    let b3 = bare(out, &mut report)?;
    report.path_other_netns_ratio = report.path_other_netns.rate.sent / ((b2.sent + b3.sent) / 2.0);
    report.path_other_netns_cpu_ratio = report.path_other_netns.rate.cpu_us_per_datagram
        / ((b2.cpu_us_per_datagram + b3.cpu_us_per_datagram) / 2.0);
    row(
        out,
        "`path --netns` of another namespace (the floor)",
        &report.path_other_netns,
        Some((
            report.path_other_netns_ratio,
            report.path_other_netns_cpu_ratio,
        )),
    )?;
    let mut everything = Filter::default();
    filter::restrict(&mut everything, Some(ns.inode), None);
    report.path_every_skb = traced(&kernel, &ns, &all, everything, per, None)?;
    row(
        out,
        "`path`, every skb of the flood",
        &report.path_every_skb,
        None,
    )?;
    // Events per datagram, as the row above saw them: pace the flood to ≈50 000 events/s.
    let per_datagram =
        (report.path_every_skb.events / report.path_every_skb.rate.sent.max(1.0)).clamp(1.0, 64.0);
    report.paced_datagrams_per_sec = PACED_EVENTS_PER_SEC / per_datagram;
    report.path_paced = traced(
        &kernel,
        &ns,
        &all,
        everything,
        per,
        Some(report.paced_datagrams_per_sec),
    )?;
    row(
        out,
        &format!(
            "`path`, every skb, paced to {:.0} datagrams/s (≈{:.0}k events/s)",
            report.paced_datagrams_per_sec,
            PACED_EVENTS_PER_SEC / 1e3
        ),
        &report.path_paced,
        None,
    )?;
    report.bpftrace = bpftrace(&ns, per)?.map(|(attach, rate)| (attach.as_secs_f64() * 1e3, rate));
    match report.bpftrace {
        Some((attach_ms, rate)) => writeln!(
            out,
            "| bpftrace `tracepoint:skb:kfree_skb` count by reason | 1 probe, {attach_ms:.0} ms (incl. start-up) | {rate:.0} | – | – | – | – | – | – |"
        )?,
        None => writeln!(out, "| bpftrace | not installed or could not attach | | | | | | | |")?,
    }

    // Start-up: every `path` program, three filters.
    writeln!(
        out,
        "\nLoading and attaching every `path` program ({} tracepoints):\n",
        all.len()
    )?;
    writeln!(
        out,
        "| filter | wall | of which object + maps | CPU (all threads) | verified instructions |"
    )?;
    writeln!(out, "|---|---|---|---|---|")?;
    let typical = filter::parse("udp and port 4000")?;
    let longest = filter::parse(&longest_filter())?;
    let cases = [
        ("none", Filter::default()),
        ("`udp and port 4000`", typical),
        ("64 instructions (13 × `(host … and not port …)`)", longest),
    ];
    let mut attaches = Vec::new();
    for (name, f) in cases {
        let (tracer, a) = load(&kernel, &all, f)?;
        drop(tracer);
        writeln!(
            out,
            "| {name} | {:.0} ms | {:.0} ms | {:.0} ms | {} |",
            a.wall_ms,
            a.object_ms,
            a.cpu_ms,
            a.verified_insns.map_or("?".into(), |n| n.to_string())
        )?;
        out.flush()?;
        attaches.push(a);
    }
    report.attach_no_filter = attaches[0];
    report.attach_typical_filter = attaches[1];
    report.attach_longest_filter = attaches[2];
    report.load_average_after = load_average();
    writeln!(
        out,
        "\nLoad average (1 min) after: {}",
        report.load_average_after
    )?;
    if options.json {
        writeln!(out, "{}", serde_json::to_string(&report)?)?;
    }
    Ok(())
}
