//! Types shared by the kernel side (`tracer-ebpf`) and the userspace side (`tracer`).
//!
//! Every struct here is `#[repr(C)]` and made only of integers and byte arrays, so both compilers
//! lay it out the same way: the eBPF program writes an [`Event`] into the ring buffer and userspace
//! reads the very same bytes back. There is exactly one definition of each type — never a
//! hand-written mirror on the other side.
//!
//! Two kinds of data cross the kernel/user boundary:
//! - [`Config`], written ONCE by userspace before the program is loaded (a read-only global, like
//!   pwru's `const volatile` config). The verifier sees its values as constants, so branches on
//!   them cost nothing and dead branches are removed.
//! - [`Event`], written by the kernel side for every skb that passed the filter.
#![no_std]
#![cfg_attr(target_arch = "bpf", feature(asm_experimental_arch))]

pub mod program;
pub use program::{Insn, Packet, MAX_INSNS};

/// How many tracepoints one program object can be attached to. Each "slot" is an identical copy
/// of the same eBPF function (a program is loaded for exactly one attach target, so N targets need
/// N programs). About 30 tracepoints take a `struct sk_buff *` on a 6.18 kernel.
pub const MAX_SLOTS: usize = 64;

/// "This argument does not exist" in a [`Slot`].
pub const NO_ARG: u8 = 0xff;

