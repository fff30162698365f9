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
#[btf_tracepoint(function = "kfree_skb")]
pub fn kfree_skb(ctx: BtfTracePointContext) -> i32 {
    // TODO 1, answered — the arguments. On this kernel the prototype (BTF typedef `btf_trace_kfree_skb`) is
    //    `(void *, struct sk_buff *skb, void *location, enum skb_drop_reason reason, struct sock
    //    *rx_sk)`; the program does not see the leading `void *`, so the skb is argument 0 and
    //    the reason argument 2. Userspace checked that against the running kernel's BTF before
    //    loading us (older kernels have no reason at all).
    let skb: u64 = ctx.arg(0);
    let reason = ctx.arg::<u64>(2) as u32;
    if skb == 0 {
        return 0;
    }
    // `SKB_CONSUMED` is not a drop: it is how a normally delivered skb ends its life. Its
    // numeric value comes from the kernel's BTF too (userspace put it in CONFIG).
    if reason == config!(consumed_reason) {
        return 0;
    }

    // TODO 2, answered — the event starts as all zeroes, with what we know already.
    let mut ev = Event {
        skb,
        reason,
        ..Event::default()
    };

    // TODO 3, answered — where: the device the skb is on (`skb->dev`) gives the interface and its namespace
    //    (`dev->nd_net.net->ns.inum`). An skb on the way out of a socket may have no device
    //    yet: then the socket's namespace (`skb->sk->__sk_common.skc_net.net->ns.inum`).
    let dev: u64 = read(skb, config!(offsets.skb_dev));
    let net: u64 = if dev != 0 {
        ev.ifindex = read::<i32>(dev, config!(offsets.dev_ifindex)) as u32;
        read(dev, config!(offsets.dev_net))
    } else {
        let sk: u64 = read(skb, config!(offsets.skb_sk));
        read(sk, config!(offsets.sk_net))
    };
    ev.netns = read(net, config!(offsets.net_inum));
    ev.len = read(skb, config!(offsets.skb_len));

    // TODO 4, answered — the tuple. The IP header sits at `skb->head + skb->network_header` (an offset from
    //    `head`; 0xffff means "not set yet", then `skb->data` points at it).
    let head: u64 = read(skb, config!(offsets.skb_head));
    let mut nh = read::<u16>(skb, config!(offsets.skb_network_header)) as u64;
    if nh == 0 || nh == 0xffff {
        let data: u64 = read(skb, config!(offsets.skb_data));
        nh = data.wrapping_sub(head);
    }
    if head != 0 && nh < 0xffff {
        let ip = head + nh;
        // The first 20 bytes of the IPv4 header as 5 big-endian words:
        // [version/ihl tos total-length] [id flags/fragment] [ttl protocol checksum] [src] [dst]
        // SAFETY: as in `read`: a faulting address is an error.
        if let Ok(w) = unsafe { bpf_probe_read_kernel(ip as *const [u32; 5]) } {
            let first = w[0].to_ne_bytes()[0];
            if first >> 4 == 4 {
                ev.l3 = 4;
                ev.l4 = w[2].to_ne_bytes()[1];
                // Addresses stay in network byte order, as on the wire.
                ev.saddr[..4].copy_from_slice(&w[3].to_ne_bytes());
                ev.daddr[..4].copy_from_slice(&w[4].to_ne_bytes());
                if ev.l4 == 17 || ev.l4 == 6 {
                    // UDP and TCP both start with the two ports; the header follows the IP
                    // header, whose length is `ihl` 32-bit words.
                    let l4 = ip + ((first & 0x0f) as u64) * 4;
                    let ports = read::<u32>(l4, 0).to_ne_bytes();
                    ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
                    ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
                }
            }
        }
    }

    // TODO 5, answered — when, then send it (a copy: `bpf_ringbuf_output`).
    // SAFETY: helpers without arguments (every raw helper binding is `unsafe`).
    ev.mono_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    send(&ev);
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
