//! `--verdicts`: which netfilter rule decided a packet's fate, without kprobes.
//!
//! nftables can trace packets itself: a rule `meta nftrace set 1` marks a packet, and from then
//! on every rule that matches it, every chain it leaves and every policy applied to it is
//! reported as a netlink message to whoever listens to the `NFNLGRP_NFTRACE` group — this is
//! `nft monitor trace`. No kernel probe is involved, so it works where kprobes are compiled
//! out, and iptables-nft's rules (Debian's `iptables`, Docker's NAT rules) are nf_tables rules
//! too, so they are traced the same way.
//!
//! For each namespace the user names (never another one: the root namespace only when named
//! explicitly), a thread enters the namespace and, on one `NETLINK_NETFILTER` socket:
//! 1. creates a table of its own, `inet tracer-<pid>`, with base chains on every hook at a
//!    priority before everything else (−1000, before raw −300 and conntrack −200), each with
//!    the single rule `meta nftrace set 1`;
//! 2. creates it with the `owner` flag (Linux ≥ 5.12): the table belongs to the socket and the
//!    kernel deletes it when the socket closes — when the tracer exits, however it exits,
//!    SIGKILL included. On an older kernel the table is deleted on every exit path the tracer
//!    controls, and the tracer says that SIGKILL would leave it behind;
//! 3. reads trace messages ([`trace::decode`]) and names each rule ([`rules`]).
//!
//! [`join::Joiner`] then puts each verdict under the hop (a tracepoint event) it belongs to.

pub mod join;
pub mod netlink;
pub mod rules;
pub mod trace;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;

use netlink::{nft_type, Message, Socket, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use rules::RuleKey;

/// One trace event: a rule that matched, a chain that ended, or a policy applied.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// When the tracer received it (Unix ns): a little after the kernel sent it.
    pub time_ns: u64,
    /// The namespace it came from (inode).
    pub netns: u32,
    /// The kernel's pseudo-id of the traced packet (the same for each event of one skb).
    pub trace_id: u32,
    /// `ip`, `ip6`, `inet`, …: the table's family.
    pub family: String,
    pub table: String,
    pub chain: String,
    /// `rule`, `return` (the end of a chain was reached) or `policy`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule_handle: Option<u64>,
    /// The rule as nft prints it, when it could be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// `accept`, `drop`, `return`, `jump DOCKER`, `continue`, …
    pub verdict: String,
    /// The packet as the rule saw it.
    pub proto: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub iif: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oif: Option<u32>,
    /// The netfilter hook (`prerouting`, `input`, …): a base chain's own, or for a chain
    /// jumped to (DOCKER), that of the base chain the packet was in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook: Option<String>,
}

impl Verdict {
    /// The kernel's event for a chain that ran out of rules (evaluation goes on after it):
    /// no rule decided anything.
    pub fn is_end_of_rules(&self) -> bool {
        self.kind == "rule" && self.rule_handle.is_none() && self.verdict == "continue"
    }

    /// `ip nat DOCKER rule 4: iifname "br-dind" counter return → return`, one line.
    pub fn line(&self) -> String {
        let place = format!("{} {} {}", self.family, self.table, self.chain);
        match self.kind.as_str() {
            "policy" => format!("{place}: policy {}", self.verdict),
            "return" => format!("{place}: end of chain, {}", self.verdict),
            _ => {
                let handle = self
                    .rule_handle
                    .map(|h| format!("rule handle {h}"))
                    .unwrap_or_else(|| "rule".into());
                match (&self.rule, self.rule_handle) {
                    (Some(text), _) => format!("{place}: {text} ({handle}) → {}", self.verdict),
                    // The kernel names no rule when a chain ran out of rules (after a
                    // jumped-to chain returned, say) and evaluation goes on.
                    (None, None) => format!("{place}: no rule left → {}", self.verdict),
                    (None, Some(_)) => format!("{place}: {handle} → {}", self.verdict),
                }
            }
        }
    }
}

