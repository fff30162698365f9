//! The course's eBPF packet-drop and skb-path tracer, as a library.
//!
//! `tracer drops` reports every skb the kernel frees with a drop reason; `tracer path` follows
//! skbs through every tracepoint that carries one (like pwru). Both run `tp_btf` programs: on the
//! course machine kprobes are compiled out and fentry is refused, but BTF-typed tracepoints work.
//!
//! The modules, in the order data flows through them:
//! - [`btf`] — reads the running kernel's BTF: struct offsets, drop-reason names, the tracepoints
//!   that carry an skb.
//! - [`filter`] — parses `udp and port 4000` into the struct the kernel side evaluates.
//! - [`collection`] — loads and attaches the eBPF programs, reads the ring buffer.
//! - [`kallsyms`], [`nodes`] — name caches: kernel addresses → `symbol+0xoff`, netns inode → lab
//!   node name.
//! - [`conntrack`] — the skb's conntrack entry at every hop (state, tuples, NAT status bits).
//! - [`output`] — decodes events into [`output::Record`]s and formats them (columns or JSON).
//! - [`explain`] — `--explain`: matches a NO_SOCKET drop against the namespace's conntrack table.
//! - [`pcap`] — `path --pcap FILE`: the hops as a pcapng capture, one packet per hop.
//! - [`nftrace`] — `path --verdicts`: nftables rule tracing in named namespaces, verdicts joined
//!   to hops.
//! - [`run`] — the main loop used by the binary; [`bench`] — the benchmark;
//!   [`capabilities`] — `tracer kernel`, what this kernel offers (for `cargo xtask doctor`).
//!
//! A course exercise can reuse the pieces directly:
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use tracer::{collection::{KernelInfo, Tracer}, btf, filter};
//! let kernel = KernelInfo::load()?;                        // BTF: offsets + reason names
//! let kfree = btf::kfree_skb_tracepoint(&kernel.btf)?;    // where the reason argument is
//! let filter = filter::parse("udp and port 4000")?;       // checked before loading
//! let mut tracer = Tracer::load(&kernel, &[kfree], filter, false)?;
//! tracer.poll(std::time::Duration::from_secs(1), |ev| {
//!     println!("dropped: reason {}", kernel.reasons.short_name(ev.reason));
//! })?;
//! # Ok(()) }
//! ```
pub mod bench;
pub mod btf;
pub mod capabilities;
pub mod collection;
pub mod conntrack;
pub mod explain;
pub mod filter;
pub mod kallsyms;
pub mod nftrace;
pub mod nodes;
pub mod output;
pub mod pcap;
pub mod run;

pub use tracer_common::{Event, Filter, Offsets};
