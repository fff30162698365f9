//! The kernel side of the tracer: one small program, attached to every tracepoint that carries a
//! `struct sk_buff *`.
//!
//! How it works, in the order an skb meets it:
//! 1. A tracepoint fires. Its BTF-typed arguments (`tp_btf`) are an array of u64 behind `ctx`.
//!    Which argument is the skb (and, for `kfree_skb`, the drop reason and the freeing location)
//!    depends on the tracepoint; userspace worked that out from the kernel's BTF and wrote it into
//!    the read-only global [`CONFIG`] before loading us.
//! 2. We read what the filter needs: the skb's interface index and network namespace inode (only
//!    when the command line restricts them), the IP header and the first bytes of the
//!    UDP/TCP/ICMP header. Field offsets come from `CONFIG` too: aya has no CO-RE for Rust
//!    programs, so userspace computed them from the running kernel's BTF.
//! 3. The filter (`CONFIG.filter`) is applied HERE, in the kernel: a non-matching skb costs one
//!    header read and a few loads, and never reaches userspace. Only a matching skb is turned
//!    into an event (device name, length, time, …).
//! 4. A matching skb becomes an [`Event`] in the `EVENTS` ring buffer. If the ring buffer is full,
//!    we count the loss in `LOST` instead — userspace reports that number at exit.
//!
//! Why so many identical functions (`slot_0` … `slot_63`)? A `tp_btf` program is verified against,
//! and loaded for, exactly one tracepoint. To watch 30 tracepoints we need 30 loaded programs, so
//! the object carries [`MAX_SLOTS`] copies and userspace loads as many as it needs.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]

use core::mem::MaybeUninit;

use aya_ebpf::{
    helpers::{
        bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel,
        bpf_probe_read_kernel_buf, generated,
    },
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
};
use tracer_common::{
    program::{self, IPPROTO_FRAGMENT, K_ARP, K_IP, K_IP6, K_RARP},
    Config, Event, Packet, EVENT_BYTES_WITHOUT_HEADERS, F_IFINDEX, F_NETNS, HDR_BYTES, LOST_INDEX,
    MAX_SLOTS, NO_ARG, SLOT_FREES_SKB,
};

/// Load-time configuration, filled in by userspace with `EbpfLoader::override_global("CONFIG", …)`.
/// It lives in `.rodata`, which the kernel freezes: the verifier then knows every value in it as a
/// constant and drops the branches that can never run (e.g. reading a 4th argument of a
/// tracepoint that has only one).
// SAFETY: `no_mangle` keeps the symbol name `CONFIG`, by which aya finds the global; no other
// symbol of the object has that name.
#[unsafe(no_mangle)]
static CONFIG: Config = Config::ZERO;

/// Events for userspace: 4 MiB, about 19 000 events of 216 bytes (13 000 of 320 with `--pcap`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(4 << 20, 0);