/// A namespace to trace: its inode, a path that opens it, and what the user called it.
#[derive(Clone, Debug)]
pub struct Target {
    pub inode: u32,
    pub path: String,
    pub label: String,
}

/// The running tracers, one thread per namespace. Dropping it stops them and removes their
/// tables.
pub struct NfTrace {
    pub verdicts: mpsc::Receiver<Verdict>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    /// Notes for the user (a kernel without the owner flag, legacy iptables rules, …).
    pub notes: Vec<String>,
    /// Trace messages the kernel could not deliver (our socket's buffer was full).
    lost: Arc<AtomicU64>,
}

/// The tracer's own table in every namespace: one per tracer process.
pub fn table_name() -> String {
    format!("tracer-{}", std::process::id())
}

/// The hooks of an `inet` table, by number (`NF_INET_*`) and chain name.
const HOOKS: [(u32, &str); 5] = [
    (0, "prerouting"),
    (1, "input"),
    (2, "forward"),
    (3, "output"),
    (4, "postrouting"),
];

/// Before every standard priority (raw −300, conntrack −200, mangle −150, dstnat −100, …).
pub const PRIORITY: i32 = -1000;

const NFPROTO_INET: u8 = 1;
/// Set to `1`, the tracer makes its table without the owner flag, as it must before Linux
/// 5.12 (for the tests of that fallback on newer kernels).
pub const NO_OWNER_FLAG: &str = "TRACER_NFT_NO_OWNER_FLAG";
const NFT_TABLE_F_OWNER: u32 = 0x2;

impl NfTrace {
    /// Starts tracing in each target namespace and returns once every table is in place
    /// (or fails, and removes what was made).
    pub fn start(targets: &[Target]) -> Result<NfTrace> {
        let (sender, verdicts) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let mut nf = NfTrace {
            verdicts,
            stop: stop.clone(),
            threads: Vec::new(),
            notes: Vec::new(),
            lost: Arc::new(AtomicU64::new(0)),
        };
        for target in targets {
            let (ready_tx, ready_rx) = mpsc::channel();
            let namespace = netlab::Netns::open(&target.path)
                .with_context(|| format!("cannot open the namespace of {}", target.label))?;
            let label = target.label.clone();
            let (sender, stop, target) = (sender.clone(), stop.clone(), target.clone());
            let lost = nf.lost.clone();
            let thread = std::thread::Builder::new()
                .name(format!("nftrace-{}", target.inode))
                .spawn(move || {
                    if let Err(e) = namespace.enter_current_thread() {
                        let _ = ready_tx.send(Err(anyhow::anyhow!(
                            "cannot enter the namespace of {}: {e}",
                            target.label
                        )));
                        return;
                    }
                    drop(namespace);
                    trace_here(&target, &sender, &stop, &lost, ready_tx);
                })
                .context("cannot start a thread")?;
            nf.threads.push(thread);
            match ready_rx.recv() {
                Ok(Ok(notes)) => nf.notes.extend(notes),
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("the nftables tracer of {label} ended early"),
            }
        }
        Ok(nf)
    }
}

