//! The kernel side of the tracer: one small program, attached to every tracepoint that carries a
//! `struct sk_buff *`.
//!
//! How it works, in the order an skb meets it:
//! 1. A tracepoint fires. Its BTF-typed arguments (`tp_btf`) are an array of u64 behind `ctx`.
//!    Which argument is the skb (and, for `kfree_skb`, the drop reason and the freeing location)
//!    depends on the tracepoint; userspace worked that out from the kernel's BTF and wrote it into
//!    the read-only global [`CONFIG`] before loading us.
//! 2. We read the skb's device → interface index, name and network namespace inode, then the IP
//!    header and the first bytes of the UDP/TCP/ICMP header. Field offsets come from `CONFIG` too:
//!    aya has no CO-RE for Rust programs, so userspace computed them from the running kernel's BTF.
//! 3. The filter (`CONFIG.filter`) is applied HERE, in the kernel: a non-matching skb costs a few
//!    hundred nanoseconds and never reaches userspace.
//! 4. A matching skb becomes an [`Event`] in the `EVENTS` ring buffer. If the ring buffer is full,
//!    we count the loss in `LOST` instead — userspace reports that number at exit.
//!
//! Why so many identical functions (`slot_0` … `slot_63`)? A `tp_btf` program is verified against,
//! and loaded for, exactly one tracepoint. To watch 30 tracepoints we need 30 loaded programs, so
//! the object carries [`MAX_SLOTS`] copies and userspace loads as many as it needs.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use aya_ebpf::{
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf,
    },
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use tracer_common::{
    Addr, Config, Event, F_DST_HOST, F_DST_PORT, F_HOST, F_IFINDEX, F_NETNS, F_PORT, F_SRC_HOST,
    F_SRC_PORT, LOST_INDEX, MAX_SLOTS, NO_ARG, SLOT_FREES_SKB,
};

/// Load-time configuration, filled in by userspace with `EbpfLoader::override_global("CONFIG", …)`.
/// It lives in `.rodata`, which the kernel freezes: the verifier then knows every value in it as a
/// constant and drops the branches that can never run (e.g. reading a 4th argument of a
/// tracepoint that has only one).
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

/// Events for userspace: 4 MiB, about 37 000 events of 112 bytes.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Events that did not fit in `EVENTS` (per CPU: no atomics needed).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `--track-skb`: skb addresses that matched the filter once. LRU, so skbs freed in a way we do
/// not see (there are a few) cannot fill it up.
#[map]
static TRACKED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// Reads one field of [`CONFIG`]. The volatile read stops the compiler from using the zeroes it
/// sees in the object file: the real values are only known when the program is loaded.
macro_rules! config {
    ($($field:tt)+) => {
        unsafe { core::ptr::read_volatile(&raw const CONFIG.$($field)+) }
    };
}

/// Reads the tracepoint argument number `n` (0-based, after the hidden `void *`).
///
/// Each arm is a separate `asm!` load with a constant offset because the verifier only accepts
/// context reads at constant offsets: with ordinary Rust code the compiler may merge the arms into
/// one load at `ctx + n * 8`, which the verifier rejects. `n` comes from `CONFIG`, so the verifier
/// knows it and only ever checks the one arm that runs.
#[inline(always)]
fn arg(ctx: &BtfTracePointContext, n: u8) -> u64 {
    use aya_ebpf::EbpfContext as _;
    let p = ctx.as_ptr();
    let v: u64;
    unsafe {
        match n {
            0 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 0)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            1 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 8)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            2 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 16)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            3 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 24)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            4 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 32)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            5 => {
                core::arch::asm!("{0} = *(u64 *)({1} + 40)", out(reg) v, in(reg) p, options(readonly, nostack))
            }
            _ => v = 0,
        }
    }
    v
}

/// Reads a `T` at `base + off` in kernel memory (0 if unreadable, e.g. a NULL pointer).
#[inline(always)]
fn read<T: Default>(base: u64, off: u32) -> T {
    if base == 0 {
        return T::default();
    }
    unsafe { bpf_probe_read_kernel((base + off as u64) as *const T) }.unwrap_or_default()
}

/// Defines `slot_N`: a `tp_btf` program whose attach target userspace chooses at load time
/// (`BtfTracePoint::load(tracepoint_name, &btf)`).
macro_rules! slot {
    ($name:ident, $n:literal) => {
        #[btf_tracepoint]
        pub fn $name(ctx: BtfTracePointContext) -> i32 {
            on_skb(&ctx, $n)
        }
    };
}