/// Events that did not fit in `EVENTS` (per CPU: no atomics needed).
#[map]
static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The event under construction, one per CPU: at 320 bytes (with `--pcap`'s header bytes and
/// the conntrack entry) it does not fit beside the rest of `on_skb` in the 512-byte BPF stack.
/// `busy` guards it: a program that interrupts another on the same CPU (a hard interrupt's
/// tracepoint) finds it set and counts its event as lost instead of overwriting the other's.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
struct Scratch {
    busy: u64,
    event: Event,
}

/// `--track-skb`: skb addresses that matched the filter once. LRU, so skbs freed in a way we do
/// not see (there are a few) cannot fill it up.
#[map]
static TRACKED: LruHashMap<u64, u8> = LruHashMap::with_max_entries(16384, 0);

/// Reads one field of [`CONFIG`]. The volatile read stops the compiler from using the zeroes it
/// sees in the object file: the real values are only known when the program is loaded.
macro_rules! config {
    ($($field:tt)+) => {
        // SAFETY: a read of an aligned field of a static that nothing writes (the kernel froze
        // it before the program could run).
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
    // SAFETY: each arm reads one of the first six 8-byte arguments that the kernel passes a
    // `tp_btf` program; userspace never asks for a 7th (`btf::skb_tracepoint` refuses it), and the
    // verifier checks every offset against the tracepoint's prototype before the program runs.
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

/// Reads the struct field at `base + off` with a plain load instruction.
///
/// `base` must be a pointer the verifier knows the BTF type of: a `struct sk_buff *` argument
/// of a `tp_btf` program, or a pointer loaded from such a struct's field (`skb->dev`,
/// `dev->nd_net.net`, …). The verifier then checks `off` against the struct's BTF (a field of the
/// right size must be there) and turns the load into a "probe" load that reads 0 instead of
/// faulting, so a NULL or stale pointer is harmless. That is much cheaper than a
/// `bpf_probe_read_kernel` helper call, and the tracer does it ~10 times per skb per tracepoint.
#[inline(always)]
fn field<T: Default>(base: u64, off: u32) -> T {
    if base == 0 {
        return T::default();
    }
    // SAFETY: see above; the verifier guarantees the load cannot fault.
    unsafe { core::ptr::read_volatile((base + off as u64) as *const T) }
}

/// Reads a `T` at `base + off` in kernel memory (0 if unreadable) with the
/// `bpf_probe_read_kernel` helper: for memory without a BTF type, like packet bytes.
#[inline(always)]
fn read<T: Default>(base: u64, off: u32) -> T {
    if base == 0 {
        return T::default();
    }
    // SAFETY: the helper copies through the kernel's fault handling: an unreadable address is an
    // error (then `T::default()`), never a crash.
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
///
/// The order is chosen for the skbs that do NOT match, which are nearly all of them: read only
/// what the filter needs, decide, and only then build the event (zero it, read the device name,
/// the length, the time). A non-matching skb costs one header read and a few loads.
///
/// Two notes on the speed of LOADING (the verifier walks every path through this function):
/// - Any loop, even the `memset`/`memcpy` the compiler emits to zero or copy a struct byte by
///   byte, is walked once per iteration on every path. So the code below never zeroes or copies
///   byte arrays: the event is zeroed with a few 8-byte stores, headers are read as whole words,
///   and the event is copied into the ring buffer by the kernel (`bpf_ringbuf_output`).
/// - Loading a POINTER field from the skb argument (`skb->dev`) makes the verifier look up, by
///   name, whether the kernel declared that field "trusted" — four searches through the whole
///   kernel BTF (≈130 000 types), each time the verifier walks that load. So `skb->dev` is loaded
///   exactly once, at the top, before any branch; `skb->sk` (needed only for an skb without a
///   device) goes through the `bpf_probe_read_kernel` helper, which the verifier does not look up.
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
    // The one load of a pointer from the skb argument (see above).
    let dev: u64 = field(skb, config!(offsets.skb_dev));
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
            let _ = TRACKED.remove(skb);
        }
        return 0;
    }

    // --track-skb: an skb we already followed is reported even if NAT changed its tuple since.
    // SAFETY: `get` is unsafe because another CPU may change the value behind the reference; we
    // only look at whether the key is there.
    let tracked = track && unsafe { TRACKED.get(skb) }.is_some();

    // Filter as early as possible: namespace and interface first (a few loads, and only when
    // the command line restricts them), then the tuple.
    let device_filter = config!(filter.flags) & (F_NETNS | F_IFINDEX) != 0;
    let mut device = Device::default();
    if device_filter {
        device = read_device(skb, dev);
        if !tracked && !matches_device(&device) {
            return 0;
        }
    }
    let mut hdr_buf = MaybeUninit::<Headers>::uninit();
    // SAFETY: `zero` initialises every byte of the headers.
    let hdr = unsafe {
        Headers::zero(hdr_buf.as_mut_ptr());
        &mut *hdr_buf.as_mut_ptr()
    };
    read_tuple(skb, hdr);
    if !tracked {
        if !matches_tuple(&hdr.pkt) {
            return 0;
        }
        if track && !frees {
            let _ = TRACKED.insert(skb, 1u8, 0);
        }
    }
    if tracked && frees {
        let _ = TRACKED.remove(skb);
    }
    if !device_filter {
        device = read_device(skb, dev);
    }

    // A match: now build the event, in this CPU's scratch event (see `SCRATCH`).
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return 0;
    };
    // SAFETY: this CPU's own slot of a per-CPU array, valid while the program runs; a program
    // nested on this CPU runs to its end before this one goes on, so `busy` needs no atomics.
    let scratch = unsafe { &mut *scratch };
    if scratch.busy != 0 {
        count_lost();
        return 0;
    }
    scratch.busy = 1;
    let ev = &mut scratch.event;
    // SAFETY: `ev` is a whole, 8-byte aligned `Event` (a map value).
    unsafe { zero(ev) };
    ev.reason = reason;
    ev.slot = slot as u16;
    ev.netns = device.netns;
    ev.ifindex = device.ifindex;
    fill_tuple(hdr, ev);
    read_details(skb, dev, ev);
    read_ct(skb, ev);
    if config!(copy_headers) != 0 {
        read_headers(skb, ev);
    }
    let location_arg = config!(slots[slot].location_arg);
    if location_arg != NO_ARG {
        ev.location = arg(ctx, location_arg);
    }
    ev.skb = skb;
    // SAFETY: helpers without arguments (every raw helper binding is `unsafe`).
    ev.mono_ns = unsafe { bpf_ktime_get_ns() };
    ev.cpu = unsafe { bpf_get_smp_processor_id() };
    // Without --pcap, the header bytes (all zero) are not sent: the ring buffer holds half again
    // as many events. `size` is one of two constants (CONFIG is frozen).
    let size = if config!(copy_headers) != 0 {
        core::mem::size_of::<Event>()
    } else {
        EVENT_BYTES_WITHOUT_HEADERS
    };
    // SAFETY: `size` is at most the size of the event that `ev` points to.
    let bytes = unsafe { core::slice::from_raw_parts((&raw const *ev).cast::<u8>(), size) };
    if EVENTS.output::<[u8]>(bytes, 0).is_err() {
        count_lost();
    }
    scratch.busy = 0;
    0
}

