//! What the tracer asks BTF, the BPF Type Format, and how.
//!
//! The kernel describes its own types in `/sys/kernel/btf/vmlinux`: every struct with its members
//! and their offsets, every enum with its values, every function prototype. That is what makes a
//! tracer portable without compiling against kernel headers. The tracer asks three questions:
//! - [`Offsets`]: where `sk_buff.head`, `net_device.ifindex`, … are in THIS kernel
//!   ([`skb_offsets`]). aya has no CO-RE for Rust programs, so we pass them as load-time globals.
//! - [`drop_reasons`]: the names of `enum skb_drop_reason` — they change between kernel versions,
//!   so they are read here, never compiled in.
//! - [`skb_tracepoints`]: every tracepoint with a `struct sk_buff *` argument, found from the
//!   typedefs `btf_trace_<name>` that the kernel emits for each tracepoint.
//!
//! Reading the format itself is the job of the [`btfparse`] crate: a header, then a list of
//! types, then a string table (the kernel's Documentation/bpf/btf.rst). Type ids count from 1 in
//! list order; 0 is `void`. Each type is 12 bytes — `name_off`, `info` (kind in bits 24..28,
//! `vlen` = number of members in bits 0..15, `kind_flag` in bit 31) and `size` or `type` —
//! followed by `vlen` kind-specific records (the tests below build a blob by hand). [`Btf`]
//! wraps btfparse's [`TypeInformation`] with the few questions the course asks;
//! [`Btf::types`] gives the whole of it to anyone who wants to explore further.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use btfparse::{Integer32Value, Integer64Value, Offset, TypeInformation, TypeVariant};
use tracer_common::{Offsets, Slot, NO_ARG, SLOT_FREES_SKB};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// The kernel's types, parsed by btfparse.
pub struct Btf {
    types: TypeInformation,
}

impl std::fmt::Debug for Btf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Btf {{ {} types }}", self.types.get().len())
    }
}

/// A member's location inside a struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// Size of the member's type in bytes.
    pub size: u32,
}

/// btfparse reads through this trait (it could read a file piece by piece); we hand it the
/// whole blob, already in memory: one `read` of the file instead of one system call per type.
struct InMemory<'a>(&'a [u8]);

impl btfparse::Readable for InMemory<'_> {
    fn read(&self, offset: u64, buffer: &mut [u8]) -> btfparse::Result<()> {
        let piece = usize::try_from(offset)
            .ok()
            .and_then(|start| self.0.get(start..start.checked_add(buffer.len())?));
        match piece {
            Some(piece) => {
                buffer.copy_from_slice(piece);
                Ok(())
            }
            None => Err(btfparse::Error::new(
                btfparse::ErrorKind::EOF,
                &format!("BTF truncated: {} bytes at offset {offset}", buffer.len()),
            )),
        }
    }
}

/// btfparse's errors have a kind and a message, but no `Display`: say both.
fn btf_error(e: btfparse::Error) -> anyhow::Error {
    anyhow!("{} ({:?})", e.message(), e.kind())
}

/// The name of a type that has one (without copying it, unlike btfparse's `name_of`).
fn name_of(t: &TypeVariant) -> Option<&str> {
    match t {
        TypeVariant::Struct(t) => t.name().as_deref(),
        TypeVariant::Union(t) => t.name().as_deref(),
        TypeVariant::Enum(t) => t.name().as_deref(),
        TypeVariant::Enum64(t) => t.name().as_deref(),
        TypeVariant::Typedef(t) => t.name().as_deref(),
        TypeVariant::Fwd(t) => t.name().as_deref(),
        _ => None, // the kinds this module never looks up by name
    }
}

/// `void`, the type with id 0, which btfparse does not store.
static VOID: TypeVariant = TypeVariant::Void;

