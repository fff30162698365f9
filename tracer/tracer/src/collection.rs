//! Collection: loading the eBPF object, attaching it, and reading events from the ring buffer.
//!
//! Nothing here formats output. The steps, in order:
//! 1. [`check_privileges`]: loading BPF programs needs CAP_BPF + CAP_PERFMON (or root) in the
//!    initial user namespace. Say so in one line instead of failing with EPERM later.
//! 2. [`KernelInfo::load`]: read the running kernel's BTF once (offsets, drop reasons, tracepoints).
//! 3. [`Tracer::load`]: write the [`Config`] global (offsets + filter + one [`Slot`] per
//!    tracepoint), load one `tp_btf` program per tracepoint, attach it. The attachments are plain
//!    file descriptors owned by this process — nothing is pinned — so they all disappear when the
//!    [`Tracer`] is dropped or the process dies, even by SIGKILL.
//! 4. [`Tracer::poll`]: wait for events and hand each one to a callback.
//! 5. [`Tracer::lost`]: how many events did not fit in the ring buffer.

use std::os::fd::AsFd as _;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::{BtfTracePoint, ProgramError};
use aya::{Ebpf, EbpfLoader};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use tracer_common::{Config, Event, Filter, EVENT_BYTES_WITHOUT_HEADERS, LOST_INDEX, MAX_SLOTS};

use crate::btf::{self, Btf, DropReasons, SkbTracepoint, VMLINUX_BTF};

/// The compiled eBPF object (built by `build.rs` with aya-build).
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tracer"));

const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The command line, ready to be pasted after `sudo -E`.
fn rerun_hint() -> String {
    let args: Vec<String> = std::env::args().collect();
    if args.is_empty() {
        "sudo -E tracer …".into()
    } else {
        format!("sudo -E {}", args.join(" "))
    }
}

/// Fails with one line that says what is missing and what to run, unless this process may load
/// BPF programs: CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) in the INITIAL user namespace.
pub fn check_privileges() -> Result<()> {
    if !std::path::Path::new(VMLINUX_BTF).exists() {
        bail!(
            "{VMLINUX_BTF} is missing: this kernel was built without BTF (CONFIG_DEBUG_INFO_BTF=y), \
             which the tracer needs for tp_btf programs and struct offsets; use a kernel with BTF \
             (most distributions since 2020 ship it)"
        );
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    if !(has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON))) {
        bail!(
            "loading eBPF programs needs root (or CAP_BPF + CAP_PERFMON); build as yourself, then run: {}",
            rerun_hint()
        );
    }
    // Capabilities inside a user namespace (`unshare -Ur`) do not count for BPF.
    let uid_map = std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let identity = uid_map
        .split_whitespace()
        .collect::<Vec<_>>()
        .starts_with(&["0", "0", "4294967295"]);
    if !uid_map.is_empty() && !identity {
        bail!(
            "this process runs in a user namespace, where eBPF is refused even to its root; run \
             from the initial namespace: {}",
            rerun_hint()
        );
    }
    Ok(())
}

/// What the tracer reads from the running kernel's BTF, once.
pub struct KernelInfo {
    pub btf: Btf,
    /// aya's own BTF, which its loader needs to resolve attach targets.
    pub aya_btf: aya::Btf,
    pub offsets: tracer_common::Offsets,
    pub reasons: DropReasons,
    /// Reads the conntrack entry of events, or says why this kernel shows none (no
    /// `CONFIG_NF_CONNTRACK`: no `sk_buff._nfct` in its BTF). Not an error: the tracer runs
    /// without it.
    pub conntrack: std::result::Result<crate::conntrack::CtDecoder, String>,
}

impl KernelInfo {
    /// Reads `/sys/kernel/btf/vmlinux` (≈100–200 ms: it describes ~100 000 types).
    pub fn load() -> Result<KernelInfo> {
        let btf = Btf::from_file(VMLINUX_BTF)?;
        let mut offsets = btf::skb_offsets(&btf)?;
        // `TRACER_CONNTRACK=off` leaves conntrack out (to measure what reading it costs).
        let off = std::env::var_os("TRACER_CONNTRACK").is_some_and(|v| v == "off");
        let conntrack = match crate::conntrack::CtDecoder::load_running(&btf) {
            Ok(_) if off => Err("switched off (TRACER_CONNTRACK=off)".to_string()),
            Ok((layout, decoder)) => {
                layout.apply(&mut offsets);
                Ok(decoder)
            }
            Err(why) => Err(format!("{why:#}")),
        };
        let reasons = btf::drop_reasons(&btf)?;
        let aya_btf = aya::Btf::from_sys_fs().context("aya cannot parse the kernel's BTF")?;
        Ok(KernelInfo {
            btf,
            aya_btf,
            offsets,
            reasons,
            conntrack,
        })
    }
}