slot!(slot_0, 0);
slot!(slot_1, 1);
slot!(slot_2, 2);
slot!(slot_3, 3);
slot!(slot_4, 4);
slot!(slot_5, 5);
slot!(slot_6, 6);
slot!(slot_7, 7);
slot!(slot_8, 8);
slot!(slot_9, 9);
slot!(slot_10, 10);
slot!(slot_11, 11);
slot!(slot_12, 12);
slot!(slot_13, 13);
slot!(slot_14, 14);
slot!(slot_15, 15);
slot!(slot_16, 16);
slot!(slot_17, 17);
slot!(slot_18, 18);
slot!(slot_19, 19);
slot!(slot_20, 20);
slot!(slot_21, 21);
slot!(slot_22, 22);
slot!(slot_23, 23);
slot!(slot_24, 24);
slot!(slot_25, 25);
slot!(slot_26, 26);
slot!(slot_27, 27);
slot!(slot_28, 28);
slot!(slot_29, 29);
slot!(slot_30, 30);
slot!(slot_31, 31);
slot!(slot_32, 32);
slot!(slot_33, 33);
slot!(slot_34, 34);
slot!(slot_35, 35);
slot!(slot_36, 36);
slot!(slot_37, 37);
slot!(slot_38, 38);
slot!(slot_39, 39);
slot!(slot_40, 40);
slot!(slot_41, 41);
slot!(slot_42, 42);
slot!(slot_43, 43);
slot!(slot_44, 44);
slot!(slot_45, 45);
slot!(slot_46, 46);
slot!(slot_47, 47);
slot!(slot_48, 48);
slot!(slot_49, 49);
slot!(slot_50, 50);
slot!(slot_51, 51);
slot!(slot_52, 52);
slot!(slot_53, 53);
slot!(slot_54, 54);
slot!(slot_55, 55);
slot!(slot_56, 56);
slot!(slot_57, 57);
slot!(slot_58, 58);
slot!(slot_59, 59);
slot!(slot_60, 60);
slot!(slot_61, 61);
slot!(slot_62, 62);
slot!(slot_63, 63);

const _: () = assert!(
    MAX_SLOTS == 64,
    "add or remove slot!() lines to match MAX_SLOTS"
);

/// What every slot does. `#[inline(never)]` keeps one copy of the code in the object file: it
/// becomes a BPF-to-BPF call, and the verifier still checks it with the caller's constant `slot`.
#[inline(never)]
fn on_skb(ctx: &BtfTracePointContext, slot: u32) -> i32 {
    let slot = (slot as usize) & (MAX_SLOTS - 1);
    let skb_arg = config!(slots[slot].skb_arg);
    if skb_arg == NO_ARG {
        return 0;
    }
    let skb = arg(ctx, skb_arg);
    if skb == 0 {
        return 0;
    }
    let flags = config!(slots[slot].flags);
    let reason_arg = config!(slots[slot].reason_arg);
    let reason = if reason_arg == NO_ARG {
        0
    } else {
        arg(ctx, reason_arg) as u32
    };
    let track = config!(track_skb) != 0;
    let frees = flags & SLOT_FREES_SKB != 0;

    // `kfree_skb` with reason SKB_CONSUMED is a normal end of life, not a drop.
    if reason_arg != NO_ARG && reason == config!(consumed_reason) {
        if track && frees {
            let _ = TRACKED.remove(&skb);
        }
        return 0;
    }

    // `skb` itself is NOT copied into `ev` here: the verifier types it as a kernel pointer
    // (PTR_TO_BTF_ID), and copying the event byte by byte would read parts of a spilled pointer,
    // which it refuses. It is stored straight into the ring buffer below.
    let mut ev = Event {
        reason,
        slot: slot as u16,
        ..Default::default()
    };
    read_device(skb, &mut ev);
    read_tuple(skb, &mut ev);

    // --track-skb: an skb we already followed is reported even if NAT changed its tuple since.
    let tracked = track && unsafe { TRACKED.get(&skb) }.is_some();
    if !tracked {
        if !matches(&ev) {
            return 0;
        }
        if track && !frees {
            let _ = TRACKED.insert(&skb, &1, 0);
        }
    }
    if tracked && frees {
        let _ = TRACKED.remove(&skb);
    }

    let location_arg = config!(slots[slot].location_arg);
    if location_arg != NO_ARG {
        ev.location = arg(ctx, location_arg);
    }
    ev.mono_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    match EVENTS.reserve::<Event>(0) {
        Some(mut entry) => {
            entry.write(ev);
            // SAFETY: just initialised by `write`.
            unsafe { (*entry.as_mut_ptr()).skb = skb };
            entry.submit(0);
        }
        None => {
            if let Some(lost) = LOST.get_ptr_mut(LOST_INDEX) {
                unsafe { *lost += 1 };
            }
        }
    }
    0
}

/// Fills interface index, name and network namespace inode from `skb->dev` (or, for an skb that
/// is not on a device yet, the namespace of its socket `skb->sk`).
#[inline(always)]
fn read_device(skb: u64, ev: &mut Event) {
    let dev: u64 = read(skb, config!(offsets.skb_dev));
    let net: u64 = if dev != 0 {
        ev.ifindex = read::<i32>(dev, config!(offsets.dev_ifindex)) as u32;
        let name = dev + config!(offsets.dev_name) as u64;
        let _ = unsafe { bpf_probe_read_kernel_buf(name as *const u8, &mut ev.ifname) };
        read(dev, config!(offsets.dev_net))
    } else {
        let sk: u64 = read(skb, config!(offsets.skb_sk));
        read(sk, config!(offsets.sk_net))
    };
    ev.netns = read(net, config!(offsets.net_inum));
    ev.len = read(skb, config!(offsets.skb_len));
}