impl Btf {
    /// Reads and parses a BTF file, e.g. [`VMLINUX_BTF`].
    pub fn from_file(path: impl AsRef<Path>) -> Result<Btf> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).with_context(|| {
            format!(
                "cannot read {}: this kernel has no BTF (needs CONFIG_DEBUG_INFO_BTF=y, kernel >= 5.4); \
                 the tracer cannot work without it",
                path.display()
            )
        })?;
        Btf::parse(&bytes).with_context(|| format!("cannot parse BTF in {}", path.display()))
    }

    /// Parses a little-endian BTF blob (the header, types and strings of `.BTF`).
    pub fn parse(bytes: &[u8]) -> Result<Btf> {
        let types = TypeInformation::new(&InMemory(bytes)).map_err(btf_error)?;
        Ok(Btf { types })
    }

    /// vmlinux's BTF (`base`) and a module's (`/sys/kernel/btf/<module>`) as one: see
    /// [`join_split`].
    pub fn with_module(base: impl AsRef<Path>, module: impl AsRef<Path>) -> Result<Btf> {
        let read =
            |p: &Path| std::fs::read(p).with_context(|| format!("cannot read {}", p.display()));
        let joined = join_split(&read(base.as_ref())?, &read(module.as_ref())?)?;
        Btf::parse(&joined).with_context(|| {
            format!(
                "cannot parse {} joined to its base",
                module.as_ref().display()
            )
        })
    }

    /// Everything btfparse knows: every type by id, names, sizes, `offset_of`.
    pub fn types(&self) -> &TypeInformation {
        &self.types
    }

    /// The type with this id, borrowed (btfparse's own `from_id` returns a copy).
    fn get(&self, id: u32) -> Option<&TypeVariant> {
        match id {
            0 => Some(&VOID),
            _ => self.types.get().get(&id),
        }
    }

    /// The id of the type named `name` for which `kind` is true (`struct sk_buff`, not a
    /// function or variable that happens to be called `sk_buff` too). btfparse indexes one type
    /// per name, so when that one is of another kind, look through all of them.
    fn find(&self, name: &str, kind: impl Fn(&TypeVariant) -> bool) -> Option<u32> {
        if let Some(id) = self.types.id_of(name) {
            if self.get(id).is_some_and(&kind) {
                return Some(id);
            }
        }
        self.types
            .get()
            .iter()
            .find(|(_, t)| kind(t) && name_of(t) == Some(name))
            .map(|(id, _)| *id)
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the type underneath.
    fn resolve(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            id = match self.get(id) {
                Some(TypeVariant::Typedef(t)) => *t.tid(),
                Some(TypeVariant::Const(t)) => *t.tid(),
                Some(TypeVariant::Volatile(t)) => *t.tid(),
                Some(TypeVariant::Restrict(t)) => *t.tid(),
                Some(TypeVariant::TypeTag(t)) => *t.tid(),
                Some(_) => return Ok(id),
                None => bail!("BTF type id {id} does not exist"),
            };
        }
        bail!("BTF type chain too long at id {id}")
    }

    /// Offset of `path` (dot-separated, e.g. `"nd_net.net"` or `"ns.inum"`) inside the struct
    /// named `struct_name`. Members of anonymous structs and unions are found as if they were
    /// members of the outer struct, as in C (sk_buff's `dev` sits in an anonymous union).
    pub fn field(&self, struct_name: &str, path: &str) -> Result<Field> {
        let id = self
            .find(struct_name, |t| matches!(t, TypeVariant::Struct(_)))
            .ok_or_else(|| anyhow!("struct {struct_name} not found in the kernel's BTF"))?;
        let (member, offset) = self
            .types
            .offset_of(id, path)
            .map_err(btf_error)
            .with_context(|| format!("struct {struct_name} has no member {path} in this kernel"))?;
        let Offset::ByteOffset(offset) = offset else {
            bail!("{struct_name}.{path} is a bitfield; the tracer reads whole bytes only");
        };
        let size = self
            .types
            .size_of(member)
            .map_err(btf_error)
            .with_context(|| format!("the size of {struct_name}.{path}"))?;
        Ok(Field {
            offset,
            size: u32::try_from(size)?,
        })
    }

    /// The offset of [`field`](Btf::field) `struct_name.path`, after checking that it is
    /// `size` bytes in this kernel (what the eBPF side's loads assume).
    pub fn sized_offset(&self, struct_name: &str, path: &str, size: u32) -> Result<u32> {
        let field = self.field(struct_name, path)?;
        if field.size != size {
            bail!(
                "{struct_name}.{path} is {} bytes in this kernel, the tracer expects {size}",
                field.size
            );
        }
        Ok(field.offset)
    }

    /// The enumerators of `enum name` (enum or enum64) as (name, value) pairs, in declaration
    /// order — what `bpftool btf dump file /sys/kernel/btf/vmlinux` lists.
    pub fn enum_values(&self, name: &str) -> Result<Vec<(String, i64)>> {
        let id = self
            .find(name, |t| {
                matches!(t, TypeVariant::Enum(_) | TypeVariant::Enum64(_))
            })
            .ok_or_else(|| anyhow!("enum {name} not found in the kernel's BTF"))?;
        Ok(match self.get(id) {
            Some(TypeVariant::Enum(e)) => e
                .named_value_list()
                .iter()
                .map(|v| {
                    let value = match v.value {
                        Integer32Value::Signed(v) => i64::from(v),
                        Integer32Value::Unsigned(v) => i64::from(v),
                    };
                    (v.name.clone(), value)
                })
                .collect(),
            Some(TypeVariant::Enum64(e)) => e
                .named_value_list()
                .iter()
                .map(|v| {
                    let value = match v.value {
                        Integer64Value::Signed(v) => v,
                        Integer64Value::Unsigned(v) => v as i64,
                    };
                    (v.name.clone(), value)
                })
                .collect(),
            _ => unreachable!("find() returned an enum"),
        })
    }

    /// The parameters of tracepoint `name` as the program sees them: the prototype of the typedef
    /// `btf_trace_<name>` WITHOUT its first parameter (a `void *` for the tracepoint's own use).
    pub fn tracepoint_params(&self, name: &str) -> Result<Vec<u32>> {
        let typedef = self
            .find(&format!("btf_trace_{name}"), |t| {
                matches!(t, TypeVariant::Typedef(_))
            })
            .ok_or_else(|| {
                anyhow!("tracepoint {name} not found (no typedef btf_trace_{name} in BTF)")
            })?;
        let Some(TypeVariant::Ptr(ptr)) = self.get(self.resolve(typedef)?) else {
            bail!("btf_trace_{name} is not a function pointer");
        };
        match self.get(self.resolve(*ptr.tid())?) {
            Some(TypeVariant::FuncProto(proto)) if !proto.parameter_list().is_empty() => Ok(proto
                .parameter_list()[1..]
                .iter()
                .map(|p| p.tid())
                .collect()),
            _ => bail!("btf_trace_{name} does not point to a function prototype"),
        }
    }

    /// True if `id` is a pointer to `struct <name>` (through const/typedef/…).
    pub fn is_ptr_to_struct(&self, id: u32, name: &str) -> bool {
        let Some(pointee) = self.pointee(id) else {
            return false;
        };
        match self.get(pointee) {
            Some(TypeVariant::Struct(s)) => s.name().as_deref() == Some(name),
            Some(TypeVariant::Fwd(f)) => f.name().as_deref() == Some(name),
            _ => false,
        }
    }

    /// True if `id` is `void *`.
    fn is_void_ptr(&self, id: u32) -> bool {
        self.pointee(id) == Some(0)
    }

    /// What `id` points to (through const/typedef/… on both sides of the `*`), if a pointer.
    fn pointee(&self, id: u32) -> Option<u32> {
        match self.get(self.resolve(id).ok()?)? {
            TypeVariant::Ptr(ptr) => self.resolve(*ptr.tid()).ok(),
            _ => None,
        }
    }

    /// True if `id` is `enum <name>`.
    fn is_enum(&self, id: u32, name: &str) -> bool {
        match self.resolve(id).ok().and_then(|id| self.get(id)) {
            Some(TypeVariant::Enum(e)) => e.name().as_deref() == Some(name),
            Some(TypeVariant::Enum64(e)) => e.name().as_deref() == Some(name),
            _ => false,
        }
    }

    /// Every typedef `btf_trace_*`, i.e. every tracepoint of this kernel, by name.
    pub fn tracepoint_names(&self) -> impl Iterator<Item = &str> {
        self.types.get().values().filter_map(|t| match t {
            TypeVariant::Typedef(t) => t.name().as_deref()?.strip_prefix("btf_trace_"),
            _ => None,
        })
    }
}