/// Counts one event that was not sent (ring buffer full, or the scratch event busy).
#[inline(always)]
fn count_lost() {
    if let Some(lost) = LOST.get_ptr_mut(LOST_INDEX) {
        // SAFETY: this CPU's own slot of a per-CPU array, valid while the program runs. (A
        // program nested on this CPU by an interrupt could lose one increment: a count, not
        // memory.)
        unsafe { *lost += 1 };
    }
}

/// Zeroes an [`Event`] with 8-byte stores (volatile, so the compiler keeps them as stores
/// instead of turning them into a byte-by-byte `memset` loop).
///
/// # Safety
/// `ev` must be valid for writes of one `Event` and 8-byte aligned (as a map value is).
#[inline(always)]
unsafe fn zero(ev: *mut Event) {
    const WORDS: usize = core::mem::size_of::<Event>() / 8;
    const _: () = assert!(core::mem::size_of::<Event>().is_multiple_of(8));
    let p = ev as *mut u64;
    // SAFETY (of each store): word `$i < WORDS` of the `Event` the caller vouches for.
    macro_rules! z {
        ($($i:literal)*) => { $( if $i < WORDS { unsafe { core::ptr::write_volatile(p.add($i), 0) } } )* };
    }
    z!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39);
    const _: () = assert!(WORDS <= 40, "add indices to z!() for the new size of Event");
}

/// Where an skb is: its interface and network namespace.
#[derive(Default)]
struct Device {
    /// Interface index (0 = no device).
    ifindex: u32,
    /// Network namespace inode (0 = unknown: no device and no socket).
    netns: u32,
}

