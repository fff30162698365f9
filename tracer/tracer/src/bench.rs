//! `tracer bench`: what does tracing cost?
//!
//! Everything runs inside a network namespace made for the purpose (a thread that calls
//! `unshare(CLONE_NEWNET)`): a sender floods 64-byte UDP datagrams over its loopback to a
//! receiver that drains them, for a fixed time, and we count datagrams per second
//! - with no tracer,
//! - with `drops` (one program on kfree_skb),
//! - with `path` (every skb tracepoint) and a filter that matches nothing,
//! - with `path` and a filter that matches the flood: every datagram becomes several events, and
//!   we count how many reach userspace and how many are lost (ring buffer full),
//! - with bpftrace counting `tracepoint:skb:kfree_skb`, when bpftrace is installed (it needs
//!   tracefs, mounted only inside a private mount namespace of its own).
//!
//! This is a benchmark, not a test: the numbers depend on the machine and on its load.

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

/// Floods UDP inside the namespace for `time`; returns (sent/s, received/s).
fn flood(ns: &Netns, port_out: &mpsc::Sender<u16>, time: Duration) -> Result<(f64, f64)> {
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
    let payload = [0x42u8; 64];
    let started = Instant::now();
    let mut sent = 0u64;
    while started.elapsed() < time {
        for _ in 0..256 {
            if tx_sock.send_to(&payload, ("127.0.0.1", port)).is_ok() {
                sent += 1;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let _ = receiver.join();
    Ok((
        sent as f64 / secs,
        received.load(Ordering::Relaxed) as f64 / secs,
    ))
}

/// One measurement with a tracer loaded: floods while draining the ring buffer.
struct Traced {
    attach: Duration,
    attached: usize,
    sent: f64,
    received: f64,
    events: f64,
    lost: u64,
}

fn traced(
    kernel: &KernelInfo,
    ns: &Netns,
    tps: &[btf::SkbTracepoint],
    filter: Filter,
    time: Duration,
) -> Result<Traced> {
    let mut tracer = Tracer::load(kernel, tps, filter, false)?;
    let (attach, attached) = (tracer.attach_time, tracer.attached());
    let (port_tx, _port_rx) = mpsc::channel();
    let result = std::thread::scope(|s| -> Result<Traced> {
        let flooding = s.spawn(|| flood(ns, &port_tx, time));
        let mut events = 0u64;
        let started = Instant::now();
        while !flooding.is_finished() {
            events += tracer.poll(Duration::from_millis(20), |_| {})? as u64;
        }
        events += tracer.poll(Duration::from_millis(50), |_| {})? as u64;
        let secs = started.elapsed().as_secs_f64();
        let (sent, received) = flooding.join().map_err(|_| anyhow!("flood panicked"))??;
        Ok(Traced {
            attach,
            attached,
            sent,
            received,
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
        Some(flood(ns, &tx, time)?.0)
    } else {
        None
    };
    // Our own child, not yet waited for: its pid cannot have been reused.
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
    let _ = child.wait();
    let _ = reader.join();
    Ok(rate.map(|r| (attach, r)))
}

/// Runs every measurement and writes a Markdown table to `out`.
pub fn run(per: Duration, out: &mut dyn Write) -> Result<()> {
    if per < Duration::from_millis(200) {
        bail!("--seconds must be at least 0.2");
    }
    let t = Instant::now();
    let kernel = KernelInfo::load()?;
    let btf_time = t.elapsed();
    let ns = Netns::new()?;
    let all = btf::skb_tracepoints(&kernel.btf)?;
    let kfree = vec![btf::kfree_skb_tracepoint(&kernel.btf)?];
    let mut nothing = filter::parse("udp and port 1")?;
    filter::restrict(&mut nothing, Some(ns.inode), None);

    writeln!(
        out,
        "Reading the kernel's BTF (offsets, reasons, tracepoints): {:.0} ms",
        btf_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "UDP flood, 64-byte datagrams over loopback in a private namespace, {:.1} s per row.\n",
        per.as_secs_f64()
    )?;
    writeln!(
        out,
        "| setup | attach | datagrams/s sent | received | events/s to userspace | lost |"
    )?;
    writeln!(out, "|---|---|---|---|---|---|")?;
    let (tx, _rx) = mpsc::channel();
    let (sent, received) = flood(&ns, &tx, per)?;
    writeln!(out, "| no tracer | – | {sent:.0} | {received:.0} | – | – |")?;
    out.flush()?;

    let row = |out: &mut dyn Write, name: &str, r: Traced| -> Result<()> {
        writeln!(
            out,
            "| {name} | {} programs, {:.0} ms | {:.0} | {:.0} | {:.0} | {} |",
            r.attached,
            r.attach.as_secs_f64() * 1e3,
            r.sent,
            r.received,
            r.events,
            r.lost
        )?;
        out.flush()?;
        Ok(())
    };
    let r = traced(&kernel, &ns, &kfree, Filter::default(), per)?;
    row(out, "`drops` (kfree_skb), no filter", r)?;
    let r = traced(&kernel, &ns, &all, nothing, per)?;
    row(out, "`path`, non-matching filter", r)?;
    let mut everything = Filter::default();
    filter::restrict(&mut everything, Some(ns.inode), None);
    let r = traced(&kernel, &ns, &all, everything, per)?;
    row(out, "`path`, every skb of the flood", r)?;
    match bpftrace(&ns, per)? {
        Some((attach, rate)) => writeln!(
            out,
            "| bpftrace `tracepoint:skb:kfree_skb` count by reason | 1 probe, {:.0} ms (incl. start-up) | {rate:.0} | – | – | – |",
            attach.as_secs_f64() * 1e3
        )?,
        None => writeln!(out, "| bpftrace | not installed or could not attach | | | | |")?,
    }
    Ok(())
}