/// One standalone BTF blob from a base (vmlinux) and a module's *split* BTF.
///
/// A module built separately (Debian's `nf_conntrack.ko`, for one) publishes its own types in
/// `/sys/kernel/btf/<module>` as split BTF: its type ids continue after the base's last one, and
/// its string offsets after the base's string section, so a module type can name `u32` or
/// `struct list_head` from vmlinux. Concatenating the two type sections and the two string
/// sections therefore gives a blob in which every id and offset means what it meant — one btfparse
/// reads like any other (it has no split BTF reader).
pub fn join_split(base: &[u8], split: &[u8]) -> Result<Vec<u8>> {
    /// (types, strings) of a blob, from its header.
    fn sections(blob: &[u8]) -> Result<(&[u8], &[u8])> {
        let word = |at: usize| -> Result<usize> {
            let b = blob
                .get(at..at + 4)
                .ok_or_else(|| anyhow!("BTF header truncated"))?;
            Ok(u32::from_le_bytes(b.try_into().unwrap()) as usize)
        };
        if blob.get(0..2) != Some(&0xeb9fu16.to_le_bytes()[..]) {
            bail!("not little-endian BTF (bad magic)");
        }
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (word(4)?, word(8)?, word(12)?, word(16)?, word(20)?);
        let part = |off: usize, len: usize| {
            blob.get(hdr_len + off..hdr_len + off + len)
                .ok_or_else(|| anyhow!("BTF section out of bounds"))
        };
        Ok((part(type_off, type_len)?, part(str_off, str_len)?))
    }
    let (base_types, base_strings) = sections(base).context("the base BTF")?;
    let (split_types, split_strings) = sections(split).context("the module's BTF")?;
    let type_len = base_types.len() + split_types.len();
    let str_len = base_strings.len() + split_strings.len();
    let mut out = Vec::with_capacity(24 + type_len + str_len);
    out.extend_from_slice(&base[0..4]); // magic, version, flags
    for w in [24, 0, type_len, type_len, str_len] {
        out.extend_from_slice(&u32::try_from(w)?.to_le_bytes());
    }
    for part in [base_types, split_types, base_strings, split_strings] {
        out.extend_from_slice(part);
    }
    Ok(out)
}

/// Computes every offset the eBPF program needs, and checks the field sizes it assumes.
pub fn skb_offsets(btf: &Btf) -> Result<Offsets> {
    let f = |s: &str, path: &str, size: u32| btf.sized_offset(s, path, size);
    Ok(Offsets {
        skb_head: f("sk_buff", "head", 8)?,
        skb_data: f("sk_buff", "data", 8)?,
        skb_network_header: f("sk_buff", "network_header", 2)?,
        skb_protocol: f("sk_buff", "protocol", 2)?,
        skb_len: f("sk_buff", "len", 4)?,
        skb_dev: f("sk_buff", "dev", 8)?,
        skb_sk: f("sk_buff", "sk", 8)?,
        dev_ifindex: f("net_device", "ifindex", 4)?,
        dev_name: f("net_device", "name", 16)?,
        dev_net: f("net_device", "nd_net.net", 8)?,
        sk_net: f("sock", "__sk_common.skc_net.net", 8)?,
        net_inum: f("net", "ns.inum", 4)?,
        skb_tail: f("sk_buff", "tail", 4)?,
        // Conntrack's fields are filled in by [`conntrack_layout`] when the kernel has them.
        skb_nfct: 0,
        ct_status: 0,
        ct_tuple_orig: 0,
        ct_tuple_reply: 0,
    })
}

/// Where a `struct nf_conntrack_tuple`'s fields are, in bytes from its start: what userspace
/// needs to read the raw tuple bytes the kernel side copied ([`tracer_common::Event::ct_orig`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleLayout {
    /// `sizeof(struct nf_conntrack_tuple)` (40 on every kernel since 2.6).
    pub size: u32,
    /// `src.u3`: the source address (`union nf_inet_addr`, 16 bytes; IPv4 in the first 4).
    pub src_addr: u32,
    /// `src.u.all`: the source port (or ICMP id), big-endian.
    pub src_port: u32,
    /// `src.l3num`: the address family (`AF_INET`, `AF_INET6`).
    pub l3num: u32,
    /// `dst.u3`: the destination address.
    pub dst_addr: u32,
    /// `dst.u.all`: the destination port (or ICMP type and code), big-endian.
    pub dst_port: u32,
    /// `dst.protonum`: the IP protocol number.
    pub protonum: u32,
}

/// Conntrack's place in this kernel: the offsets the kernel side follows from `skb->_nfct`,
/// and the tuple's layout for userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtLayout {
    /// `sk_buff._nfct`.
    pub skb_nfct: u32,
    /// `nf_conn.status`, counted from the `struct nf_conntrack *` that `_nfct` points to.
    pub status: u32,
    /// `nf_conn.tuplehash[0].tuple` (the ORIGINAL direction), from the same pointer.
    pub tuple_orig: u32,
    /// `nf_conn.tuplehash[1].tuple` (the REPLY direction), from the same pointer.
    pub tuple_reply: u32,
    pub tuple: TupleLayout,
}