/// The interface index and network namespace inode from `skb->dev` (`dev`, loaded once by the
/// caller), or, for an skb that is not on a device yet, the namespace of its socket `skb->sk`.
#[inline(always)]
fn read_device(skb: u64, dev: u64) -> Device {
    let mut device = Device::default();
    let net: u64 = if dev != 0 {
        device.ifindex = field::<i32>(dev, config!(offsets.dev_ifindex)) as u32;
        field(dev, config!(offsets.dev_net))
    } else {
        // Rare (an skb no device holds yet): read through the helper, so that the verifier has
        // no second pointer load from the skb to look up (see `on_skb`).
        let sk: u64 = read(skb, config!(offsets.skb_sk));
        read(sk, config!(offsets.sk_net))
    };
    device.netns = if dev != 0 {
        field(net, config!(offsets.net_inum))
    } else {
        read(net, config!(offsets.net_inum))
    };
    device
}

/// Fills what is only needed for display (device name, length): read once the skb matched.
#[inline(always)]
fn read_details(skb: u64, dev: u64, ev: &mut Event) {
    if dev != 0 {
        let name = dev + config!(offsets.dev_name) as u64;
        // SAFETY: as in `read`: a faulting address is an error, and at most `ifname.len()` bytes
        // are written.
        let _ = unsafe { bpf_probe_read_kernel_buf(name as *const u8, &mut ev.ifname) };
    }
    ev.len = field(skb, config!(offsets.skb_len));
}

/// Writes 8 bytes at byte `at` (a multiple of 8) of a 16-byte address field.
#[inline(always)]
fn put_u64(field: &mut [u8; 16], at: usize, v: u64) {
    // SAFETY: `saddr`/`daddr` sit at 8-aligned offsets of the 8-aligned Event; at is 0 or 8.
    unsafe { core::ptr::write((field.as_mut_ptr().add(at)) as *mut u64, v) }
}

/// What [`read_tuple`] found in the headers: what the filter needs ([`Packet`]), and the rest
/// of the tuple for the event. `#[repr(C)]` with no implicit padding: it is the argument of a
/// global function ([`tracer_headers`]), which the verifier checks against its BTF type.
#[repr(C, align(8))]
pub struct Headers {
    pkt: Packet,
    /// 4 or 6 for an IP packet whose header could be read, else 0.
    l3: u8,
    /// 1 if `l4` holds the first bytes of the transport header.
    l4_ok: u8,
    _pad: [u8; 2],
    /// The first 4 bytes of the UDP/TCP/ICMP header, when `l4_ok`.
    l4: [u8; 4],
}

impl Headers {
    /// Zeroes the `Headers` at `p` IN PLACE with six 8-byte volatile stores. Neither
    /// `Headers::default()` nor returning a zeroed value works: the compiler turns both into a
    /// call of a byte-by-byte `memset` (48 iterations at run time, and for the verifier).
    ///
    /// # Safety
    /// `p` must be valid for writes of one `Headers` (8-byte aligned, as the type is).
    #[inline(always)]
    unsafe fn zero(p: *mut Headers) {
        const _: () = assert!(core::mem::size_of::<Headers>() == 48, "update zero()");
        let p = p as *mut u64;
        // SAFETY (of each store): word 0..6 of the `Headers` the caller vouches for.
        unsafe {
            core::ptr::write_volatile(p, 0);
            core::ptr::write_volatile(p.add(1), 0);
            core::ptr::write_volatile(p.add(2), 0);
            core::ptr::write_volatile(p.add(3), 0);
            core::ptr::write_volatile(p.add(4), 0);
            core::ptr::write_volatile(p.add(5), 0);
        }
    }
}