/// Where, in the running kernel's structs, the fields we read live. Computed in userspace from
/// `/sys/kernel/btf/vmlinux` at start-up (never hard-coded: they change between kernel builds).
/// All values are byte offsets from the start of the named struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    /// `sk_buff.head`: start of the packet buffer (`unsigned char *`).
    pub skb_head: u32,
    /// `sk_buff.data`: start of the current layer's data (`unsigned char *`).
    pub skb_data: u32,
    /// `sk_buff.network_header`: offset of the IP header from `head` (`u16`, `0xffff` = unset).
    pub skb_network_header: u32,
    /// `sk_buff.protocol`: the ethertype, big-endian (`__be16`).
    pub skb_protocol: u32,
    /// `sk_buff.len`: bytes of data (`unsigned int`).
    pub skb_len: u32,
    /// `sk_buff.dev`: the device the skb is on (`struct net_device *`, may be NULL).
    pub skb_dev: u32,
    /// `sk_buff.sk`: the owning socket (`struct sock *`, may be NULL).
    pub skb_sk: u32,
    /// `net_device.ifindex` (`int`).
    pub dev_ifindex: u32,
    /// `net_device.name` (`char[16]`).
    pub dev_name: u32,
    /// `net_device.nd_net.net`: the device's network namespace (`struct net *`).
    pub dev_net: u32,
    /// `sock.__sk_common.skc_net.net`: the socket's network namespace (`struct net *`).
    pub sk_net: u32,
    /// `net.ns.inum`: the namespace's inode number, as in `ls -l /proc/PID/ns/net`.
    pub net_inum: u32,
    /// `sk_buff.tail`: end of the linear data, as an offset from `head` (`sk_buff_data_t`, a
    /// `u32` on 64-bit kernels). Bounds the header bytes copied for `--pcap` ([`Event::hdr`]).
    pub skb_tail: u32,
    /// `sk_buff._nfct`: the skb's conntrack entry and its `ctinfo` in the low 3 bits
    /// (`unsigned long`). 0 = this kernel has no conntrack (no `_nfct` in its BTF): never a real
    /// offset, since an sk_buff starts with its list pointers.
    pub skb_nfct: u32,
    /// `nf_conn.status` (`unsigned long`, the `IPS_*` bits), from the `struct nf_conntrack *`
    /// that `_nfct` points to (`nf_conn.ct_general`).
    pub ct_status: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_ORIGINAL].tuple` (`struct nf_conntrack_tuple`), from the
    /// same pointer.
    pub ct_tuple_orig: u32,
    /// `nf_conn.tuplehash[IP_CT_DIR_REPLY].tuple`, from the same pointer.
    pub ct_tuple_reply: u32,
}

/// How to read one tracepoint's arguments. Positions count from 0 and do NOT include the leading
/// `void *` of the BTF typedef `btf_trace_<name>` (that one is the tracepoint's private data, not
/// an argument the program sees).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// Position of the `struct sk_buff *` argument.
    pub skb_arg: u8,
    /// Position of the `void *location` argument (kfree_skb, consume_skb), or [`NO_ARG`].
    pub location_arg: u8,
    /// Position of the `enum skb_drop_reason` argument (kfree_skb), or [`NO_ARG`].
    pub reason_arg: u8,
    /// [`SLOT_FREES_SKB`] and friends.
    pub flags: u8,
}

impl Slot {
    /// A slot that is not attached to anything.
    pub const UNUSED: Slot = Slot {
        skb_arg: NO_ARG,
        location_arg: NO_ARG,
        reason_arg: NO_ARG,
        flags: 0,
    };
}

impl Default for Slot {
    fn default() -> Self {
        Slot::UNUSED
    }
}

/// The skb dies at this tracepoint (kfree_skb, consume_skb): stop tracking its address.
pub const SLOT_FREES_SKB: u8 = 1;

/// Filter flag: only this netns inode ([`Filter::netns`]).
pub const F_NETNS: u32 = 1 << 0;
/// Filter flag: only this interface index ([`Filter::ifindex`]).
pub const F_IFINDEX: u32 = 1 << 1;
/// The packet filter, evaluated in the kernel before anything is sent to userspace: the
/// namespace and interface restrictions of the command line, then the compiled pcap-filter
/// expression ([`program`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Filter {
    /// Which of `netns`/`ifindex` are set (`F_*` bits).
    pub flags: u32,
    pub netns: u32,
    pub ifindex: u32,
    /// How many instructions of `prog` are used; 0 = the empty expression, which matches all.
    pub len: u32,
    /// The expression in postfix form (see [`program`]).
    pub prog: [Insn; MAX_INSNS],
}

impl Filter {
    /// Matches every skb.
    pub const ZERO: Filter = Filter {
        flags: 0,
        netns: 0,
        ifindex: 0,
        len: 0,
        prog: [Insn::ZERO; MAX_INSNS],
    };
}

impl Default for Filter {
    fn default() -> Self {
        Filter::ZERO
    }
}

/// Everything the eBPF program needs to know, fixed at load time (global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    pub offsets: Offsets,
    pub filter: Filter,
    /// Numeric value of `SKB_CONSUMED` in this kernel's `enum skb_drop_reason` (or `u32::MAX`).
    /// kfree_skb events with this reason are not drops and are skipped.
    pub consumed_reason: u32,
    /// 1: keep following an skb's address once it matched (`--track-skb`).
    pub track_skb: u8,
    /// 1: copy the first [`HDR_BYTES`] bytes from the network header into every event
    /// (`path --pcap`). 0: the copy is not even verified (a constant branch, see above).
    pub copy_headers: u8,
    pub _pad: [u8; 2],
    pub slots: [Slot; MAX_SLOTS],
}

impl Config {
    /// All zero, all slots unused: the value compiled into the object file.
    pub const ZERO: Config = Config {
        offsets: Offsets {
            skb_head: 0,
            skb_data: 0,
            skb_network_header: 0,
            skb_protocol: 0,
            skb_len: 0,
            skb_dev: 0,
            skb_sk: 0,
            dev_ifindex: 0,
            dev_name: 0,
            dev_net: 0,
            sk_net: 0,
            net_inum: 0,
            skb_tail: 0,
            skb_nfct: 0,
            ct_status: 0,
            ct_tuple_orig: 0,
            ct_tuple_reply: 0,
        },
        filter: Filter::ZERO,
        consumed_reason: u32::MAX,
        track_skb: 0,
        copy_headers: 0,
        _pad: [0; 2],
        slots: [Slot::UNUSED; MAX_SLOTS],
    };
}

impl Default for Config {
    fn default() -> Self {
        Config::ZERO
    }
}

/// How many bytes of the packet, from its network (IP) header on, an [`Event`] can carry for
/// `path --pcap`.
///
/// 96 is the smallest multiple of 8 that holds the headers of every packet the course meets
/// WHOLE, so that Wireshark dissects them without "[Packet size limited during capture]" in a
/// header: an IPv4 (20) + TCP header with the usual SYN options (40); an IPv6 (40) + UDP (8)
/// header; and the largest, an ICMPv6 error (40 + 8) quoting the offending IPv6 + UDP headers
/// (40 + 8) = 96. A bigger array would cost every event (the ring buffer holds fewer of them,
/// and each is copied once more), and headers are what `--pcap` is for: the rest of a datagram
/// is payload, which the tracer has no business exporting.
pub const HDR_BYTES: usize = 96;

/// One traced skb at one tracepoint, as written to the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC nanoseconds.
    pub mono_ns: u64,
    /// The skb's kernel address: the same value at every tracepoint the skb passes.
    pub skb: u64,
    /// The freeing function's address (kfree_skb/consume_skb `location`), or 0.
    pub location: u64,
    /// The `enum skb_drop_reason` value (kfree_skb only), or 0.
    pub reason: u32,
    /// Network namespace inode (0 = unknown: no device and no socket).
    pub netns: u32,
    /// Interface index in that namespace (0 = no device).
    pub ifindex: u32,
    /// `skb->len`.
    pub len: u32,
    /// CPU the event happened on.
    pub cpu: u32,
    /// Index of the slot (tracepoint) that fired.
    pub slot: u16,
    /// 4, 6 or 0 (not IP / header not readable).
    pub l3: u8,
    /// IP protocol number (17 UDP, 6 TCP, 1 ICMP, 58 ICMPv6), 0 if unknown.
    pub l4: u8,
    /// Host byte order; 0 for protocols without ports.
    pub sport: u16,
    pub dport: u16,
    /// ICMP/ICMPv6 type and code.
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _pad: [u8; 10],
    /// Network byte order; IPv4 uses the first 4 bytes.
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    /// The device name, NUL-padded.
    pub ifname: [u8; 16],
    /// The skb's conntrack entry (`struct nf_conn *`, `skb->_nfct` without its low 3 bits), or 0
    /// when the skb has none (yet): conntrack attaches it in the PREROUTING/OUTPUT hooks.
    pub ct: u64,
    /// `nf_conn.status`: the `IPS_*` bits (CONFIRMED, SRC_NAT, DST_NAT, SEEN_REPLY, …).
    pub ct_status: u64,
    /// The raw bytes of `nf_conn.tuplehash[ORIGINAL].tuple` (a `struct nf_conntrack_tuple`,
    /// 40 bytes on every kernel since 2.6; userspace reads its fields at offsets from BTF).
    pub ct_orig: [u64; CT_TUPLE_WORDS],
    /// The raw bytes of `nf_conn.tuplehash[REPLY].tuple`: what an answer must look like.
    pub ct_reply: [u64; CT_TUPLE_WORDS],
    /// `skb->_nfct & 7`: the `enum ip_conntrack_info` of this skb (NEW, ESTABLISHED, RELATED,
    /// their `_REPLY` twins, or UNTRACKED with no entry).
    pub ct_info: u8,
    pub _ct_pad: [u8; 7],
    /// `path --pcap` only (else 0): how many bytes of [`hdr`](Event::hdr) are the packet's —
    /// at most [`HDR_BYTES`], fewer when the skb's linear data ends sooner (`skb->tail`).
    pub hdr_len: u16,
    pub _pad2: [u8; 2],
    /// `path --pcap` only (else 0): the packet's length from its network header on —
    /// `skb->len` counts from `skb->data`, which is the MAC header on the way out and already
    /// past the IP (and UDP) header once a protocol handler pulled them (`icmp_send`,
    /// `kfree_skb` in UDP): `len + (data - head) - network header offset` is the IP packet.
    pub net_len: u32,
    /// `path --pcap` only: the packet's first bytes from its network header on (the IP
    /// header, as [`l3`](Event::l3) says), as they are at THIS tracepoint — after a NAT hook
    /// they show the rewritten addresses. Bytes from `hdr_len` on are zero.
    pub hdr: [u8; HDR_BYTES],
}

impl Event {
    /// All zero (`Default` cannot be derived: the standard library implements it for arrays
    /// of at most 32 elements, and [`hdr`](Event::hdr) has more).
    pub const ZERO: Event = Event {
        mono_ns: 0,
        skb: 0,
        location: 0,
        reason: 0,
        netns: 0,
        ifindex: 0,
        len: 0,
        cpu: 0,
        slot: 0,
        l3: 0,
        l4: 0,
        sport: 0,
        dport: 0,
        icmp_type: 0,
        icmp_code: 0,
        _pad: [0; 10],
        saddr: [0; 16],
        daddr: [0; 16],
        ifname: [0; 16],
        ct: 0,
        ct_status: 0,
        ct_orig: [0; CT_TUPLE_WORDS],
        ct_reply: [0; CT_TUPLE_WORDS],
        ct_info: 0,
        _ct_pad: [0; 7],
        hdr_len: 0,
        _pad2: [0; 2],
        net_len: 0,
        hdr: [0; HDR_BYTES],
    };

    /// The header bytes that are the packet's (`hdr[..hdr_len]`).
    pub fn headers(&self) -> &[u8] {
        &self.hdr[..(self.hdr_len as usize).min(HDR_BYTES)]
    }
}

impl Default for Event {
    fn default() -> Self {
        Event::ZERO
    }
}

/// The bytes of an [`Event`] before its `--pcap` part (`hdr_len`, `net_len`, `hdr`). Without
/// `--pcap` the kernel side sends only these, so the ring buffer holds as many events as before
/// the header bytes existed; userspace reads a shorter item as an `Event` whose `--pcap` part
/// is zero.
pub const EVENT_BYTES_WITHOUT_HEADERS: usize = core::mem::offset_of!(Event, hdr_len);

/// How many 8-byte words of a `struct nf_conntrack_tuple` the kernel side copies: 40 bytes.
/// Userspace refuses a kernel whose tuple is bigger (conntrack is then simply not shown).
pub const CT_TUPLE_WORDS: usize = 5;

/// Index of the one counter in the `LOST` per-CPU array: events that did not fit in the ring
/// buffer (userspace too slow). The tracer prints their sum at exit — events are never lost silently.
pub const LOST_INDEX: u32 = 0;

// The layouts are part of the contract between both sides: a size change must be deliberate.
const _: () = assert!(core::mem::size_of::<Event>() == 216 + 8 + HDR_BYTES);
const _: () = assert!(EVENT_BYTES_WITHOUT_HEADERS == 216);
const _: () = assert!(core::mem::size_of::<Config>() == 316 + 16 + 16 + 40 * MAX_INSNS);

#[cfg(feature = "user")]
mod user {
    // SAFETY: all of these are `#[repr(C)]`, contain only integers and byte arrays, and have no
    // implicit padding (every gap is an explicit `_pad` field), so any byte pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::Event {}
}