impl CtLayout {
    /// Writes the kernel side's part into the load-time offsets.
    pub fn apply(&self, offsets: &mut Offsets) {
        offsets.skb_nfct = self.skb_nfct;
        offsets.ct_status = self.status;
        offsets.ct_tuple_orig = self.tuple_orig;
        offsets.ct_tuple_reply = self.tuple_reply;
    }
}

/// Where conntrack keeps what the tracer shows, in THIS kernel: `sk_buff._nfct`, and in
/// `struct nf_conn` the status bits and the two tuples (`tuplehash[2]`, an array of
/// `struct nf_conntrack_tuple_hash`, each a hash-list node followed by the `tuple`).
///
/// An error means the kernel has no conntrack (built without `CONFIG_NF_CONNTRACK`, so neither
/// `_nfct` nor `struct nf_conn` is in its BTF) or lays it out in a way the tracer cannot read:
/// the tracer then runs without the conntrack column and says so once.
pub fn conntrack_layout(btf: &Btf) -> Result<CtLayout> {
    let sized = |s: &str, path: &str, size: u32| btf.sized_offset(s, path, size);
    let skb_nfct = sized("sk_buff", "_nfct", 8)?;
    // `_nfct` points at `ct_general`, the nf_conn's first member: count from there.
    let general = btf
        .field("nf_conn", "ct_general")
        .context(
            "conntrack's own types are not in this BTF (a kernel without conntrack, or a modular \
             conntrack: its types are in /sys/kernel/btf/nf_conntrack once the module is loaded)",
        )?
        .offset;
    let from_general = |off: u32| {
        off.checked_sub(general)
            .ok_or_else(|| anyhow!("nf_conn.ct_general is not before the fields the tracer reads"))
    };
    let status = from_general(sized("nf_conn", "status", 8)?)?;
    let hashes = btf.field("nf_conn", "tuplehash")?;
    let hash_size = btf
        .types
        .size_of(
            btf.find("nf_conntrack_tuple_hash", |t| {
                matches!(t, TypeVariant::Struct(_))
            })
            .ok_or_else(|| anyhow!("struct nf_conntrack_tuple_hash not found"))?,
        )
        .map_err(btf_error)? as u32;
    if hash_size == 0 || hashes.size != 2 * hash_size {
        bail!(
            "nf_conn.tuplehash is {} bytes, not two nf_conntrack_tuple_hash of {hash_size}",
            hashes.size
        );
    }
    let tuple_in_hash = btf.field("nf_conntrack_tuple_hash", "tuple")?;
    let words = tracer_common::CT_TUPLE_WORDS as u32 * 8;
    if tuple_in_hash.size > words {
        bail!(
            "struct nf_conntrack_tuple is {} bytes in this kernel; the tracer copies {words}",
            tuple_in_hash.size
        );
    }
    let tuple_orig = from_general(hashes.offset + tuple_in_hash.offset)?;
    let t = |path: &str, size: u32| sized("nf_conntrack_tuple", path, size);
    Ok(CtLayout {
        skb_nfct,
        status,
        tuple_orig,
        tuple_reply: tuple_orig + hash_size,
        tuple: TupleLayout {
            size: tuple_in_hash.size,
            src_addr: t("src.u3", 16)?,
            src_port: t("src.u.all", 2)?,
            l3num: t("src.l3num", 2)?,
            dst_addr: t("dst.u3", 16)?,
            dst_port: t("dst.u.all", 2)?,
            protonum: t("dst.protonum", 1)?,
        },
    })
}

/// The drop reasons of this kernel: value → full name (`SKB_DROP_REASON_NO_SOCKET`).
///
/// Since Linux 6.4 a reason is split in two: the high 16 bits name a *subsystem*
/// (`enum skb_drop_reason_subsys`: 0 is the core, then e.g. mac80211 and openvswitch) and the
/// low 16 bits a code in THAT subsystem's own list. Only the core's list is
/// `enum skb_drop_reason`; a mac80211 reason `0x10005` must not be looked up there (nor its low
/// bits: code 5 of mac80211 is not the core's reason 5). [`DropReasons::name`] shows such a
/// reason as `subsys:<subsystem>/<code>`.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
    /// Subsystem number → name without the prefix (`MAC80211_UNUSABLE`), from
    /// `enum skb_drop_reason_subsys` when the kernel has it (6.4+).
    subsystems: HashMap<u32, String>,
    /// `SKB_DROP_REASON_SUBSYS_MASK` from BTF (6.4+), else the kernel's 0xffff0000: before 6.4
    /// no reason reaches 2^16, so the mask changes nothing there.
    subsys_mask: u32,
}

/// The kernel's `SKB_DROP_REASON_SUBSYS_MASK` (include/net/dropreason-core.h, 6.4+).
pub const DEFAULT_SUBSYS_MASK: u32 = 0xffff_0000;