/// Copies the tuple of `hdr` into the event.
#[inline(always)]
fn fill_tuple(hdr: &Headers, ev: &mut Event) {
    let p = &hdr.pkt;
    if hdr.l3 == 0 {
        return; // not IP (ARP: the filter saw its addresses, the event shows none)
    }
    ev.l3 = hdr.l3;
    ev.l4 = p.proto;
    put_u64(
        &mut ev.saddr,
        0,
        p.saddr[0] as u64 | (p.saddr[1] as u64) << 32,
    );
    put_u64(
        &mut ev.saddr,
        8,
        p.saddr[2] as u64 | (p.saddr[3] as u64) << 32,
    );
    put_u64(
        &mut ev.daddr,
        0,
        p.daddr[0] as u64 | (p.daddr[1] as u64) << 32,
    );
    put_u64(
        &mut ev.daddr,
        8,
        p.daddr[2] as u64 | (p.daddr[3] as u64) << 32,
    );
    if hdr.l4_ok == 0 {
        return;
    }
    match p.proto {
        6 | 17 | 132 => {
            ev.sport = p.sport;
            ev.dport = p.dport;
        }
        1 | 58 => {
            ev.icmp_type = hdr.l4[0];
            ev.icmp_code = hdr.l4[1];
        }
        _ => {}
    }
}

/// Finds the IP (or ARP) header and reads what the filter program needs to know of the packet
/// (kind, protocol, addresses, ports) and the ICMP type/code, with ONE helper call in the usual
/// case (an IPv4 header without options, or an IPv6 header directly followed by UDP/TCP/ICMPv6).
#[inline(always)]
fn read_tuple(skb: u64, hdr: &mut Headers) {
    let Some((head, nh)) = network_header(skb) else {
        return;
    };
    let ethertype = u16::from_be(field::<u16>(skb, config!(offsets.skb_protocol)));
    tracer_headers(head + nh, ethertype as u32, hdr);
}

/// The part of [`read_tuple`] that parses the headers at `ip`, as a GLOBAL function: verified
/// once per program, for any packet, like [`tracer_filter`] (a static function would be walked
/// again for every path that reaches it). After the call the verifier knows nothing of the
/// values in `hdr`, so the paths through the rest of `on_skb` do not multiply by the kinds of
/// headers either. Returns 0.
// SAFETY: `no_mangle` only keeps the name (and the global linkage); no other symbol of the object
// is called `tracer_headers`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_headers(ip: u64, ethertype: u32, hdr: *mut Headers) -> i32 {
    // The verifier makes a global function check its pointer arguments for NULL.
    // SAFETY: the only caller passes a reference to a zeroed `Headers` on its stack.
    let Some(hdr) = (unsafe { hdr.as_mut() }) else {
        return 0;
    };
    let ethertype = ethertype as u16;
    // The first 48 bytes from the IP header, as six little-endian words: an IPv6 header and the
    // 8 bytes after it, or an IPv4 header (20 bytes, more with options) and what follows.
    // SAFETY: as in `read`: a faulting address is an error.
    let Ok(w) = (unsafe { bpf_probe_read_kernel(ip as *const [u64; 6]) }) else {
        return 0;
    };
    let pkt = &mut hdr.pkt;
    let b0 = w[0].to_le_bytes();
    let version = b0[0] >> 4;
    // protocol 0 = not set yet (early on the output path): trust the version nibble alone.
    if (ethertype == 0x0800 || ethertype == 0) && version == 4 {
        // [ver/ihl tos len id frag] [ttl proto csum src] [dst l4…] …
        let b1 = w[1].to_le_bytes();
        hdr.l3 = 4;
        pkt.kind = K_IP;
        pkt.proto = b1[1];
        pkt.saddr[0] = (w[1] >> 32) as u32;
        pkt.daddr[0] = w[2] as u32;
        if u16::from_be_bytes([b0[6], b0[7]]) & 0x1fff != 0 {
            return 0; // a later fragment carries no L4 header
        }
        let ihl = (b0[0] & 0x0f) as u64;
        hdr.l4 = if ihl == 5 {
            ((w[2] >> 32) as u32).to_ne_bytes() // bytes 20..24: already read
        } else {
            read::<u32>(ip + ihl * 4, 0).to_ne_bytes()
        };
    } else if (ethertype == 0x86dd || ethertype == 0) && version == 6 {
        // [ver/class/flow len next-header hop-limit] [src] [src] [dst] [dst] [l4…]
        hdr.l3 = 6;
        // Extension headers are not followed (neither does tcpdump's `port`): the tuple stays
        // without ports then. A fragment header's next header is read for `udp`/`proto N`.
        pkt.kind = K_IP6;
        pkt.proto = b0[6];
        pkt.saddr = [
            w[1] as u32,
            (w[1] >> 32) as u32,
            w[2] as u32,
            (w[2] >> 32) as u32,
        ];
        pkt.daddr = [
            w[3] as u32,
            (w[3] >> 32) as u32,
            w[4] as u32,
            (w[4] >> 32) as u32,
        ];
        if b0[6] == IPPROTO_FRAGMENT {
            pkt.inner = w[5] as u8; // byte 40: the fragment header's next header
            return 0;
        }
        hdr.l4 = (w[5] as u32).to_ne_bytes(); // bytes 40..44
    } else if ethertype == 0x0806 || ethertype == 0x8035 {
        // ARP/RARP: [htype ptype hlen plen oper sha(6)] [spa(4) at 14] [tha(6)] [tpa(4) at 24]
        pkt.kind = if ethertype == 0x0806 { K_ARP } else { K_RARP };
        pkt.saddr[0] = (w[1] >> 48) as u32 | ((w[2] as u32) << 16);
        pkt.daddr[0] = w[3] as u32;
        return 0;
    } else {
        return 0;
    }
    hdr.l4_ok = 1;
    if matches!(pkt.proto, 6 | 17 | 132) {
        pkt.sport = u16::from_be_bytes([hdr.l4[0], hdr.l4[1]]);
        pkt.dport = u16::from_be_bytes([hdr.l4[2], hdr.l4[3]]);
        pkt.ports_ok = 1;
    }
    0
}