/// A loaded and attached tracer.
pub struct Tracer {
    /// Owns every program and link; dropping it detaches everything.
    _ebpf: Ebpf,
    ring: RingBuf<MapData>,
    lost: PerCpuArray<MapData, u64>,
    /// Tracepoint name per slot (index = `Event::slot`).
    pub slot_names: Vec<String>,
    /// Tracepoints that could not be attached, with the reason.
    pub skipped: Vec<(String, String)>,
    /// How long loading and attaching took, in all.
    pub attach_time: Duration,
    /// Of which: reading the object file and creating its maps, before any program is loaded.
    pub object_time: Duration,
    attached: usize,
}

/// Describes a loading error, with the verifier's log when there is one.
///
/// The kernel answers a program its verifier rejects with EACCES ("Permission denied") or
/// EINVAL, and explains why only in the verifier's log: say that the verifier rejected it
/// and show the end of the log, where the reason is — not a bare "Permission denied",
/// which reads like a missing privilege.
fn describe(e: &ProgramError) -> String {
    match e {
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => describe_load_error(io_error, &verifier_log.to_string()),
        other => format!("{other}"),
    }
}

/// [`describe`] for `BPF_PROG_LOAD`'s error and the verifier's log.
fn describe_load_error(io_error: &std::io::Error, log: &str) -> String {
    // The log ends with statistics ("verification time 139 usec", "processed 3 insns"):
    // without them, its last line is the reason.
    let statistics = |line: &&str| {
        line.starts_with("verification time ")
            || line.starts_with("stack depth ")
            || line.starts_with("processed ")
    };
    let tail: Vec<&str> = log
        .trim_end()
        .lines()
        .rev()
        .skip_while(statistics)
        .take(12)
        .collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    let tail = tail.join("\n");
    match io_error.raw_os_error() {
        Some(libc::EPERM) => format!(
            "the kernel refused to load the program ({io_error}): loading eBPF needs root, \
             or CAP_BPF + CAP_PERFMON"
        ),
        Some(libc::EACCES | libc::EINVAL) if !tail.is_empty() => format!(
            "the kernel's verifier rejected the program ({io_error}); the end of its log \
             (the last line says why, after the instruction it refused):\n{tail}"
        ),
        _ if !tail.is_empty() => format!(
            "the kernel did not load the program ({io_error}); the end of the verifier's log:\n{tail}"
        ),
        _ => format!("the kernel did not load the program: {io_error}"),
    }
}

#[cfg(test)]
mod describe_tests {
    use super::describe_load_error;
    use std::io::Error;

    #[test]
    fn a_verifier_rejection_is_named_with_its_log() {
        let log = "0: (79) r2 = *(u64 *)(r1 +0)\n1: (61) r0 = *(u32 *)(r2 +0)\nR2 invalid mem access 'scalar'\nprocessed 2 insns\n";
        let text = describe_load_error(&Error::from_raw_os_error(libc::EACCES), log);
        assert!(
            text.starts_with("the kernel's verifier rejected the program"),
            "{text}"
        );
        assert!(text.contains("R2 invalid mem access 'scalar'"), "{text}");
    }

    #[test]
    fn a_missing_privilege_is_not_blamed_on_the_verifier() {
        let text = describe_load_error(&Error::from_raw_os_error(libc::EPERM), "");
        assert!(text.contains("needs root"), "{text}");
        assert!(!text.contains("verifier"), "{text}");
    }
}

/// Loads one `tp_btf` program for `tracepoint` (the kernel verifies it then) and attaches it.
fn load_and_attach(
    program: &mut aya::programs::Program,
    tracepoint: &str,
    btf: &aya::Btf,
) -> Result<(), String> {
    let prog: &mut BtfTracePoint = program.try_into().map_err(|e| format!("{e}"))?;
    prog.load(tracepoint, btf)
        .and_then(|()| prog.attach().map(|_link| ()))
        .map_err(|e| describe(&e))
}

/// The name of the program for slot `i` in the tracer's own object: `slot_0` … `slot_63`.
pub fn program_name(i: usize) -> String {
    format!("slot_{i}")
}

