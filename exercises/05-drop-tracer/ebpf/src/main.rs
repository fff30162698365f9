//! Exercise 5, the kernel side: one `tp_btf` program on the `kfree_skb` tracepoint.
//!
//! The kernel calls this program every time it frees a socket buffer (`struct sk_buff`, an
//! "skb") through `kfree_skb_reason()` — that is, every time it DROPS a packet, with a reason.
//! The program reads four things and sends them to userspace as one [`Event`]:
//!
//! 1. its arguments: the skb pointer and the `enum skb_drop_reason` value;
//! 2. the network namespace the skb was in (via `skb->dev`, or `skb->sk` when there is no
//!    device), as the inode number `ls -l /proc/PID/ns/net` shows;
//! 3. the IPv4 header's addresses and the UDP/TCP ports;
//! 4. a timestamp — then it writes the event into the `EVENTS` ring buffer.
//!
//! Rust eBPF programs have no CO-RE (compile once, run everywhere): we cannot write
//! `skb->dev` and let the loader fix the offset for the running kernel. Instead, userspace
//! reads the offsets from the kernel's BTF and hands them in, before loading, in the read-only
//! global [`CONFIG`] (`CONFIG.offsets.skb_dev`, …). Never hard-code an offset.
#![no_std]
#![no_main]
// The helpers and imports below are unused until you write the program.
#![allow(unused)]

use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, map},
    maps::{PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use tracer_common::{Config, Event, LOST_INDEX};

/// Filled in by userspace before loading (`EbpfLoader::override_global("CONFIG", …)`): the
/// struct offsets of THIS kernel, and the value of `SKB_CONSUMED`.
// SAFETY: `no_mangle` keeps the symbol name `CONFIG`, by which aya finds the global; no other
// symbol of the object has that name.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

/// The events, for userspace (256 KiB: a few thousand drops between two polls).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

/// Events that did not fit in `EVENTS`, counted instead of silently lost.
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Reads one field of [`CONFIG`]. The volatile read stops the compiler from using the zeroes it
/// sees in the object file: the real values only exist once userspace has loaded the program.
macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: a read of an aligned field of a static that nothing writes (the kernel froze
        // it before the program could run).
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field)+) }
    };
}

/// Reads a `T` at `base + off` in kernel memory; 0 if `base` is NULL or the read fails.
/// eBPF may not dereference a kernel pointer directly: `bpf_probe_read_kernel` copies safely.
#[inline(always)]
fn read<T: Default>(base: u64, off: u32) -> T {
    if base == 0 {
        return T::default();
    }
    // SAFETY: the helper copies through the kernel's fault handling: an unreadable address is an
    // error (then `T::default()`), never a crash.
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// Hands one event to userspace (or counts it as lost if the ring buffer is full).
#[inline(always)]
fn send(ev: &Event) {
    if EVENTS.output::<Event>(ev, 0).is_err() {
        if let Some(lost) = LOST.get_ptr_mut(LOST_INDEX) {
            // SAFETY: this CPU's own slot of a per-CPU array, valid while the program runs.
            unsafe { *lost += 1 };
        }
    }
}

/// `tp_btf/kfree_skb`: runs for every skb the kernel frees with a reason.
///
/// As given, it compiles, loads and attaches — and reports nothing. (It cannot `todo!()`: a
/// panic in eBPF is an endless loop, which the verifier refuses to load.) Fill it in, top to
/// bottom. Every read of kernel memory goes through [`read`]; every offset comes from
/// `config!(offsets.…)` — see `tracer_common::Offsets` for what each one is.
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    // TODO 1 — the arguments. The BTF typedef `btf_trace_kfree_skb` is
    //   `void (*)(void *, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
    //             struct sock *rx_sk)`
    // and the program does not see the leading `void *`: the skb is argument 0, the reason
    // argument 2 (`ctx.arg::<u64>(n)`; the reason is a u32 in a u64 slot). Userspace checked
    // that shape against the running kernel before loading you.
    // Then return early for a NULL skb, and for `config!(consumed_reason)`: SKB_CONSUMED is how
    // a normally delivered skb ends its life, not a drop.
    let _ = &ctx;

    // TODO 2 — an Event with the skb and the reason:
    //   let mut ev = Event { skb, reason, ..Event::default() };

    // TODO 3 — where: the namespace inode. Read `skb->dev` (`offsets.skb_dev`); if it is not
    // NULL, take `ev.ifindex` from `dev->ifindex` and the `struct net *` from `dev->nd_net.net`
    // (`offsets.dev_net`); otherwise (no device yet) take the `struct net *` of the socket:
    // `skb->sk` (`offsets.skb_sk`), then `sk->__sk_common.skc_net.net` (`offsets.sk_net`).
    // `ev.netns` is `net->ns.inum` (`offsets.net_inum`); `ev.len` is `skb->len`.

    // TODO 4 — the tuple. The IPv4 header is at `skb->head + skb->network_header` (a u16
    // offset from `head`; if it is 0 or 0xffff it is not set yet: use `skb->data - skb->head`).
    // Read its first 20 bytes as `[u32; 5]` with `bpf_probe_read_kernel`. If the version
    // (high nibble of byte 0) is 4: `ev.l3 = 4`, `ev.l4` = the protocol (byte 9 of the header),
    // `ev.saddr[..4]` / `ev.daddr[..4]` = bytes 12..16 / 16..20 as they are (network order).
    // For UDP (17) and TCP (6) the ports are the first two big-endian u16 of the next header,
    // `ihl * 4` bytes after the IP header (`ihl` = low nibble of byte 0):
    // `ev.sport = u16::from_be_bytes(..)`.

    // TODO 5 — when, then send: `ev.mono_ns = bpf_ktime_get_ns()`, `ev.cpu =
    // bpf_get_smp_processor_id()` (both `unsafe`), then `send(&ev)`.
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_kernel` and the ring buffer helpers are GPL-only.
// SAFETY: the kernel reads the license from the section named `license`; nothing else is put there.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