/// Fills the skb's conntrack entry: which one, its status bits and both of its tuples. Runs
/// only for an skb that matched the filter (it costs three helper calls).
///
/// `skb->_nfct` is an `unsigned long`, not a typed pointer: the kernel keeps the `enum
/// ip_conntrack_info` of THIS skb (NEW, ESTABLISHED, …_REPLY) in its low 3 bits, and the
/// address of the `struct nf_conn` in the rest (entries are 8-byte aligned), as retis's `ct`
/// collector reads it. The verifier therefore sees an integer, so the entry is read with
/// `bpf_probe_read_kernel` ([`read`]), never with a plain load.
#[inline(always)]
fn read_ct(skb: u64, ev: &mut Event) {
    let nfct_off = config!(offsets.skb_nfct);
    if nfct_off == 0 {
        return; // a kernel without conntrack
    }
    let nfct: u64 = field(skb, nfct_off);
    ev.ct_info = (nfct & 7) as u8;
    let ct = nfct & !7;
    if ct == 0 {
        return; // no entry (yet), or untracked
    }
    ev.ct = ct;
    ev.ct_status = read(ct, config!(offsets.ct_status));
    ev.ct_orig = read(ct, config!(offsets.ct_tuple_orig));
    ev.ct_reply = read(ct, config!(offsets.ct_tuple_reply));
}

/// Where the network (IP/ARP) header is: `(skb->head, its offset from head)`, or `None` for an
/// skb without a buffer.
///
/// `network_header` is an offset from `head`. Early on the receive path it is not set yet
/// (0, or 0xffff = "unset"): there `data` already points at the IP header.
///
/// `head` and `data` are read with the helper ([`read`]), not loaded: the verifier of some
/// kernels (7.2) types a `unsigned char *` loaded from a trusted skb as a pointer, and a
/// pointer may not be passed as the plain number [`tracer_headers`] takes, nor stored into
/// the event; the helper's copy is always a plain number.
#[inline(always)]
fn network_header(skb: u64) -> Option<(u64, u64)> {
    let head: u64 = read(skb, config!(offsets.skb_head));
    if head == 0 {
        return None;
    }
    let mut nh = field::<u16>(skb, config!(offsets.skb_network_header)) as u64;
    if nh == 0 || nh == 0xffff {
        let data: u64 = read(skb, config!(offsets.skb_data));
        if data <= head || data - head > 0xffff {
            return None;
        }
        nh = data - head;
    }
    Some((head, nh))
}