/// How to load the tracer, besides which tracepoints.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadOptions {
    /// Evaluated in the kernel before anything is sent to userspace.
    pub filter: Filter,
    /// Keep following an skb address once it matched the filter (`--track-skb`).
    pub track_skb: bool,
    /// Ring buffer size in bytes (a power of two, at least one page); 0 = the default 4 MiB.
    pub ring_bytes: u32,
    /// Copy the packet's first bytes into every event (`Event::hdr`, for `path --pcap`).
    pub copy_headers: bool,
}

impl Tracer {
    /// Loads one program per tracepoint (at most [`MAX_SLOTS`]), configured with `filter`, and
    /// attaches them. `track_skb`: keep following an skb address once it matched.
    /// A tracepoint that fails to load or attach is skipped and listed in [`Tracer::skipped`];
    /// it is an error only if none could be attached.
    pub fn load(
        kernel: &KernelInfo,
        tracepoints: &[SkbTracepoint],
        filter: Filter,
        track_skb: bool,
    ) -> Result<Tracer> {
        let options = LoadOptions {
            filter,
            track_skb,
            ..Default::default()
        };
        Tracer::load_with(kernel, tracepoints, &options)
    }

    /// [`Tracer::load`] with every option.
    pub fn load_with(
        kernel: &KernelInfo,
        tracepoints: &[SkbTracepoint],
        options: &LoadOptions,
    ) -> Result<Tracer> {
        Tracer::load_object_with(kernel, EBPF_OBJECT, tracepoints, options, program_name)
    }

    /// Loads ANOTHER eBPF object that follows the same contract as the tracer's own (a course
    /// exercise's kernel side): a `CONFIG` global of type [`Config`], an `EVENTS` ring buffer of
    /// [`Event`]s, a `LOST` per-CPU array, and one `tp_btf` program per tracepoint, named by
    /// `program_name(slot index)`.
    pub fn load_object(
        kernel: &KernelInfo,
        object: &[u8],
        tracepoints: &[SkbTracepoint],
        filter: Filter,
        track_skb: bool,
        program_name: impl Fn(usize) -> String,
    ) -> Result<Tracer> {
        let options = LoadOptions {
            filter,
            track_skb,
            ..Default::default()
        };
        Tracer::load_object_with(kernel, object, tracepoints, &options, program_name)
    }