/// Finds the IP header and fills the tuple (addresses, protocol, ports or ICMP type/code).
#[inline(always)]
fn read_tuple(skb: u64, ev: &mut Event) {
    let head: u64 = read(skb, config!(offsets.skb_head));
    if head == 0 {
        return;
    }
    // `network_header` is an offset from `head`. Early on the receive path it is not set yet
    // (0, or 0xffff = "unset"): there `data` already points at the IP header.
    let mut nh = read::<u16>(skb, config!(offsets.skb_network_header)) as u64;
    if nh == 0 || nh == 0xffff {
        let data: u64 = read(skb, config!(offsets.skb_data));
        if data <= head || data - head > 0xffff {
            return;
        }
        nh = data - head;
    }
    let ethertype = u16::from_be(read::<u16>(skb, config!(offsets.skb_protocol)));
    let ip = head + nh;
    let first: u8 = read(ip, 0);
    let version = first >> 4;
    // protocol 0 = not set yet (early on the output path): trust the version nibble alone.
    let l4_at = match (ethertype, version) {
        (0x0800 | 0, 4) => {
            let mut hdr = [0u8; 20];
            if unsafe { bpf_probe_read_kernel_buf(ip as *const u8, &mut hdr) }.is_err() {
                return;
            }
            ev.l3 = 4;
            ev.l4 = hdr[9];
            ev.saddr[..4].copy_from_slice(&hdr[12..16]);
            ev.daddr[..4].copy_from_slice(&hdr[16..20]);
            let fragment_offset = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
            if fragment_offset != 0 {
                return; // a later fragment carries no L4 header
            }
            ip + ((first & 0x0f) as u64) * 4
        }
        (0x86dd | 0, 6) => {
            let mut hdr = [0u8; 40];
            if unsafe { bpf_probe_read_kernel_buf(ip as *const u8, &mut hdr) }.is_err() {
                return;
            }
            ev.l3 = 6;
            // Extension headers are not followed: the tuple stays without ports then.
            ev.l4 = hdr[6];
            ev.saddr.copy_from_slice(&hdr[8..24]);
            ev.daddr.copy_from_slice(&hdr[24..40]);
            ip + 40
        }
        _ => return,
    };
    match ev.l4 {
        6 | 17 => {
            let ports: [u8; 4] = read(l4_at, 0);
            ev.sport = u16::from_be_bytes([ports[0], ports[1]]);
            ev.dport = u16::from_be_bytes([ports[2], ports[3]]);
        }
        1 | 58 => {
            let tc: [u8; 2] = read(l4_at, 0);
            ev.icmp_type = tc[0];
            ev.icmp_code = tc[1];
        }
        _ => {}
    }
}

/// The in-kernel filter: every part that is set must match.
#[inline(always)]
fn matches(ev: &Event) -> bool {
    let flags = config!(filter.flags);
    if flags & F_NETNS != 0 && ev.netns != config!(filter.netns) {
        return false;
    }
    if flags & F_IFINDEX != 0 && ev.ifindex != config!(filter.ifindex) {
        return false;
    }
    let l3 = config!(filter.l3);
    if l3 != 0 && ev.l3 != l3 {
        return false;
    }
    let l4 = config!(filter.l4);
    if l4 != 0 && ev.l4 != l4 {
        return false;
    }
    if flags & F_SRC_HOST != 0 && !addr_eq(ev, &ev.saddr, config!(filter.src_addr)) {
        return false;
    }
    if flags & F_DST_HOST != 0 && !addr_eq(ev, &ev.daddr, config!(filter.dst_addr)) {
        return false;
    }
    if flags & F_HOST != 0 {
        let host = config!(filter.host_addr);
        if !addr_eq(ev, &ev.saddr, host) && !addr_eq(ev, &ev.daddr, host) {
            return false;
        }
    }
    let has_ports = ev.l4 == 6 || ev.l4 == 17;
    if flags & (F_SRC_PORT | F_DST_PORT | F_PORT) != 0 && !has_ports {
        return false;
    }
    if flags & F_SRC_PORT != 0 && ev.sport != config!(filter.src_port) {
        return false;
    }
    if flags & F_DST_PORT != 0 && ev.dport != config!(filter.dst_port) {
        return false;
    }
    if flags & F_PORT != 0 {
        let port = config!(filter.port);
        if ev.sport != port && ev.dport != port {
            return false;
        }
    }
    true
}

#[inline(always)]
fn addr_eq(ev: &Event, got: &[u8; 16], want: Addr) -> bool {
    ev.l3 == want.family && *got == want.bytes
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// GPL-compatible: `bpf_probe_read_kernel` and the ring buffer helpers are GPL-only.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
