//! Turning a kernel address into `symbol+0xoffset`, like pwru's output.
//!
//! `/proc/kallsyms` lists every kernel symbol as `ADDRESS TYPE NAME [MODULE]`, e.g.
//! `ffffffff81c0a2b0 T __udp4_lib_rcv`. Sorted by address, the symbol that contains an address is
//! the last one that starts at or before it: a binary search. Only root sees real addresses (for
//! everyone else they read as zeros: `kernel.kptr_restrict`).

use std::path::Path;

use anyhow::{Context as _, Result};

/// A sorted table of kernel text symbols.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    /// (start address, name), sorted by address.
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`.
    pub fn load() -> Result<Kallsyms> {
        Kallsyms::from_file("/proc/kallsyms")
    }

    /// Reads a file in the `/proc/kallsyms` format.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Kallsyms> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        Ok(Kallsyms::parse(&text))
    }

    /// Parses `/proc/kallsyms` text. Keeps code symbols only (types `t`/`T`, and `w`/`W` weak
    /// ones): a freeing location is always in code. Lines it does not understand are skipped.
    pub fn parse(text: &str) -> Kallsyms {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W"))
                    .then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(a, _)| *a);
        Kallsyms { symbols }
    }

    /// Number of symbols (0 when not root: the addresses are hidden).
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True when there is no symbol (e.g. read without root).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol containing `addr` and the offset into it.
    pub fn lookup(&self, addr: u64) -> Option<(&str, u64)> {
        // Index of the first symbol that starts AFTER addr; the one before contains addr.
        let i = self.symbols.partition_point(|(start, _)| *start <= addr);
        let (start, name) = self.symbols.get(i.checked_sub(1)?)?;
        Some((name, addr - start))
    }

    /// `symbol+0xoff`, or the bare address in hex when unknown, or "" for 0.
    pub fn format(&self, addr: u64) -> String {
        if addr == 0 {
            return String::new();
        }
        match self.lookup(addr) {
            Some((name, off)) => format!("{name}+{off:#x}"),
            None => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
ffffffff81000000 T _stext
ffffffff81c0a2b0 T __udp4_lib_rcv
ffffffff81c0a100 t udp_queue_rcv_skb
ffffffff81c0b000 D some_data
0000000000000000 T hidden
ffffffffc0001000 t nft_do_chain\t[nf_tables]
this line is garbage
";

    #[test]
    fn finds_containing_symbol() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.len(), 4, "data and zero-address symbols are skipped");
        assert_eq!(k.lookup(0xffffffff81c0a2b0), Some(("__udp4_lib_rcv", 0)));
        assert_eq!(
            k.lookup(0xffffffff81c0a3f1),
            Some(("__udp4_lib_rcv", 0x141))
        );
        assert_eq!(
            k.lookup(0xffffffff81c0a1ff),
            Some(("udp_queue_rcv_skb", 0xff))
        );
        assert_eq!(k.format(0xffffffff81c0a3f1), "__udp4_lib_rcv+0x141");
        assert_eq!(k.format(0xffffffffc0001010), "nft_do_chain+0x10");
    }

    #[test]
    fn before_first_symbol_and_zero() {
        let k = Kallsyms::parse(SAMPLE);
        assert_eq!(k.lookup(0x1000), None);
        assert_eq!(k.format(0x1000), "0x1000");
        assert_eq!(k.format(0), "");
        assert!(Kallsyms::parse("").is_empty());
    }
}
