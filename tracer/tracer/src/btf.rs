//! A small reader for BTF, the BPF Type Format, and the three questions the tracer asks it.
//!
//! The kernel describes its own types in `/sys/kernel/btf/vmlinux`: every struct with its members
//! and their offsets, every enum with its values, every function prototype. That is what makes a
//! tracer portable without compiling against kernel headers:
//! - [`Offsets`]: where `sk_buff.head`, `net_device.ifindex`, … are in THIS kernel
//!   ([`skb_offsets`]). aya has no CO-RE for Rust programs, so we pass them as load-time globals.
//! - [`drop_reasons`]: the names of `enum skb_drop_reason` — they change between kernel versions,
//!   so they are read here, never compiled in.
//! - [`skb_tracepoints`]: every tracepoint with a `struct sk_buff *` argument, found from the
//!   typedefs `btf_trace_<name>` that the kernel emits for each tracepoint.
//!
//! The format (see the kernel's Documentation/bpf/btf.rst): a header, then a list of types, then a
//! string table. Type ids count from 1 in list order (0 is `void`). Each type is 12 bytes —
//! `name_off`, `info` (kind in bits 24..28, `vlen` = number of members in bits 0..15, `kind_flag`
//! in bit 31) and `size` or `type` — followed by `vlen` kind-specific records.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context as _, Result};
use tracer_common::{Offsets, Slot, NO_ARG, SLOT_FREES_SKB};

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

/// The kinds of BTF types (`BTF_KIND_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Void = 0,
    Int = 1,
    Ptr = 2,
    Array = 3,
    Struct = 4,
    Union = 5,
    Enum = 6,
    Fwd = 7,
    Typedef = 8,
    Volatile = 9,
    Const = 10,
    Restrict = 11,
    Func = 12,
    FuncProto = 13,
    Var = 14,
    Datasec = 15,
    Float = 16,
    DeclTag = 17,
    TypeTag = 18,
    Enum64 = 19,
}

impl Kind {
    fn from_u32(k: u32) -> Result<Kind> {
        use Kind::*;
        Ok(match k {
            0 => Void,
            1 => Int,
            2 => Ptr,
            3 => Array,
            4 => Struct,
            5 => Union,
            6 => Enum,
            7 => Fwd,
            8 => Typedef,
            9 => Volatile,
            10 => Const,
            11 => Restrict,
            12 => Func,
            13 => FuncProto,
            14 => Var,
            15 => Datasec,
            16 => Float,
            17 => DeclTag,
            18 => TypeTag,
            19 => Enum64,
            other => bail!("unknown BTF kind {other} (a BTF newer than this reader?)"),
        })
    }
}

/// A struct/union member or a function parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub type_id: u32,
    /// Offset in BITS from the start of the struct (0 for function parameters).
    pub bit_offset: u32,
}

/// One BTF type, decoded just enough for the tracer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Type {
    pub kind: Kind,
    pub name: String,
    /// `size` for int/struct/union/enum, `type` (the referenced id) for ptr/typedef/const/….
    pub size_or_type: u32,
    /// Members (struct/union) or parameters (func_proto). Empty otherwise.
    pub members: Vec<Member>,
    /// Enumerators (enum/enum64).
    pub values: Vec<(String, i64)>,
    /// Element type and count (array).
    pub array: Option<(u32, u32)>,
}

/// A parsed BTF blob: types indexed by id, plus a name index.
#[derive(Debug)]
pub struct Btf {
    /// `types[id]`; `types[0]` is `void`.
    types: Vec<Type>,
    by_name: HashMap<(Kind, String), u32>,
}

