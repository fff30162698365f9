//! The tracer's main loop, shared by the binary and the tests: load, attach, announce readiness,
//! print events until stopped, report lost events.

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use nix::sys::signal::{SigSet, Signal};
use tracer_common::Filter;

use crate::btf::{self, SkbTracepoint};
use crate::collection::{KernelInfo, LoadOptions, Tracer};
use crate::explain;
use crate::kallsyms::Kallsyms;
use crate::nodes::{self, NodeNames};
use crate::output::{self, Clock, Decoder, Mode, Record};
use crate::pcap::PcapExport;

/// Everything the command line decides.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub mode: Mode,
    /// Already parsed and checked ([`crate::filter::parse`]).
    pub filter: Filter,
    pub track_skb: bool,
    pub json: bool,
    /// Created once every program is attached (like pwru's `--ready-file`).
    pub ready_file: Option<PathBuf>,
    pub duration: Option<Duration>,
    /// Stop after this many events.
    pub count: Option<u64>,
    /// `drops`: explain NO_SOCKET drops of UDP datagrams from the namespace's conntrack table.
    pub explain: bool,
    pub netns_names: Option<PathBuf>,
    /// `path`: only these tracepoints (default: every one with an skb argument).
    pub tracepoints: Option<Vec<String>>,
    /// Ring buffer size in KiB (0 = default 4 MiB). Small values demonstrate lost events.
    pub ring_kib: u32,
    /// `path --pcap FILE`: also write every event as a pcapng packet ([`crate::pcap`]).
    pub pcap: Option<PathBuf>,
    /// `path --verdicts`: trace nftables verdicts in these namespaces ([`crate::nftrace`]).
    pub verdicts: Vec<crate::nftrace::Target>,
}

impl RunOptions {
    /// Defaults for a mode: no filter, human output, runs until stopped.
    pub fn new(mode: Mode) -> RunOptions {
        RunOptions {
            mode,
            filter: Filter::default(),
            track_skb: false,
            json: false,
            ready_file: None,
            duration: None,
            count: None,
            explain: false,
            netns_names: None,
            tracepoints: None,
            ring_kib: 0,
            pcap: None,
            verdicts: Vec::new(),
        }
    }
}

/// What happened, for the final message.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub lost: u64,
    pub attached: usize,
    pub attach_time: Duration,
    /// `--verdicts`: verdicts that matched no hop shown.
    pub unmatched_verdicts: u64,
    /// `--verdicts`: overflows of the trace socket (events the kernel could not deliver).
    pub lost_verdicts: u64,
}

static STOP: AtomicBool = AtomicBool::new(false);

/// Makes Ctrl-C (SIGINT) and SIGTERM set the returned flag instead of killing the process, so
/// the tracer can detach cleanly and print its lost-event count. The main loop sees the flag
/// within one poll timeout (at most 100 ms). A SECOND signal kills the process the default way
/// — e.g. when output is blocked because `tracer | less` is paused (the kernel still detaches
/// everything: nothing is pinned).
///
/// No signal handler is involved (a handler may only do async-signal-safe things, and
/// installing one is `unsafe`): the signals are *blocked*, so they wait as pending, and one
/// watcher thread takes them with `sigwait`. Call this before starting any other thread:
/// threads inherit the blocked set from the thread that starts them, and a thread that does
/// not block the signals would still be killed by them.
pub fn stop_on_signals() -> &'static AtomicBool {
    let signals = SigSet::from_iter([Signal::SIGINT, Signal::SIGTERM]);
    if signals.thread_block().is_err() {
        return &STOP; // cannot happen with valid signals; the signals then simply kill us
    }
    let watcher = std::thread::Builder::new()
        .name("tracer-signals".into())
        .spawn(move || {
            if signals.wait().is_ok() {
                STOP.store(true, Ordering::SeqCst);
            }
            // From now on this thread lets the signals in: the next one is delivered here,
            // with its default action (terminate the process).
            let _ = signals.thread_unblock();
            loop {
                std::thread::park();
            }
        });
    if watcher.is_err() {
        let _ = signals.thread_unblock(); // no watcher: keep the default behaviour
    }
    &STOP
}

/// Which tracepoints a mode attaches to.
pub fn select_tracepoints(kernel: &KernelInfo, opts: &RunOptions) -> Result<Vec<SkbTracepoint>> {
    Ok(match opts.mode {
        Mode::Drops => vec![btf::kfree_skb_tracepoint(&kernel.btf)?],
        Mode::Path => {
            let all = btf::skb_tracepoints(&kernel.btf)?;
            match &opts.tracepoints {
                None => all,
                Some(wanted) => {
                    let mut out = Vec::new();
                    for w in wanted {
                        match all.iter().find(|t| &t.name == w) {
                            Some(t) => out.push(t.clone()),
                            None => bail!(
                                "tracepoint {w:?} has no sk_buff argument in this kernel; \
                                 candidates: {}",
                                all.iter()
                                    .map(|t| t.name.as_str())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            ),
                        }
                    }
                    out
                }
            }
        }
    })
}