impl NfTrace {
    /// How many times the kernel could not deliver trace messages because the tracer's
    /// socket buffer was full (each time, one or more events were lost).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl Drop for NfTrace {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Creates the tracer's table in the calling thread's namespace.
fn create_table(socket: &mut Socket, owner: bool) -> std::io::Result<()> {
    let table = table_name();
    let create = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    let mut changes = Vec::new();
    let mut t = Message::new(nft_type(0), create, 0, NFPROTO_INET, 0); // NFT_MSG_NEWTABLE
    t.string(1, &table); // NFTA_TABLE_NAME
    t.be32(2, if owner { NFT_TABLE_F_OWNER } else { 0 }); // NFTA_TABLE_FLAGS
    changes.push(t);
    for (hook, name) in HOOKS {
        let mut c = Message::new(nft_type(3), create, 0, NFPROTO_INET, 0); // NFT_MSG_NEWCHAIN
        c.string(1, &table).string(3, name); // NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME
        let h = c.nest(4); // NFTA_CHAIN_HOOK
        c.be32(1, hook).be32(2, PRIORITY as u32); // NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY
        c.end_nest(h);
        c.string(7, "filter"); // NFTA_CHAIN_TYPE
        changes.push(c);

        // NFT_MSG_NEWRULE: [ immediate reg 1 0x00000001 ] [ meta set nftrace with reg 1 ]
        let mut r = Message::new(nft_type(6), create | NLM_F_APPEND, 0, NFPROTO_INET, 0);
        r.string(1, &table).string(2, name); // NFTA_RULE_TABLE, NFTA_RULE_CHAIN
        let list = r.nest(4); // NFTA_RULE_EXPRESSIONS
        let e = r.nest(1); // NFTA_LIST_ELEM
        r.string(1, "immediate"); // NFTA_EXPR_NAME
        let d = r.nest(2); // NFTA_EXPR_DATA
        r.be32(1, 1); // NFTA_IMMEDIATE_DREG: NFT_REG_1
        let v = r.nest(2); // NFTA_IMMEDIATE_DATA
        r.attr(1, &1u32.to_ne_bytes()); // NFTA_DATA_VALUE (host order, as nft sends it)
        r.end_nest(v);
        r.end_nest(d);
        r.end_nest(e);
        let e = r.nest(1);
        r.string(1, "meta");
        let d = r.nest(2);
        r.be32(2, 12); // NFTA_META_KEY: NFT_META_NFTRACE
        r.be32(3, 1); // NFTA_META_SREG: NFT_REG_1
        r.end_nest(d);
        r.end_nest(e);
        r.end_nest(list);
        changes.push(r);
    }
    socket.transact(changes, &format!("creating table inet {table}"))
}

/// Deletes the tracer's table in the calling thread's namespace.
fn delete_table(socket: &mut Socket) -> std::io::Result<()> {
    let mut t = Message::new(
        nft_type(2), // NFT_MSG_DELTABLE
        NLM_F_REQUEST | NLM_F_ACK,
        0,
        NFPROTO_INET,
        0,
    );
    t.string(1, &table_name());
    socket.transact(vec![t], "deleting the tracer's table")
}

/// Tables made by legacy iptables (`iptables-legacy`, the x_tables of `ip_tables.ko`): their
/// rules are not nf_tables rules, and nftables cannot trace them.
fn legacy_iptables_tables() -> Vec<String> {
    let mut found = Vec::new();
    for file in ["ip_tables_names", "ip6_tables_names"] {
        // /proc/thread-self: this thread's namespace, not the process's.
        if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
            found.extend(text.lines().map(|l| format!("{file}: {l}")));
        }
    }
    found
}