/// A member's location inside a struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Byte offset from the start of the outer struct.
    pub offset: u32,
    /// Size of the member's type in bytes.
    pub size: u32,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16> {
    let s = b
        .get(at..at + 2)
        .ok_or_else(|| anyhow!("BTF truncated at byte {at}"))?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32> {
    let s = b
        .get(at..at + 4)
        .ok_or_else(|| anyhow!("BTF truncated at byte {at}"))?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

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
        let magic = u16_at(bytes, 0)?;
        if magic != BTF_MAGIC {
            bail!("not BTF: magic {magic:#06x}, expected {BTF_MAGIC:#06x} (big-endian BTF is not supported)");
        }
        let hdr_len = u32_at(bytes, 4)? as usize;
        let type_off = u32_at(bytes, 8)? as usize;
        let type_len = u32_at(bytes, 12)? as usize;
        let str_off = u32_at(bytes, 16)? as usize;
        let str_len = u32_at(bytes, 20)? as usize;
        let types_bytes = bytes
            .get(hdr_len + type_off..hdr_len + type_off + type_len)
            .ok_or_else(|| anyhow!("BTF type section out of bounds"))?;
        let strings = bytes
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| anyhow!("BTF string section out of bounds"))?;
        let string = |off: u32| -> Result<String> {
            let s = strings
                .get(off as usize..)
                .ok_or_else(|| anyhow!("BTF string offset {off} out of bounds"))?;
            let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
            Ok(String::from_utf8_lossy(&s[..end]).into_owned())
        };

        let void = Type {
            kind: Kind::Void,
            name: String::new(),
            size_or_type: 0,
            members: vec![],
            values: vec![],
            array: None,
        };
        let mut types = vec![void];
        let mut at = 0;
        while at < types_bytes.len() {
            let name_off = u32_at(types_bytes, at)?;
            let info = u32_at(types_bytes, at + 4)?;
            let size_or_type = u32_at(types_bytes, at + 8)?;
            at += 12;
            let kind = Kind::from_u32((info >> 24) & 0x1f)?;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut t = Type {
                kind,
                name: string(name_off)?,
                size_or_type,
                members: vec![],
                values: vec![],
                array: None,
            };
            match kind {
                Kind::Int | Kind::Var | Kind::DeclTag => at += 4,
                Kind::Array => {
                    t.array = Some((u32_at(types_bytes, at)?, u32_at(types_bytes, at + 8)?));
                    at += 12;
                }
                Kind::Struct | Kind::Union => {
                    for _ in 0..vlen {
                        let offset = u32_at(types_bytes, at + 8)?;
                        t.members.push(Member {
                            name: string(u32_at(types_bytes, at)?)?,
                            type_id: u32_at(types_bytes, at + 4)?,
                            // With kind_flag, the top 8 bits hold a bitfield's size.
                            bit_offset: if kind_flag {
                                offset & 0xff_ffff
                            } else {
                                offset
                            },
                        });
                        at += 12;
                    }
                }
                Kind::Enum => {
                    for _ in 0..vlen {
                        let name = string(u32_at(types_bytes, at)?)?;
                        let raw = u32_at(types_bytes, at + 4)?;
                        // kind_flag set = signed enum.
                        let v = if kind_flag {
                            raw as i32 as i64
                        } else {
                            raw as i64
                        };
                        t.values.push((name, v));
                        at += 8;
                    }
                }
                Kind::Enum64 => {
                    for _ in 0..vlen {
                        let name = string(u32_at(types_bytes, at)?)?;
                        let lo = u32_at(types_bytes, at + 4)? as u64;
                        let hi = u32_at(types_bytes, at + 8)? as u64;
                        t.values.push((name, ((hi << 32) | lo) as i64));
                        at += 12;
                    }
                }
                Kind::FuncProto => {
                    for _ in 0..vlen {
                        t.members.push(Member {
                            name: string(u32_at(types_bytes, at)?)?,
                            type_id: u32_at(types_bytes, at + 4)?,
                            bit_offset: 0,
                        });
                        at += 8;
                    }
                }
                Kind::Datasec => at += 12 * vlen,
                _ => {}
            }
            types.push(t);
        }
        let mut by_name = HashMap::new();
        for (id, t) in types.iter().enumerate() {
            if !t.name.is_empty() {
                by_name.entry((t.kind, t.name.clone())).or_insert(id as u32);
            }
        }
        Ok(Btf { types, by_name })
    }

    /// Number of type ids, including `void`.
    pub fn len(&self) -> usize {
        self.types.len()
    }

    /// Always false: `void` is always there.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The type with this id.
    pub fn get(&self, id: u32) -> Result<&Type> {
        self.types
            .get(id as usize)
            .ok_or_else(|| anyhow!("BTF type id {id} does not exist"))
    }

    /// Finds a named type of a given kind, e.g. `(Kind::Struct, "sk_buff")`.
    pub fn find(&self, kind: Kind, name: &str) -> Option<u32> {
        self.by_name.get(&(kind, name.to_string())).copied()
    }

    /// Follows typedef/const/volatile/restrict/type_tag to the type underneath.
    pub fn resolve(&self, mut id: u32) -> Result<u32> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                Kind::Typedef | Kind::Volatile | Kind::Const | Kind::Restrict | Kind::TypeTag => {
                    id = t.size_or_type
                }
                _ => return Ok(id),
            }
        }
        bail!("BTF type chain too long at id {id}")
    }

    /// Size in bytes of a type.
    pub fn size_of(&self, id: u32) -> Result<u32> {
        let id = self.resolve(id)?;
        let t = self.get(id)?;
        Ok(match t.kind {
            Kind::Int | Kind::Struct | Kind::Union | Kind::Enum | Kind::Enum64 | Kind::Float => {
                t.size_or_type
            }
            Kind::Ptr => 8,
            Kind::Array => {
                let (elem, n) = t.array.unwrap_or_default();
                self.size_of(elem)? * n
            }
            other => bail!("type {id} ({other:?}) has no size"),
        })
    }

    /// Offset of `path` (dot-separated, e.g. `"nd_net.net"` or `"ns.inum"`) inside the struct
    /// named `struct_name`. Members of anonymous structs and unions are found as if they were
    /// members of the outer struct, as in C (sk_buff's `dev` sits in an anonymous union).
    pub fn field(&self, struct_name: &str, path: &str) -> Result<Field> {
        let id = self
            .find(Kind::Struct, struct_name)
            .ok_or_else(|| anyhow!("struct {struct_name} not found in the kernel's BTF"))?;
        let mut ty = id;
        let mut offset_bits = 0u32;
        for part in path.split('.') {
            let (bits, member_ty) = self.member(ty, part).with_context(|| {
                format!("struct {struct_name} has no member {path} in this kernel")
            })?;
            offset_bits += bits;
            ty = member_ty;
        }
        if !offset_bits.is_multiple_of(8) {
            bail!("{struct_name}.{path} is a bitfield; the tracer reads whole bytes only");
        }
        Ok(Field {
            offset: offset_bits / 8,
            size: self.size_of(ty)?,
        })
    }

    /// Finds member `name` in struct/union `id` (through typedefs and anonymous members).
    /// Returns (bit offset, member type id).
    fn member(&self, id: u32, name: &str) -> Result<(u32, u32)> {
        let id = self.resolve(id)?;
        let t = self.get(id)?;
        if !matches!(t.kind, Kind::Struct | Kind::Union) {
            bail!("type {} is not a struct or union", t.name);
        }
        for m in &t.members {
            if m.name == name {
                return Ok((m.bit_offset, m.type_id));
            }
        }
        for m in t.members.iter().filter(|m| m.name.is_empty()) {
            if let Ok((bits, ty)) = self.member(m.type_id, name) {
                return Ok((m.bit_offset + bits, ty));
            }
        }
        bail!("no member {name}")
    }

    /// The enumerators of `enum name` (enum or enum64), in declaration order.
    pub fn enum_values(&self, name: &str) -> Result<&[(String, i64)]> {
        let id = self
            .find(Kind::Enum, name)
            .or_else(|| self.find(Kind::Enum64, name))
            .ok_or_else(|| anyhow!("enum {name} not found in the kernel's BTF"))?;
        Ok(&self.get(id)?.values)
    }

    /// The parameters of tracepoint `name` as the program sees them: the prototype of the typedef
    /// `btf_trace_<name>` WITHOUT its first parameter (a `void *` for the tracepoint's own use).
    pub fn tracepoint_params(&self, name: &str) -> Result<Vec<u32>> {
        let typedef = self
            .find(Kind::Typedef, &format!("btf_trace_{name}"))
            .ok_or_else(|| {
                anyhow!("tracepoint {name} not found (no typedef btf_trace_{name} in BTF)")
            })?;
        let ptr = self.resolve(typedef)?;
        let ptr = self.get(ptr)?;
        if ptr.kind != Kind::Ptr {
            bail!("btf_trace_{name} is not a function pointer");
        }
        let proto = self.get(self.resolve(ptr.size_or_type)?)?;
        if proto.kind != Kind::FuncProto || proto.members.is_empty() {
            bail!("btf_trace_{name} does not point to a function prototype");
        }
        Ok(proto.members[1..].iter().map(|m| m.type_id).collect())
    }

    /// True if `id` is a pointer to `struct <name>` (through const/typedef/…).
    pub fn is_ptr_to_struct(&self, id: u32, name: &str) -> bool {
        let Ok(id) = self.resolve(id) else {
            return false;
        };
        let Ok(t) = self.get(id) else { return false };
        if t.kind != Kind::Ptr {
            return false;
        }
        match self.resolve(t.size_or_type).and_then(|p| self.get(p)) {
            Ok(p) => matches!(p.kind, Kind::Struct | Kind::Fwd) && p.name == name,
            Err(_) => false,
        }
    }

    /// True if `id` is `void *`.
    fn is_void_ptr(&self, id: u32) -> bool {
        let Ok(id) = self.resolve(id) else {
            return false;
        };
        match self.get(id) {
            Ok(t) => t.kind == Kind::Ptr && self.resolve(t.size_or_type).ok() == Some(0),
            Err(_) => false,
        }
    }

    /// True if `id` is `enum <name>`.
    fn is_enum(&self, id: u32, name: &str) -> bool {
        match self.resolve(id).and_then(|id| self.get(id)) {
            Ok(t) => matches!(t.kind, Kind::Enum | Kind::Enum64) && t.name == name,
            Err(_) => false,
        }
    }

    /// Every typedef `btf_trace_*`, i.e. every tracepoint of this kernel, by name.
    pub fn tracepoint_names(&self) -> impl Iterator<Item = &str> {
        self.types
            .iter()
            .filter(|t| t.kind == Kind::Typedef)
            .filter_map(|t| t.name.strip_prefix("btf_trace_"))
    }
}