/// `path --pcap`: copies the packet's first bytes, from the network header on, into
/// `ev.hdr` — ONE `bpf_probe_read_kernel`, called only for an skb that matched the filter.
///
/// How many: [`HDR_BYTES`], or fewer if the skb's linear data (`head + nh` up to
/// `head + skb->tail`) ends sooner. Reading further would copy whatever memory follows (the
/// rest of the buffer, or `skb_shared_info`), not the packet: the rest of a large packet lives
/// in page fragments elsewhere. Also sets `ev.net_len` (needs `ev.len`: call after
/// `read_details`). The size is a variable, but the verifier knows its bounds
/// (1 ..= `HDR_BYTES`, from the two comparisons), which is all a helper's size argument needs.
#[inline(always)]
fn read_headers(skb: u64, ev: &mut Event) {
    let Some((head, nh)) = network_header(skb) else {
        return;
    };
    let tail = field::<u32>(skb, config!(offsets.skb_tail)) as u64;
    if tail <= nh {
        return;
    }
    let mut n = tail - nh;
    if n > HDR_BYTES as u64 {
        n = HDR_BYTES as u64;
    }
    // SAFETY: `ev.hdr` has room for `HDR_BYTES >= n` bytes; the helper copies through the
    // kernel's fault handling (an unreadable source is an error: then the bytes stay zero and
    // `hdr_len` stays 0).
    let err = unsafe {
        generated::bpf_probe_read_kernel(
            ev.hdr.as_mut_ptr().cast(),
            n as u32,
            (head + nh) as *const _,
        )
    };
    if err == 0 {
        ev.hdr_len = n as u16;
    }
    // The IP packet's length: `skb->len` counts from `data`, which may sit before the network
    // header (the MAC header, on the way out) or after it (pulled by the protocol handlers).
    let data: u64 = read(skb, config!(offsets.skb_data));
    if data < head {
        return;
    }
    let data_off = data - head;
    let from_nh = (ev.len as u64 + data_off).wrapping_sub(nh);
    if from_nh <= u32::MAX as u64 {
        ev.net_len = from_nh as u32;
    }
}

/// The in-kernel filter, first part: namespace and interface.
#[inline(always)]
fn matches_device(device: &Device) -> bool {
    let flags = config!(filter.flags);
    if flags & F_NETNS != 0 && device.netns != config!(filter.netns) {
        return false;
    }
    if flags & F_IFINDEX != 0 && device.ifindex != config!(filter.ifindex) {
        return false;
    }
    true
}

/// The in-kernel filter, second part: the compiled pcap-filter expression, run by the very
/// function the userspace tests check against tcpdump ([`program::eval`]).
#[inline(always)]
fn matches_tuple(pkt: &Packet) -> bool {
    tracer_filter(pkt) != 0
}

/// [`program::eval`] on the packet, as a GLOBAL function (`#[no_mangle] pub extern "C"`: its BTF
/// linkage is `global`). That changes how the kernel's verifier checks it: a static function, or
/// inlined code, is walked again on every path that reaches it with a different state — the
/// headers of IPv4, IPv6, ARP, a fragment, … — and the filter loop is the longest part of the
/// program (≈30 instructions per filter instruction, up to 64 of them). A global function is
/// verified ONCE per program, by itself, for any packet; its callers only check that they pass
/// a pointer to a `Packet`. Returns 1 if the packet matches, 0 if not.
// SAFETY: `no_mangle` only keeps the name (and the global linkage); no other symbol of the object
// is called `tracer_filter`.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn tracer_filter(pkt: *const Packet) -> i32 {
    // The verifier makes a global function check its pointer arguments for NULL.
    // SAFETY: the only caller passes a reference to a `Packet` on its stack.
    let Some(pkt) = (unsafe { pkt.as_ref() }) else {
        return 0;
    };
    program::eval(&CONFIG.filter.prog, config!(filter.len), pkt) as i32
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