impl DropReasons {
    /// Builds the table from (value, name) pairs (e.g. a test's own).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u32, &'a str)>) -> DropReasons {
        let names: HashMap<u32, String> =
            pairs.into_iter().map(|(v, n)| (v, n.to_string())).collect();
        let subsys_mask = names
            .iter()
            .find(|(_, n)| n.as_str() == "SKB_DROP_REASON_SUBSYS_MASK")
            .map(|(v, _)| *v)
            .filter(|m| *m != 0)
            .unwrap_or(DEFAULT_SUBSYS_MASK);
        DropReasons {
            names,
            subsystems: HashMap::new(),
            subsys_mask,
        }
    }

    /// Adds the subsystem names (`enum skb_drop_reason_subsys`, full enumerator names).
    pub fn with_subsystems<'a>(mut self, pairs: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        self.subsystems = pairs
            .into_iter()
            .map(|(v, n)| {
                let short = n.strip_prefix("SKB_DROP_REASON_SUBSYS_").unwrap_or(n);
                (v, short.to_string())
            })
            .collect();
        self
    }

    /// The full enumerator name, e.g. `SKB_DROP_REASON_NO_SOCKET`, or `None` if the core enum
    /// has no such value (a subsystem's reason, or a newer kernel's).
    pub fn full_name(&self, value: u32) -> Option<&str> {
        self.names.get(&value).map(String::as_str)
    }

    /// `(subsystem, code)` of a reason outside the core list, `None` for a core reason.
    pub fn subsystem_of(&self, value: u32) -> Option<(u32, u32)> {
        let subsys = value & self.subsys_mask;
        if subsys == 0 || self.names.contains_key(&value) {
            return None;
        }
        Some((
            subsys >> self.subsys_mask.trailing_zeros(),
            value & !self.subsys_mask,
        ))
    }

    /// What the tracer prints for `value`: the full core name (`SKB_DROP_REASON_NO_SOCKET`),
    /// `subsys:<name or number>/<code>` for another subsystem's reason (`subsys:OPENVSWITCH/2`),
    /// or `UNKNOWN(<value>)`.
    pub fn name(&self, value: u32) -> String {
        if let Some(n) = self.full_name(value) {
            return n.to_string();
        }
        match self.subsystem_of(value) {
            Some((subsys, code)) => match self.subsystems.get(&subsys) {
                Some(name) => format!("subsys:{name}/{code}"),
                None => format!("subsys:{subsys}/{code}"),
            },
            None => format!("UNKNOWN({value})"),
        }
    }

    /// The name for people: without the `SKB_DROP_REASON_` prefix (`NO_SOCKET`).
    pub fn short_name(&self, value: u32) -> String {
        let name = self.name(value);
        match name.strip_prefix("SKB_DROP_REASON_") {
            Some(short) => short.to_string(),
            None => name,
        }
    }

    /// The value of a full name (`SKB_CONSUMED` → 1).
    pub fn value_of(&self, full_name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == full_name)
            .map(|(v, _)| *v)
    }

    /// Number of known reasons.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when no reason is known.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// What kernels before 5.17 lack, said once for every place that needs drop reasons.
pub const NEEDS_5_17: &str = "this kernel has no drop reasons (`enum skb_drop_reason` and the \
    `reason` argument of the kfree_skb tracepoint appeared in Linux 5.17): the tracer and \
    chapters 5-8 need a 5.17 or newer kernel (Debian 12's 6.1 is fine)";

/// Reads `enum skb_drop_reason` (kernel 5.17+) and, on 6.4+, `enum skb_drop_reason_subsys`.
pub fn drop_reasons(btf: &Btf) -> Result<DropReasons> {
    let values = btf.enum_values("skb_drop_reason").context(NEEDS_5_17)?;
    let reasons = DropReasons::from_pairs(values.iter().map(|(n, v)| (*v as u32, n.as_str())));
    Ok(match btf.enum_values("skb_drop_reason_subsys") {
        Ok(subsys) => reasons.with_subsystems(subsys.iter().map(|(n, v)| (*v as u32, n.as_str()))),
        Err(_) => reasons, // before 6.4: no subsystems
    })
}

/// A tracepoint with an skb argument, and how the program reads its arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkbTracepoint {
    pub name: String,
    pub slot: Slot,
}

/// Describes tracepoint `name` for the eBPF program: where the skb is, and for `kfree_skb` and
/// `consume_skb` where the drop reason and the freeing location are. `None` if it has no skb.
pub fn skb_tracepoint(btf: &Btf, name: &str) -> Result<Option<SkbTracepoint>> {
    let params = btf.tracepoint_params(name)?;
    let Some(skb_arg) = params
        .iter()
        .position(|&p| btf.is_ptr_to_struct(p, "sk_buff"))
    else {
        return Ok(None);
    };
    let mut slot = Slot {
        skb_arg: skb_arg as u8,
        ..Slot::UNUSED
    };
    if name == "kfree_skb" || name == "consume_skb" {
        slot.flags |= SLOT_FREES_SKB;
        // The freeing location is the first `void *` after the skb:
        // kfree_skb(skb, location, reason[, rx_sk]), consume_skb(skb[, location]).
        if let Some(i) = params
            .iter()
            .enumerate()
            .skip(skb_arg + 1)
            .find(|(_, &p)| btf.is_void_ptr(p))
            .map(|(i, _)| i)
        {
            slot.location_arg = i as u8;
        }
        if let Some(i) = params
            .iter()
            .position(|&p| btf.is_enum(p, "skb_drop_reason"))
        {
            slot.reason_arg = i as u8;
        }
    }
    if [slot.skb_arg, slot.location_arg, slot.reason_arg]
        .iter()
        .any(|&a| a != NO_ARG && a > 5)
    {
        bail!("tracepoint {name}: an argument beyond the 6th is not supported");
    }
    Ok(Some(SkbTracepoint {
        name: name.to_string(),
        slot,
    }))
}

/// Every tracepoint of this kernel whose prototype has a `struct sk_buff *`, sorted by name.
pub fn skb_tracepoints(btf: &Btf) -> Result<Vec<SkbTracepoint>> {
    let mut names: Vec<&str> = btf.tracepoint_names().collect();
    names.sort_unstable();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        if let Some(tp) = skb_tracepoint(btf, name)? {
            out.push(tp);
        }
    }
    Ok(out)
}

/// The `kfree_skb` tracepoint, which must carry a drop reason.
pub fn kfree_skb_tracepoint(btf: &Btf) -> Result<SkbTracepoint> {
    let tp = skb_tracepoint(btf, "kfree_skb")?
        .ok_or_else(|| anyhow!("tracepoint kfree_skb has no sk_buff argument in this kernel"))?;
    if tp.slot.reason_arg == NO_ARG {
        bail!("tracepoint kfree_skb has no `enum skb_drop_reason` argument: {NEEDS_5_17}");
    }
    Ok(tp)
}

