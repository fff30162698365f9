//! The filter program: a pcap-filter expression (`host 10.0.0.1 and (udp or port 80)`) compiled
//! by userspace (`tracer::filter`) into a short list of postfix instructions, and the evaluator
//! that runs it. The SAME [`eval`] function is compiled twice: into the eBPF program, where it
//! decides in the kernel whether an skb is reported, and into userspace, where the tests run it on
//! the packets of a pcap file and compare its decisions with `tcpdump -r FILE EXPR`.
//!
//! # The machine
//!
//! Postfix, like an RPN calculator: each test instruction (`OP_KIND`, `OP_PROTO`, `OP_HOST`,
//! `OP_PORT`) pushes one bit (does the packet pass this primitive?), and `OP_AND`, `OP_OR`,
//! `OP_NOT` combine the bits on top of the stack. `udp and not port 53` becomes
//! `PROTO(17) PORT(53) NOT AND`. The stack is the bits of one `u64` (top = bit 0), so it costs
//! one register and never touches memory.
//!
//! # Why it looks so odd: the verifier
//!
//! The kernel's verifier walks every path through the program before it accepts it. Two things
//! keep that walk short:
//! - The instructions live in the read-only `CONFIG`, so the verifier knows each opcode as a
//!   constant and follows only the branch that runs; the loop runs exactly `len` times.
//! - The tests on packet fields are written WITHOUT branches (`is_zero`, `le` below compute
//!   0 or 1 with arithmetic). An `if` on a packet field would split the walk in two at every
//!   primitive: 2^N paths for N primitives. Arithmetic leaves one path, whatever the packet.

/// At most this many instructions: a primitive is one instruction, `and`/`or`/`not` one each, so
/// about 30 primitives. The stack (one `u64`) can never overflow with 64 instructions.
pub const MAX_INSNS: usize = 64;

/// Pop two bits, push `a AND b`.
pub const OP_AND: u8 = 1;
/// Pop two bits, push `a OR b`.
pub const OP_OR: u8 = 2;
/// Invert the top bit.
pub const OP_NOT: u8 = 3;
/// Push: the packet's kind is in `kinds` (`ip`, `ip6`, `arp`, `rarp`).
pub const OP_KIND: u8 = 4;
/// Push: IPv4 protocol (all fragments) or IPv6 next header (directly, or after a fragment
/// header) equals `proto`, for the kinds in `kinds` (`K_IP`, `K_IP6`).
pub const OP_PROTO: u8 = 5;
/// Push: `(address & mask) == addr` for the source and/or destination (`dir`), for packets whose
/// kind is in `kinds`. `host` is a `net` with a full mask.
pub const OP_HOST: u8 = 6;
/// Push: TCP/UDP/SCTP port in `lo..=hi` for source and/or destination (`dir`). Like tcpdump, an
/// IPv4 fragment other than the first, or an IPv6 packet whose transport header is not right
/// after the IPv6 header, has no ports.
pub const OP_PORT: u8 = 7;

/// Packet kinds (bits, so that an instruction can accept several).
pub const K_IP: u8 = 1;
pub const K_IP6: u8 = 2;
pub const K_ARP: u8 = 4;
pub const K_RARP: u8 = 8;

/// `dir` bits: the source, the destination, or (`DIR_BOTH`) both at once (`src and dst`).
pub const DIR_SRC: u8 = 1;
pub const DIR_DST: u8 = 2;
pub const DIR_EITHER: u8 = DIR_SRC | DIR_DST;
pub const DIR_BOTH: u8 = 4 | DIR_SRC | DIR_DST;

/// The IPv6 fragment header's "next header" number.
pub const IPPROTO_FRAGMENT: u8 = 44;

/// One instruction. Fields an opcode does not use are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    pub op: u8,
    /// `DIR_*` (host, port).
    pub dir: u8,
    /// `K_*` bits (kind, proto, host).
    pub kinds: u8,
    /// IP protocol number (proto).
    pub proto: u8,
    /// Port range, inclusive (port).
    pub lo: u16,
    pub hi: u16,
    /// Address and mask as four words of the raw network-order bytes (`u32::from_ne_bytes`);
    /// IPv4 uses word 0 only.
    pub addr: [u32; 4],
    pub mask: [u32; 4],
}

impl Insn {
    pub const ZERO: Insn = Insn {
        op: 0,
        dir: 0,
        kinds: 0,
        proto: 0,
        lo: 0,
        hi: 0,
        addr: [0; 4],
        mask: [0; 4],
    };
}

impl Default for Insn {
    fn default() -> Self {
        Insn::ZERO
    }
}