/// The body of one namespace's thread: set up, report readiness, read events until stopped.
fn trace_here(
    target: &Target,
    sender: &mpsc::Sender<Verdict>,
    stop: &AtomicBool,
    lost: &AtomicU64,
    ready: mpsc::Sender<Result<Vec<String>>>,
) {
    let mut notes = Vec::new();
    let mut socket = match Socket::subscribe_trace() {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!(
                "cannot open a netfilter netlink socket in {}: {e}",
                target.label
            )));
            return;
        }
    };
    // Behave as on a kernel without the owner flag: the fallback, testable on new kernels.
    let try_owner = std::env::var_os(NO_OWNER_FLAG).is_none_or(|v| v != "1");
    let first = if try_owner {
        create_table(&mut socket, true)
    } else {
        Err(std::io::Error::from_raw_os_error(nix::libc::EOPNOTSUPP))
    };
    let owner = match first {
        Ok(()) => true,
        // Before Linux 5.12 an unknown table flag is refused with EOPNOTSUPP.
        Err(e) if e.raw_os_error() == Some(nix::libc::EOPNOTSUPP) => {
            if let Err(e) = create_table(&mut socket, false) {
                let _ = ready.send(Err(anyhow::anyhow!(
                    "in {}: creating table inet {}: {e}",
                    target.label,
                    table_name()
                )));
                return;
            }
            notes.push(format!(
                "{}: this kernel has no nftables `owner` flag (Linux < 5.12): table inet {} is \
                 deleted when the tracer exits, but a SIGKILL would leave it behind \
                 (`nft delete table inet {}` in that namespace removes it)",
                target.label,
                table_name(),
                table_name()
            ));
            false
        }
        Err(e) => {
            let hint = if e.raw_os_error() == Some(nix::libc::ENOENT)
                || e.raw_os_error() == Some(nix::libc::EPROTONOSUPPORT)
            {
                " (is nf_tables in this kernel? `modprobe nf_tables`)"
            } else {
                ""
            };
            let _ = ready.send(Err(anyhow::anyhow!(
                "in {}: creating table inet {}: {e}{hint}",
                target.label,
                table_name()
            )));
            return;
        }
    };
    // Tables besides ours: without any, no rule can decide anything here.
    let others = socket
        .dump(nft_type(1), 0) // NFT_MSG_GETTABLE, every family
        .map(|tables| {
            tables
                .iter()
                .filter_map(|b| {
                    netlink::string(netlink::find(&netlink::attributes(b.get(4..)?), 1))
                })
                .filter(|name| *name != table_name())
                .count()
        })
        .unwrap_or(1);
    if others == 0 {
        notes.push(format!(
            "{}: no nftables table but the tracer's own: no rule there can decide anything              (packets are accepted by default), so no verdict will be shown",
            target.label
        ));
    }
    let legacy = legacy_iptables_tables();
    if !legacy.is_empty() {
        notes.push(format!(
            "{}: legacy iptables tables exist ({}): their rules are x_tables, not nftables \
             rules, and cannot be traced — only nftables and iptables-nft rules show verdicts",
            target.label,
            legacy.join(", ")
        ));
    }
    let _ = ready.send(Ok(notes));

    let mut names: HashMap<RuleKey, String> = HashMap::new();
    let mut chains: HashMap<rules::ChainKey, Option<String>> = HashMap::new();
    // The hook each traced packet is in, by trace id (for chains jumped to).
    let mut hooks: HashMap<u32, String> = HashMap::new();
    type Headers = (
        u8,
        Option<IpAddr>,
        Option<IpAddr>,
        Option<u16>,
        Option<u16>,
        Option<u32>,
        Option<u32>,
    );
    let mut packets: HashMap<u32, Headers> = HashMap::new();
    let mut buffer = vec![0u8; 1 << 16];
    let table = table_name();
    while !stop.load(Ordering::SeqCst) {
        let n = match socket.receive(&mut buffer, Duration::from_millis(100)) {
            Ok(Some(n)) => n,
            Ok(None) => continue,
            // ENOBUFS: the kernel dropped events because we read too slowly. Count, go on.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOBUFS) => {
                lost.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(_) => continue,
        };
        let now = crate::output::Clock::now().unix_ns(mono_now());
        for m in netlink::messages(&buffer[..n]) {
            if m.kind != nft_type(trace::NFT_MSG_TRACE) {
                continue;
            }
            let Some(mut v) = trace::decode(m.body) else {
                continue;
            };
            v.time_ns = now;
            v.netns = target.inode;
            // The kernel sends the packet's headers only with the first event of each base
            // chain it passes; the events after it carry the same trace id.
            if v.src.is_some() {
                if packets.len() > 4096 {
                    packets.clear();
                }
                let headers = (v.proto, v.src, v.dst, v.sport, v.dport, v.iif, v.oif);
                packets.insert(v.trace_id, headers);
            } else if let Some(&headers) = packets.get(&v.trace_id) {
                (v.proto, v.src, v.dst, v.sport, v.dport, v.iif, v.oif) = headers;
            }
            let chain_key = (
                trace::family_number(&v.family),
                v.table.clone(),
                v.chain.clone(),
            );
            if !chains.contains_key(&chain_key) {
                chains = read_chains().unwrap_or(chains);
                chains.entry(chain_key.clone()).or_default();
            }
            match chains.get(&chain_key).cloned().flatten() {
                Some(hook) => {
                    if hooks.len() > 4096 {
                        hooks.clear();
                    }
                    hooks.insert(v.trace_id, hook.clone());
                    v.hook = Some(hook);
                }
                None => v.hook = hooks.get(&v.trace_id).cloned(),
            }
            if v.table == table && v.family == "inet" {
                continue; // our own `meta nftrace set 1`
            }
            if let Some(handle) = v.rule_handle {
                let key = RuleKey {
                    family: trace::family_number(&v.family),
                    table: v.table.clone(),
                    chain: v.chain.clone(),
                    handle,
                };
                if !names.contains_key(&key) {
                    names = read_rules().unwrap_or(names);
                    // Not there even now (deleted meanwhile): do not dump again for it.
                    names.entry(key.clone()).or_default();
                }
                v.rule = names.get(&key).filter(|text| !text.is_empty()).cloned();
            }
            if sender.send(v).is_err() {
                break;
            }
        }
    }
    if !owner {
        if let Err(e) = delete_table(&mut socket) {
            eprintln!(
                "tracer: could not delete table inet {table} in {}: {e}; remove it with \
                 `nft delete table inet {table}` there",
                target.label
            );
        }
    }
    // With the owner flag, closing the socket (here) deletes the table.
}