    /// The general form of every `load*` function.
    pub fn load_object_with(
        kernel: &KernelInfo,
        object: &[u8],
        tracepoints: &[SkbTracepoint],
        options: &LoadOptions,
        program_name: impl Fn(usize) -> String,
    ) -> Result<Tracer> {
        let LoadOptions {
            filter,
            track_skb,
            ring_bytes,
            copy_headers,
        } = *options;
        let started = Instant::now();
        if tracepoints.is_empty() {
            bail!("no tracepoint to attach to");
        }
        let mut skipped = Vec::new();
        let mut config = Config {
            offsets: kernel.offsets,
            filter,
            consumed_reason: kernel.reasons.value_of("SKB_CONSUMED").unwrap_or(u32::MAX),
            track_skb: track_skb as u8,
            copy_headers: copy_headers as u8,
            ..Config::ZERO
        };
        let mut slot_names = Vec::new();
        for tp in tracepoints {
            if slot_names.len() == MAX_SLOTS {
                skipped.push((
                    tp.name.clone(),
                    format!("more than {MAX_SLOTS} tracepoints"),
                ));
                continue;
            }
            config.slots[slot_names.len()] = tp.slot;
            slot_names.push(tp.name.clone());
        }

        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&kernel.aya_btf))
            .override_global("CONFIG", &config, true);
        if ring_bytes != 0 {
            if !ring_bytes.is_power_of_two() || ring_bytes < 4096 {
                bail!(
                    "the ring buffer size ({ring_bytes} bytes) must be a power of two of at least 4096 bytes"
                );
            }
            loader.map_max_entries("EVENTS", ring_bytes);
        }
        let mut ebpf = loader
            .load(object)
            .context("cannot load the tracer's eBPF object (maps, globals)")?;

        let object_time = started.elapsed();

        // Load and attach the programs, several at a time. Nearly all of the time goes to the
        // kernel's verifier (BPF_PROG_LOAD), which checks each program on the calling thread
        // and lets privileged callers verify in parallel: one thread per CPU divides the wait.
        // `programs_mut` hands out disjoint `&mut Program`s, so each thread owns its share.
        let wanted: std::collections::HashMap<String, usize> = (0..slot_names.len())
            .map(|i| (program_name(i), i))
            .collect();
        let mut work: Vec<(usize, &mut aya::programs::Program)> = ebpf
            .programs_mut()
            .filter_map(|(name, prog)| wanted.get(name).map(|&i| (i, prog)))
            .collect();
        work.sort_by_key(|(i, _)| *i);
        if let Some(missing) = (0..slot_names.len()).find(|&i| work.get(i).map(|w| w.0) != Some(i))
        {
            bail!(
                "program {} missing from the eBPF object",
                program_name(missing)
            );
        }
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 8)
            .min(work.len());
        // Deal the programs out like cards (0, 2, 4, … to the first thread), so that every
        // thread gets a fair share of the long and the short ones.
        let mut hands: Vec<Vec<(usize, &mut aya::programs::Program)>> =
            (0..threads).map(|_| Vec::new()).collect();
        for (k, item) in work.into_iter().enumerate() {
            hands[k % threads].push(item);
        }
        let slot_names_ref = &slot_names;
        let aya_btf = &kernel.aya_btf;
        let mut outcomes: Vec<(usize, Result<(), String>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = hands
                .into_iter()
                .map(|hand| {
                    scope.spawn(move || {
                        hand.into_iter()
                            .map(|(i, program)| {
                                let name = &slot_names_ref[i];
                                let result = load_and_attach(program, name, aya_btf);
                                (i, result)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| {
                    h.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
        outcomes.sort_by_key(|(i, _)| *i);
        let mut attached = 0;
        for (i, outcome) in outcomes {
            match outcome {
                Ok(()) => attached += 1,
                Err(e) => skipped.push((slot_names[i].clone(), e)),
            }
        }
        if attached == 0 {
            let why = skipped
                .first()
                .map(|(n, e)| format!("{n}: {e}"))
                .unwrap_or_default();
            bail!("no tracepoint could be attached (first failure: {why})");
        }

        let ring = RingBuf::try_from(
            ebpf.take_map("EVENTS")
                .ok_or_else(|| anyhow!("map EVENTS missing"))?,
        )?;
        let lost = PerCpuArray::try_from(
            ebpf.take_map("LOST")
                .ok_or_else(|| anyhow!("map LOST missing"))?,
        )?;
        Ok(Tracer {
            _ebpf: ebpf,
            ring,
            lost,
            slot_names,
            skipped,
            attach_time: started.elapsed(),
            object_time,
            attached,
        })
    }

    /// Number of tracepoints attached.
    pub fn attached(&self) -> usize {
        self.attached
    }

    /// Instructions the kernel's verifier processed, summed over the loaded programs (the
    /// `verified_insns` of `bpftool prog show`; Linux ≥ 5.16), or `None` if the kernel does not
    /// say. A measure of what loading costs that does not depend on how busy the machine is.
    pub fn verified_instructions(&self) -> Option<u64> {
        let mut sum = 0u64;
        let mut known = false;
        for (_, program) in self._ebpf.programs() {
            if let Some(n) = program
                .info()
                .ok()
                .and_then(|i| i.verified_instruction_count())
            {
                sum += u64::from(n);
                known = true;
            }
        }
        known.then_some(sum)
    }

    /// Waits up to `timeout` for events, then calls `on_event` for every event available.
    /// Returns the number of events handled.
    pub fn poll(&mut self, timeout: Duration, mut on_event: impl FnMut(&Event)) -> Result<usize> {
        let mut ring = [PollFd::new(self.ring.as_fd(), PollFlags::POLLIN)];
        // An error (EINTR: a signal arrived) only means "look now": read what is there.
        let _ = poll(
            &mut ring,
            PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
        );
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            // A whole `Event`, or (without --pcap) its first EVENT_BYTES_WITHOUT_HEADERS.
            if item.len() >= EVENT_BYTES_WITHOUT_HEADERS {
                let mut ev = Event::ZERO;
                let len = item.len().min(std::mem::size_of::<Event>());
                // SAFETY: `Event` is a Pod type (any bytes are a valid value) and at most its
                // size is copied into it, from an item at least that long.
                unsafe {
                    std::ptr::copy_nonoverlapping(item.as_ptr(), (&raw mut ev).cast::<u8>(), len)
                };
                on_event(&ev);
                n += 1;
            }
        }
        Ok(n)
    }

    /// Events the kernel side could not put in the ring buffer (summed over CPUs).
    pub fn lost(&self) -> Result<u64> {
        let values = self.lost.get(&LOST_INDEX, 0)?;
        Ok(values.iter().sum())
    }
}