/// Computes every offset the eBPF program needs, and checks the field sizes it assumes.
pub fn skb_offsets(btf: &Btf) -> Result<Offsets> {
    let f = |s: &str, path: &str, size: u32| -> Result<u32> {
        let field = btf.field(s, path)?;
        if field.size != size {
            bail!(
                "{s}.{path} is {} bytes in this kernel, the tracer expects {size}",
                field.size
            );
        }
        Ok(field.offset)
    };
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
    })
}

/// The drop reasons of this kernel: value → full name (`SKB_DROP_REASON_NO_SOCKET`).
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, String>,
}

impl DropReasons {
    /// Builds the table from (value, name) pairs (e.g. a test's own).
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u32, &'a str)>) -> DropReasons {
        DropReasons {
            names: pairs.into_iter().map(|(v, n)| (v, n.to_string())).collect(),
        }
    }

    /// The full enumerator name, e.g. `SKB_DROP_REASON_NO_SOCKET`, or `None` if unknown.
    pub fn full_name(&self, value: u32) -> Option<&str> {
        self.names.get(&value).map(String::as_str)
    }

    /// The name for people: without the `SKB_DROP_REASON_` prefix (`NO_SOCKET`). Unknown values
    /// print as their number.
    pub fn short_name(&self, value: u32) -> String {
        match self.full_name(value) {
            Some(n) => n.strip_prefix("SKB_DROP_REASON_").unwrap_or(n).to_string(),
            None => format!("UNKNOWN({value})"),
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

/// Reads `enum skb_drop_reason` (kernel 5.17+) from BTF.
pub fn drop_reasons(btf: &Btf) -> Result<DropReasons> {
    let values = btf.enum_values("skb_drop_reason").context(
        "this kernel has no `enum skb_drop_reason` (drop reasons appeared in Linux 5.17)",
    )?;
    Ok(DropReasons::from_pairs(
        values.iter().map(|(n, v)| (*v as u32, n.as_str())),
    ))
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
        bail!("tracepoint kfree_skb has no drop reason in this kernel (drop reasons appeared in Linux 5.17)");
    }
    Ok(tp)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a BTF blob by hand: this is the whole format, nothing hidden.
    #[derive(Default)]
    struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        fn new() -> Self {
            Builder {
                strings: vec![0],
                next_id: 1,
                ..Default::default()
            }
        }
        fn s(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
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

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"hello world, this is not BTF at all").is_err());
        assert!(Btf::parse(&[0x9f, 0xeb]).is_err());
    }

    /// Reads the running kernel's BTF when there is one (no root needed: the file is world-readable).
    #[test]
    fn running_kernel_btf() {
        if !Path::new(VMLINUX_BTF).exists() {
            eprintln!("no {VMLINUX_BTF} on this machine: nothing to compare against");
            return;
        }
        let btf = Btf::from_file(VMLINUX_BTF).unwrap();
        let reasons = drop_reasons(&btf).unwrap();
        assert!(reasons.len() > 10);
        assert_eq!(reasons.value_of("SKB_DROP_REASON_NO_SOCKET"), Some(3));
        assert_eq!(reasons.short_name(3), "NO_SOCKET");
        let offsets = skb_offsets(&btf).unwrap();
        assert!(offsets.skb_head > 0 && offsets.dev_ifindex > 0 && offsets.net_inum > 0);
        let kfree = kfree_skb_tracepoint(&btf).unwrap();
        assert_eq!(kfree.slot.skb_arg, 0);
        assert_eq!(kfree.slot.location_arg, 1);
        assert_eq!(kfree.slot.reason_arg, 2);
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