fn mono_now() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).expect("clock_gettime");
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

/// Every chain of the namespace: its hook's name for a base chain, `None` for the others
/// (`NFT_MSG_GETCHAIN` dump, all families).
fn read_chains() -> std::io::Result<HashMap<rules::ChainKey, Option<String>>> {
    let mut socket = Socket::new()?;
    let bodies = socket.dump(nft_type(4), 0)?;
    Ok(bodies
        .iter()
        .filter_map(|b| rules::parse_chain(b))
        .collect())
}

/// Every rule of the namespace, by key, as text (`NFT_MSG_GETRULE` dump, all families).
fn read_rules() -> std::io::Result<HashMap<RuleKey, String>> {
    let mut socket = Socket::new()?;
    let bodies = socket.dump(nft_type(7), 0)?;
    Ok(bodies.iter().filter_map(|b| rules::parse_rule(b)).collect())
}

/// The namespaces `--verdicts` names: each a lab node name (`host`, `dind2`) or a namespace
/// inode. The machine's root namespace (and the tracer's own) is traced only when named by
/// its inode: a lab node that turns out to be one of them is refused.
pub fn resolve(names: &[String], nodes: &crate::nodes::NodeNames) -> Result<Vec<Target>> {
    use std::os::unix::fs::MetadataExt as _;
    // The root namespace is init's; where /proc/1 cannot be read (a container), the
    // tracer's own namespace stands for it.
    let protected: Vec<u64> = ["/proc/1/ns/net", "/proc/self/ns/net"]
        .iter()
        .filter_map(|p| std::fs::metadata(p).map(|m| m.ino()).ok())
        .collect();
    let mut targets: Vec<Target> = Vec::new();
    for name in names {
        let (inode, by_inode) = match name.parse::<u32>() {
            Ok(inode) => (inode, true),
            Err(_) => match nodes.inode_of(name) {
                Some(inode) => (inode, false),
                None => bail!(
                    "--verdicts {name}: no running lab has a node {name:?} (known: {}); give a \
                     node name or a namespace inode (`ls -lL /proc/PID/ns/net`)",
                    nodes.known_names().join(", ")
                ),
            },
        };
        if !by_inode && protected.contains(&u64::from(inode)) {
            bail!(
                "--verdicts {name}: that node is the machine's root namespace (or the tracer's \
                 own); the tracer adds nftables rules there only when you name it by its inode \
                 ({inode})"
            );
        }
        if targets.iter().any(|t| t.inode == inode) {
            continue;
        }
        let path = crate::explain::find_namespace(u64::from(inode))
            .with_context(|| format!("--verdicts {name}"))?;
        let label = if by_inode {
            format!("netns {inode}")
        } else {
            format!("{name} (netns {inode})")
        };
        targets.push(Target { inode, path, label });
    }
    Ok(targets)
}
