//! # Exercise 5 — a packet-drop tracer
//!
//! When Linux drops a packet it frees its socket buffer with `kfree_skb_reason(skb, reason)`,
//! and the tracepoint `kfree_skb` fires with the skb and an `enum skb_drop_reason`. That is how
//! pwru found the story's `SKB_DROP_REASON_NO_SOCKET`. You rebuild that part of pwru, in two
//! halves:
//!
//! - **the kernel side**, `ebpf/src/main.rs`: an eBPF program attached to `tp_btf/kfree_skb`
//!   that reads the reason and the skb's namespace, addresses and ports, and sends them to
//!   userspace as a [`tracer_common::Event`];
//! - **the userspace side**, this file: [`reason_name`] turns the reason NUMBER into its NAME,
//!   read from the running kernel's BTF (the numbers change between kernel versions), and
//!   [`tuple`] prints an event's addresses.
//!
//! The plumbing around them — reading BTF offsets, loading and attaching your program,
//! reading the ring buffer — is the course's tracer (`tracer/`), reused as a library by
//! [`DropTracer`]: read it, you do not need to change it.
//!
//! Loading eBPF programs needs real root: run the checks with `cargo xtask check 5 --sudo`
//! (it builds as you, then runs only the built checks as root; never `sudo cargo`).

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use tracer::btf::{self, Btf};
use tracer::collection::{self, KernelInfo, Tracer};
use tracer_common::{Event, Filter};

/// Your kernel side, compiled by `build.rs` (aya-build) from `ebpf/`.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/drop-tracer"));

/// The name of the program in `ebpf/src/main.rs`.
pub const PROGRAM: &str = "kfree_skb";

/// The name of drop reason `value` in the running kernel, without the `SKB_DROP_REASON_`
/// prefix: `NO_SOCKET` for `SKB_DROP_REASON_NO_SOCKET`. A value the enum does not have is
/// `UNKNOWN(<value>)`; a kernel without `enum skb_drop_reason` (before 5.17) is an error.
pub fn reason_name(btf: &Btf, value: u32) -> Result<String> {
    // TODO: read the enumerators of `enum skb_drop_reason` with `btf.enum_values(..)` — a list of
    // (name, value) pairs, as `bpftool btf dump file /sys/kernel/btf/vmlinux` lists them — and
    // find the one whose value is `value` (look it up: never index by position). Strip the
    // `SKB_DROP_REASON_` prefix when there is one; `UNKNOWN(<value>)` when nothing matches.
    todo!("reason_name: look up {value} in the kernel's enum skb_drop_reason")
}

/// An event's addresses as `src:sport > dst:dport` (UDP and TCP), `src > dst` (other IPv4
/// protocols), or `-` when the event has no IPv4 header (`ev.l3 != 4`).
pub fn tuple(ev: &Event) -> String {
    // TODO: `-` unless `ev.l3 == 4`. The kernel side copied the addresses as on the wire
    // (network byte order), in the first 4 bytes of `ev.saddr` / `ev.daddr`; the ports are
    // already in host order. Only UDP (`ev.l4 == 17`) and TCP (6) have ports.
    todo!("tuple: print the addresses of {ev:?}")
}

/// One drop, decoded with your [`reason_name`] and [`tuple`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The network namespace inode the skb was in (`ls -l /proc/PID/ns/net`).
    pub netns: u32,
    /// The reason's number, and its name from the kernel's BTF (`NO_SOCKET`).
    pub reason_code: u32,
    pub reason: String,
    /// `src:sport > dst:dport`.
    pub tuple: String,
    /// IP protocol number (17 = UDP).
    pub ip_proto: u8,
    /// CLOCK_MONOTONIC nanoseconds.
    pub mono_ns: u64,
}

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "netns {} {} {}({})",
            self.netns, self.tuple, self.reason, self.reason_code
        )
    }
}

/// Your kfree_skb program, loaded and attached. Dropping it detaches it (nothing is pinned).
pub struct DropTracer {
    kernel: KernelInfo,
    tracer: Tracer,
}

impl DropTracer {
    /// Reads the kernel's BTF, hands your program its offsets, loads it, attaches it.
    pub fn start() -> Result<DropTracer> {
        collection::check_privileges()?;
        let kernel = KernelInfo::load()?;
        let tracepoint = btf::kfree_skb_tracepoint(&kernel.btf)?;
        // Your program reads the skb as argument 0 and the reason as argument 2: say so clearly
        // on a kernel whose `btf_trace_kfree_skb` has another shape.
        if (tracepoint.slot.skb_arg, tracepoint.slot.reason_arg) != (0, 2) {
            bail!(
                "this kernel's kfree_skb tracepoint has the skb at argument {} and the reason at \
                 argument {} (see `bpftool btf dump file /sys/kernel/btf/vmlinux | grep -A6 btf_trace_kfree_skb`): \
                 the exercise expects 0 and 2",
                tracepoint.slot.skb_arg,
                tracepoint.slot.reason_arg
            );
        }
        let tracer = Tracer::load_object(
            &kernel,
            EBPF_OBJECT,
            &[tracepoint],
            Filter::default(),
            false,
            |_| PROGRAM.to_string(),
        )
        .context("loading your kfree_skb program")?;
        Ok(DropTracer { kernel, tracer })
    }

    /// The drops reported within `timeout` (returns as soon as some arrived).
    pub fn drops(&mut self, timeout: Duration) -> Result<Vec<Dropped>> {
        let mut events = Vec::new();
        self.tracer.poll(timeout, |ev| events.push(*ev))?;
        events
            .iter()
            .map(|ev| {
                Ok(Dropped {
                    netns: ev.netns,
                    reason_code: ev.reason,
                    reason: reason_name(&self.kernel.btf, ev.reason)?,
                    tuple: tuple(ev),
                    ip_proto: ev.l4,
                    mono_ns: ev.mono_ns,
                })
            })
            .collect()
    }

    /// The kernel's BTF, as read at start.
    pub fn btf(&self) -> &Btf {
        &self.kernel.btf
    }
}