/// What the evaluator knows of a packet: what the eBPF program read from the skb's headers.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    /// One `K_*` bit, or 0 (not IP, not ARP).
    pub kind: u8,
    /// IPv4 protocol / IPv6 next header.
    pub proto: u8,
    /// IPv6 with a fragment header right after the IPv6 header: that header's next header.
    pub inner: u8,
    /// 1 if `sport`/`dport` are a TCP/UDP/SCTP header's ports (see [`OP_PORT`]).
    pub ports_ok: u8,
    pub sport: u16,
    pub dport: u16,
    /// IP source/destination, or ARP sender/target protocol address (words as in [`Insn`]).
    pub saddr: [u32; 4],
    pub daddr: [u32; 4],
}

/// A value the compiler cannot see through: it keeps the arithmetic below as arithmetic instead
/// of turning it back into comparisons and branches.
#[inline(always)]
fn opaque(x: u64) -> u64 {
    #[cfg(target_arch = "bpf")]
    {
        let mut x = x;
        // SAFETY: one `x = x` instruction: the compiler must assume it changed x.
        unsafe {
            core::arch::asm!("{0} = {0}", inout(reg) x, options(nomem, nostack, preserves_flags))
        };
        x
    }
    #[cfg(not(target_arch = "bpf"))]
    {
        x
    }
}

/// 1 if `x == 0`, else 0 (for `x < 2^63`), without a branch.
#[inline(always)]
fn is_zero(x: u64) -> u64 {
    opaque(x).wrapping_sub(1) >> 63
}

/// 1 if `a <= b`, else 0 (for `a, b < 2^63`), without a branch.
#[inline(always)]
fn le(a: u64, b: u64) -> u64 {
    1 ^ (opaque(b).wrapping_sub(a) >> 63)
}

/// Reads a field of an instruction. Volatile: in the eBPF program the instructions are in the
/// `CONFIG` global, whose real value is only known at load time.
#[inline(always)]
fn rd<T: Copy>(x: &T) -> T {
    // SAFETY: a reference is always valid to read.
    unsafe { core::ptr::read_volatile(x) }
}

/// Combines the source and destination results as `dir` asks.
#[inline(always)]
fn by_dir(dir: u8, src: u64, dst: u64) -> u64 {
    let dir = dir as u64;
    let either = (src & dir) | (dst & (dir >> 1));
    let both = src & dst;
    let want_both = (dir >> 2) & 1;
    either ^ ((either ^ both) & want_both.wrapping_neg())
}

/// 1 if `(a & mask) == addr` on all four words.
#[inline(always)]
fn addr_in(a: &[u32; 4], ins: &Insn) -> u64 {
    let mut diff = 0u64;
    let mut w = 0;
    while w < 4 {
        diff |= ((a[w] & rd(&ins.mask[w])) ^ rd(&ins.addr[w])) as u64;
        w += 1;
    }
    is_zero(diff)
}

/// Runs one instruction on the bit stack.
#[inline(always)]
pub fn step(stack: u64, ins: &Insn, p: &Packet) -> u64 {
    let op = rd(&ins.op);
    if op == OP_AND {
        let top = stack & 1;
        let rest = stack >> 1;
        return rest & (!1 | top);
    }
    if op == OP_OR {
        let top = stack & 1;
        return (stack >> 1) | top;
    }
    if op == OP_NOT {
        return stack ^ 1;
    }
    let kinds = rd(&ins.kinds);
    let kind_ok = 1 ^ is_zero((kinds & p.kind) as u64);
    let bit = if op == OP_KIND {
        kind_ok
    } else if op == OP_PROTO {
        let want = rd(&ins.proto) as u64;
        let direct = is_zero(p.proto as u64 ^ want);
        let after_frag =
            is_zero(p.proto as u64 ^ IPPROTO_FRAGMENT as u64) & is_zero(p.inner as u64 ^ want);
        let v4 = 1 ^ is_zero((kinds & K_IP & p.kind) as u64);
        let v6 = 1 ^ is_zero((kinds & K_IP6 & p.kind) as u64);
        (v4 & direct) | (v6 & (direct | after_frag))
    } else if op == OP_HOST {
        kind_ok & by_dir(rd(&ins.dir), addr_in(&p.saddr, ins), addr_in(&p.daddr, ins))
    } else if op == OP_PORT {
        let (lo, hi) = (rd(&ins.lo) as u64, rd(&ins.hi) as u64);
        let (s, d) = (p.sport as u64, p.dport as u64);
        let src = le(lo, s) & le(s, hi);
        let dst = le(lo, d) & le(d, hi);
        (p.ports_ok as u64 & 1) & by_dir(rd(&ins.dir), src, dst)
    } else {
        0 // unknown opcode: userspace never writes one
    };
    (stack << 1) | bit
}

/// Runs the first `len` instructions of `prog` on a packet. `len == 0` (the empty expression)
/// matches everything.
#[inline(always)]
pub fn eval(prog: &[Insn; MAX_INSNS], len: u32, p: &Packet) -> bool {
    if len == 0 {
        return true;
    }
    let mut stack = 0u64;
    let mut i = 0;
    while i < MAX_INSNS {
        if i as u32 >= len {
            break;
        }
        stack = step(stack, &prog[i], p);
        i += 1;
    }
    stack & 1 != 0
}