/// The C type of a parameter, as far as the tracer cares: `struct sk_buff *`, `void *`,
/// `enum skb_drop_reason`, `struct sock *`, … (`?` for anything else).
fn c_type(btf: &Btf, id: u32) -> String {
    if let Some(pointee) = btf.pointee(id) {
        return match btf.get(pointee) {
            Some(TypeVariant::Void) => "void *".into(),
            Some(t @ (TypeVariant::Struct(_) | TypeVariant::Fwd(_))) => {
                format!("struct {} *", name_of(t).unwrap_or("?"))
            }
            _ => "? *".into(),
        };
    }
    match btf.resolve(id).ok().and_then(|id| btf.get(id)) {
        Some(t @ (TypeVariant::Enum(_) | TypeVariant::Enum64(_))) => {
            format!("enum {}", name_of(t).unwrap_or("?"))
        }
        Some(TypeVariant::Int(_)) => "int".into(),
        _ => "?".into(),
    }
}

/// The `kfree_skb` tracepoint's prototype in this kernel, as `cargo xtask doctor` shows it:
/// `kfree_skb(struct sk_buff *, void *, enum skb_drop_reason)` on 5.17-6.10, with a fourth
/// `struct sock *` (rx_sk) since 6.11, only `(struct sk_buff *, void *)` before 5.17.
pub fn kfree_skb_prototype(btf: &Btf) -> Result<String> {
    let params = btf.tracepoint_params("kfree_skb")?;
    let types: Vec<String> = params.iter().map(|&p| c_type(btf, p)).collect();
    Ok(format!("kfree_skb({})", types.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BTF_MAGIC: u16 = 0xeb9f;

    /// Builds a BTF blob by hand: this is the whole format, nothing hidden.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
        /// Where this blob's strings start in the combined string space (split BTF: after the
        /// base's).
        str_base: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }
        /// A split BTF on top of `base`: ids and string offsets continue after the base's.
        fn split_of(base: &Builder) -> Self {
            Builder {
                next_id: base.next_id,
                str_base: base.strings.len() as u32,
                ..Default::default()
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.str_base + self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }
        fn ty(&mut self, name: &str, kind: u32, vlen: u32, kflag: bool, size_or_type: u32) -> u32 {
            let n = self.s(name);
            let info = (kind << 24) | vlen | if kflag { 1 << 31 } else { 0 };
            for w in [n, info, size_or_type] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            self.next_id += 1;
            self.next_id - 1
        }
        fn word(&mut self, w: u32) {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.ty(name, 1, 0, false, size);
            self.word(size * 8);
            id
        }
        fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let id = self.ty(name, 4, members.len() as u32, false, size);
            for &(m, t, bits) in members {
                let n = self.s(m);
                self.word(n);
                self.word(t);
                self.word(bits);
            }
            id
        }
        fn union(&mut self, size: u32, members: &[(&str, u32, u32)]) -> u32 {
            let id = self.ty("", 5, members.len() as u32, false, size);
            for &(m, t, bits) in members {
                let n = self.s(m);
                self.word(n);
                self.word(t);
                self.word(bits);
            }
            id
        }
        fn finish(self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            out.push(1); // version
            out.push(0); // flags
            out.extend_from_slice(&24u32.to_le_bytes()); // hdr_len
            out.extend_from_slice(&0u32.to_le_bytes()); // type_off
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes());
            out.extend_from_slice(&(self.types.len() as u32).to_le_bytes()); // str_off
            out.extend_from_slice(&(self.strings.len() as u32).to_le_bytes());
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A miniature kernel: an enum of drop reasons, an sk_buff whose `dev` hides in an anonymous
    /// union, and two tracepoint typedefs with the kernel's shape (leading `void *`).
    fn tiny_btf() -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4); // 1
        let reason = b.ty("skb_drop_reason", 6, 3, false, 4); // 2
        for (n, v) in [
            ("SKB_CONSUMED", 1u32),
            ("SKB_DROP_REASON_NO_SOCKET", 3),
            ("SKB_DROP_REASON_NETFILTER_DROP", 12),
        ] {
            let off = b.s(n);
            b.word(off);
            b.word(v);
        }
        let fwd_dev = b.ty("net_device", 7, 0, false, 0); // 3
        let dev_ptr = b.ty("", 2, 0, false, fwd_dev); // 4
        let anon = b.union(8, &[("dev", dev_ptr, 0), ("dev_scratch", u32_t, 0)]); // 5
        let skb = b.strukt("sk_buff", 128, &[("", anon, 128), ("len", u32_t, 896)]); // 6
        let skb_ptr = b.ty("", 2, 0, false, skb); // 7
        let void_ptr = b.ty("", 2, 0, false, 0); // 8
                                                 // typedef void (*btf_trace_kfree_skb)(void *, struct sk_buff *, void *, enum skb_drop_reason);
        let proto = b.ty("", 13, 4, false, 0); // 9
        for t in [void_ptr, skb_ptr, void_ptr, reason] {
            b.word(0);
            b.word(t);
        }
        let proto_ptr = b.ty("", 2, 0, false, proto); // 10
        b.ty("btf_trace_kfree_skb", 8, 0, false, proto_ptr);
        // typedef void (*btf_trace_sched_switch)(void *, unsigned int);  — no skb
        let proto2 = b.ty("", 13, 2, false, 0);
        for t in [void_ptr, u32_t] {
            b.word(0);
            b.word(t);
        }
        let proto2_ptr = b.ty("", 2, 0, false, proto2);
        b.ty("btf_trace_sched_switch", 8, 0, false, proto2_ptr);
        // struct list_head { struct list_head *next, *prev; }: every kernel has it, and btfparse
        // learns the size of a pointer from it.
        let list_head_ptr = b.ty("", 2, 0, false, b.next_id + 1);
        b.strukt(
            "list_head",
            16,
            &[("next", list_head_ptr, 0), ("prev", list_head_ptr, 64)],
        );
        b.finish()
    }

    #[test]
    fn synthetic_blob_reason_names() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        let reasons = drop_reasons(&btf).unwrap();
        assert_eq!(reasons.len(), 3);
        assert_eq!(reasons.full_name(3), Some("SKB_DROP_REASON_NO_SOCKET"));
        assert_eq!(reasons.short_name(3), "NO_SOCKET");
        assert_eq!(reasons.short_name(12), "NETFILTER_DROP");
        assert_eq!(reasons.short_name(1), "SKB_CONSUMED");
        assert_eq!(reasons.short_name(99), "UNKNOWN(99)");
        assert_eq!(reasons.value_of("SKB_CONSUMED"), Some(1));
    }

    #[test]
    fn synthetic_blob_offsets_through_anonymous_union() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        assert_eq!(
            btf.field("sk_buff", "dev").unwrap(),
            Field {
                offset: 16,
                size: 8
            }
        );
        assert_eq!(btf.field("sk_buff", "len").unwrap().offset, 112);
        assert!(btf.field("sk_buff", "nope").is_err());
    }

    #[test]
    fn synthetic_blob_tracepoints() {
        let btf = Btf::parse(&tiny_btf()).unwrap();
        let tps = skb_tracepoints(&btf).unwrap();
        assert_eq!(tps.len(), 1, "{tps:?}");
        let kfree = kfree_skb_tracepoint(&btf).unwrap();
        assert_eq!(
            kfree.slot,
            Slot {
                skb_arg: 0,
                location_arg: 1,
                reason_arg: 2,
                flags: SLOT_FREES_SKB
            }
        );
    }

    /// A module's split BTF (struct nf_conn using vmlinux's `unsigned int` and `sk_buff`), joined
    /// to its base: every id and name resolves as in the kernel.
    #[test]
    fn a_module_s_split_btf_joins_its_base() {
        let mut base = Builder::new();
        let u32_t = base.int("unsigned int", 4);
        base.strukt("sk_buff", 16, &[("len", u32_t, 0), ("_nfct", u32_t, 64)]);
        let list_head_ptr = base.ty("", 2, 0, false, base.next_id + 1);
        base.strukt(
            "list_head",
            16,
            &[("next", list_head_ptr, 0), ("prev", list_head_ptr, 64)],
        );
        let mut module = Builder::split_of(&base);
        let general = module.strukt("nf_conntrack", 4, &[("use", u32_t, 0)]);
        module.strukt(
            "nf_conn",
            16,
            &[("ct_general", general, 0), ("status", u32_t, 96)],
        );
        let (base, module) = (base.finish(), module.finish());
        // Alone, the module's blob names types it does not have.
        assert!(Btf::parse(&module)
            .and_then(|b| b.field("nf_conn", "status"))
            .is_err());
        let joined = Btf::parse(&join_split(&base, &module).unwrap()).unwrap();
        assert_eq!(
            joined.field("nf_conn", "status").unwrap(),
            Field {
                offset: 12,
                size: 4
            }
        );
        assert_eq!(joined.field("sk_buff", "_nfct").unwrap().offset, 8);
        assert!(join_split(&base, b"not BTF at all, no").is_err());
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"hello world, this is not BTF at all").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb]).is_err());
    }

    /// A parameter of a synthetic `btf_trace_kfree_skb` prototype.
    #[derive(Clone, Copy)]
    enum P {
        Skb,
        VoidPtr,
        Reason,
        Sock,
        U32,
    }

    /// A kernel whose only tracepoint is `kfree_skb(params…)` (after the leading `void *`),
    /// with a core reason enum, and (6.4+) the subsystem enum and the mask enumerator.
    fn kfree_skb_btf(params: &[P], with_subsys: bool) -> Vec<u8> {
        let mut b = Builder::new();
        let u32_t = b.int("unsigned int", 4);
        let mut reasons = vec![
            ("SKB_NOT_DROPPED_YET", 0u32),
            ("SKB_CONSUMED", 1),
            ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
            ("SKB_DROP_REASON_NO_SOCKET", 3),
        ];
        if with_subsys {
            reasons.push(("SKB_DROP_REASON_SUBSYS_MASK", 0xffff_0000));
        }
        let reason = b.ty("skb_drop_reason", 6, reasons.len() as u32, false, 4);
        for (n, v) in reasons {
            let off = b.s(n);
            b.word(off);
            b.word(v);
        }
        if with_subsys {
            let subsys = [
                ("SKB_DROP_REASON_SUBSYS_CORE", 0u32),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_UNUSABLE", 1),
                ("SKB_DROP_REASON_SUBSYS_MAC80211_MONITOR", 2),
                ("SKB_DROP_REASON_SUBSYS_OPENVSWITCH", 3),
            ];
            b.ty("skb_drop_reason_subsys", 6, subsys.len() as u32, false, 4);
            for (n, v) in subsys {
                let off = b.s(n);
                b.word(off);
                b.word(v);
            }
        }
        let skb = b.strukt("sk_buff", 8, &[("len", u32_t, 0)]);
        let skb_ptr = b.ty("", 2, 0, false, skb);
        let sock = b.ty("sock", 7, 0, false, 0); // a forward declaration is enough
        let sock_ptr = b.ty("", 2, 0, false, sock);
        let void_ptr = b.ty("", 2, 0, false, 0);
        let proto = b.ty("", 13, params.len() as u32 + 1, false, 0);
        b.word(0);
        b.word(void_ptr);
        for p in params {
            b.word(0);
            b.word(match p {
                P::Skb => skb_ptr,
                P::VoidPtr => void_ptr,
                P::Reason => reason,
                P::Sock => sock_ptr,
                P::U32 => u32_t,
            });
        }
        let proto_ptr = b.ty("", 2, 0, false, proto);
        b.ty("btf_trace_kfree_skb", 8, 0, false, proto_ptr);
        let list_head_ptr = b.ty("", 2, 0, false, b.next_id + 1);
        b.strukt(
            "list_head",
            16,
            &[("next", list_head_ptr, 0), ("prev", list_head_ptr, 64)],
        );
        b.finish()
    }

    fn kfree_slot(params: &[P], with_subsys: bool) -> Result<Slot> {
        let btf = Btf::parse(&kfree_skb_btf(params, with_subsys)).unwrap();
        kfree_skb_tracepoint(&btf).map(|tp| tp.slot)
    }

    #[test]
    fn kfree_skb_of_5_17_to_6_10_has_three_arguments() {
        let slot = kfree_slot(&[P::Skb, P::VoidPtr, P::Reason], false).unwrap();
        assert_eq!(
            (slot.skb_arg, slot.location_arg, slot.reason_arg),
            (0, 1, 2)
        );
        let btf = Btf::parse(&kfree_skb_btf(&[P::Skb, P::VoidPtr, P::Reason], false)).unwrap();
        assert_eq!(
            kfree_skb_prototype(&btf).unwrap(),
            "kfree_skb(struct sk_buff *, void *, enum skb_drop_reason)"
        );
    }

    #[test]
    fn kfree_skb_of_6_11_and_later_has_rx_sk() {
        let slot = kfree_slot(&[P::Skb, P::VoidPtr, P::Reason, P::Sock], true).unwrap();
        assert_eq!(
            (slot.skb_arg, slot.location_arg, slot.reason_arg),
            (0, 1, 2)
        );
        let btf = Btf::parse(&kfree_skb_btf(
            &[P::Skb, P::VoidPtr, P::Reason, P::Sock],
            true,
        ))
        .unwrap();
        assert_eq!(
            kfree_skb_prototype(&btf).unwrap(),
            "kfree_skb(struct sk_buff *, void *, enum skb_drop_reason, struct sock *)"
        );
    }

    /// The reason is found by its TYPE, not its position: a kernel that moved it (or added an
    /// integer before it) is still read right.
    #[test]
    fn the_reason_is_found_by_type_not_position() {
        let slot = kfree_slot(&[P::Skb, P::U32, P::VoidPtr, P::Sock, P::Reason], true).unwrap();
        assert_eq!(
            (slot.skb_arg, slot.location_arg, slot.reason_arg),
            (0, 2, 4)
        );
    }

    #[test]
    fn kernels_before_5_17_get_a_clear_message() {
        let err = kfree_slot(&[P::Skb, P::VoidPtr], false).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("5.17"), "{msg}");
        assert!(msg.contains("enum skb_drop_reason"), "{msg}");
    }

    #[test]
    fn subsystem_reasons_are_not_misnamed() {
        let btf = Btf::parse(&kfree_skb_btf(&[P::Skb, P::VoidPtr, P::Reason], true)).unwrap();
        let reasons = drop_reasons(&btf).unwrap();
        assert_eq!(reasons.name(3), "SKB_DROP_REASON_NO_SOCKET");
        assert_eq!(reasons.short_name(3), "NO_SOCKET");
        // mac80211's code 3 is not the core's NO_SOCKET.
        assert_eq!(reasons.subsystem_of(0x1_0003), Some((1, 3)));
        assert_eq!(reasons.short_name(0x1_0003), "subsys:MAC80211_UNUSABLE/3");
        assert_eq!(reasons.name(0x3_0002), "subsys:OPENVSWITCH/2");
        // A subsystem this kernel does not name: its number.
        assert_eq!(reasons.name(0x9_0001), "subsys:9/1");
        assert_eq!(reasons.name(99), "UNKNOWN(99)");
        assert_eq!(reasons.subsystem_of(3), None);
    }

    #[test]
    fn before_6_4_there_is_no_subsystem_enum() {
        let btf = Btf::parse(&kfree_skb_btf(&[P::Skb, P::VoidPtr, P::Reason], false)).unwrap();
        let reasons = drop_reasons(&btf).unwrap();
        assert_eq!(reasons.name(0x1_0003), "subsys:1/3");
        assert_eq!(reasons.short_name(2), "NOT_SPECIFIED");
    }

    /// Reads the running kernel's BTF when there is one (no root needed: the file is
    /// world-readable). Only properties that hold on every kernel since 5.17 are asserted: the
    /// numbers differ (NO_SOCKET is 2 on 6.1, 3 on 6.12), so does the prototype (rx_sk, 6.11).
    #[test]
    fn running_kernel_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("no {VMLINUX_BTF} on this machine: nothing to compare against");
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF).unwrap();
        let reasons = drop_reasons(&btf).unwrap();
        assert!(reasons.len() > 10);
        let no_socket = reasons.value_of("SKB_DROP_REASON_NO_SOCKET").unwrap();
        assert_eq!(reasons.short_name(no_socket), "NO_SOCKET");
        assert_eq!(reasons.subsystem_of(no_socket), None);
        let offsets = skb_offsets(&btf).unwrap();
        assert!(offsets.skb_head > 0 && offsets.dev_ifindex > 0 && offsets.net_inum > 0);
        let kfree = kfree_skb_tracepoint(&btf).unwrap();
        let params = btf.tracepoint_params("kfree_skb").unwrap();
        assert!(btf.is_ptr_to_struct(params[usize::from(kfree.slot.skb_arg)], "sk_buff"));
        assert!(btf.is_void_ptr(params[usize::from(kfree.slot.location_arg)]));
        assert!(btf.is_enum(
            params[usize::from(kfree.slot.reason_arg)],
            "skb_drop_reason"
        ));
        let proto = kfree_skb_prototype(&btf).unwrap();
        assert!(proto.contains("enum skb_drop_reason"), "{proto}");
        let tps = skb_tracepoints(&btf).unwrap();
        let names: Vec<&str> = tps.iter().map(|t| t.name.as_str()).collect();
        for want in [
            "net_dev_queue",
            "netif_receive_skb",
            "kfree_skb",
            "consume_skb",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
        assert!(tps.len() <= tracer_common::MAX_SLOTS);
    }
}