/// Adds the `--explain` text to a NO_SOCKET UDP drop, or a note why it cannot.
fn add_explanation(r: &mut Record) {
    if r.reason.as_deref() != Some("SKB_DROP_REASON_NO_SOCKET") || r.proto != "udp" {
        return;
    }
    let (Some(src), Some(dst), Some(sport), Some(dport)) = (r.src, r.dst, r.sport, r.dport) else {
        return;
    };
    let dropped = explain::Flow {
        src,
        dst,
        sport,
        dport,
    };
    r.explain = Some(match explain::read_conntrack(r.netns) {
        Ok(text) => explain::explain_no_socket(&dropped, &explain::parse_conntrack(&text))
            .unwrap_or_else(|| {
                format!(
                    "no socket on {} and no conntrack entry expecting this datagram from another \
                     address: nothing was listening there",
                    match dst {
                        std::net::IpAddr::V4(a) => format!("{a}:{dport}"),
                        std::net::IpAddr::V6(a) => format!("[{a}]:{dport}"),
                    }
                )
            }),
        Err(e) => format!(
            "cannot read the conntrack table of netns {}: {e:#}",
            r.netns
        ),
    });
}

/// Runs the tracer until `stop` is set, `--duration` passed or `--count` events were printed.
/// Events go to `out`; notes (skipped tracepoints) go to stderr.
pub fn run(opts: &RunOptions, out: &mut dyn Write, stop: &AtomicBool) -> Result<Summary> {
    let kernel = KernelInfo::load()?;
    let tracepoints = select_tracepoints(&kernel, opts)?;
    // Created before anything is loaded: a path we cannot write is an error at once.
    let mut pcap = opts.pcap.as_deref().map(PcapExport::create).transpose()?;
    let load = LoadOptions {
        filter: opts.filter,
        track_skb: opts.track_skb,
        ring_bytes: opts.ring_kib.saturating_mul(1024),
        copy_headers: pcap.is_some(),
    };
    let mut tracer = Tracer::load_with(&kernel, &tracepoints, &load)?;
    for (name, why) in &tracer.skipped {
        eprintln!("note: skipped tracepoint {name}: {why}");
    }
    let kallsyms = Kallsyms::load().unwrap_or_default();
    let nodes = NodeNames::new(Some(nodes::registry_dir()), opts.netns_names.as_deref())?;
    let mut decoder = Decoder {
        slot_names: tracer.slot_names.clone(),
        reasons: kernel.reasons.clone(),
        kallsyms,
        nodes: Some(nodes),
        clock: Clock::now(),
        conntrack: kernel.conntrack.clone().ok(),
    };
    if let Err(why) = &kernel.conntrack {
        eprintln!("note: no conntrack column: {why}");
    }
    let mut summary = Summary {
        attached: tracer.attached(),
        attach_time: tracer.attach_time,
        ..Default::default()
    };
    // nftables tracing starts before the ready file: what is sent after it is traced.
    let nftrace = if opts.verdicts.is_empty() {
        None
    } else {
        let nf = crate::nftrace::NfTrace::start(&opts.verdicts)?;
        for note in &nf.notes {
            eprintln!("note: {note}");
        }
        Some(nf)
    };
    let mut joiner = crate::nftrace::join::Joiner::default();
    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot create --ready-file {}", path.display()))?;
    }
    if !opts.json {
        writeln!(out, "{}", output::header(opts.mode))?;
    }
    let started = Instant::now();
    let mut write_error = None;
    let mut pcap_error = None;
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if opts.count.is_some_and(|c| summary.events >= c) {
            break;
        }
        let mut timeout = Duration::from_millis(100);
        if let Some(d) = opts.duration {
            let left = d.saturating_sub(started.elapsed());
            if left.is_zero() {
                break;
            }
            timeout = timeout.min(left);
        }
        tracer.poll(timeout, |ev| {
            if write_error.is_some() || opts.count.is_some_and(|c| summary.events >= c) {
                return;
            }
            let mut record = decoder.decode(ev);
            if opts.explain {
                add_explanation(&mut record);
            }
            summary.events += 1;
            if let Some(pcap) = pcap.as_mut().filter(|_| pcap_error.is_none()) {
                if let Err(e) = pcap.write(&record, ev) {
                    pcap_error = Some(e);
                }
            }
            if nftrace.is_some() {
                joiner.push_record(record, Instant::now());
            } else if let Err(e) = write_record(out, &record, opts) {
                write_error = Some(e);
            }
        })?;
        if let Some(nf) = &nftrace {
            let now = Instant::now();
            for verdict in nf.verdicts.try_iter() {
                joiner.push_verdict(verdict, now);
            }
            for record in joiner.ready(now, false) {
                if let Err(e) = write_record(out, &record, opts) {
                    write_error = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = write_error.take() {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                break; // `tracer … | head`: the reader is gone, stop quietly.
            }
            return Err(e).context("cannot write output");
        }
        if let Some(e) = pcap_error.take() {
            return Err(e);
        }
        out.flush()?;
        if let Some(pcap) = &mut pcap {
            pcap.flush()?;
        }
    }
    if let Some(pcap) = pcap {
        pcap.finish()?;
    }
    if let Some(nf) = nftrace {
        let now = Instant::now();
        for verdict in nf.verdicts.try_iter() {
            joiner.push_verdict(verdict, now);
        }
        summary.lost_verdicts = nf.lost();
        drop(nf); // stops the threads: their tables go
        for record in joiner.ready(now, true) {
            if write_record(out, &record, opts).is_err() {
                break;
            }
        }
        summary.unmatched_verdicts = joiner.unmatched;
    }
    summary.lost = tracer.lost()?;
    Ok(summary)
}

/// One record, as columns or JSON.
fn write_record(out: &mut dyn Write, record: &Record, opts: &RunOptions) -> std::io::Result<()> {
    let line = if opts.json {
        output::format_json(record)
    } else {
        output::format_human(record, opts.mode)
    };
    writeln!(out, "{line}")
}
