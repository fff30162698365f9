//! The machine's root network namespace, before and after: proof that the course
//! leaves no trace.
//!
//! ARCHITECTURE.md promises that no check adds an address, route, link or rule in the
//! root network namespace, and that nothing outlives the process that made it. `cargo
//! xtask test` captures the state below before and after everything it runs; any
//! difference is a failure, shown as a diff.
//!
//! The state is read from the **kernel**, not from tools: links, addresses, routes and
//! routing rules over rtnetlink, nftables' tables, chains and rules over nfnetlink (the
//! same dump requests `ip` and `nft` send, see [`netlink`]), the named network
//! namespaces from `/run/netns`, the legacy iptables tables from `/proc/net`. A
//! snapshot therefore does not change when a tool gets installed between the two
//! captures (as `cargo xtask setup` does on a fresh machine, right after the first one).
//!
//! What changes by itself is left out: traffic counters, address lifetimes, routes
//! the kernel caches.

mod netlink;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use nix::errno::Errno;

use netlink::{address, attribute, attributes, text, u32_be, u32_ne, u64_be, Family};

/// Named sections of text, e.g. "links" → one line per network device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub sections: BTreeMap<String, String>,
}

/// Capture the root network namespace's state as this process sees it. Spawns no
/// program: everything comes from the kernel (netlink, `/proc`, `/run/netns`).
pub fn capture() -> Snapshot {
    let mut sections = BTreeMap::new();
    let mut add = |name: &str, lines: Result<Vec<String>, String>| {
        let text = match lines {
            Ok(lines) => lines.join("\n"),
            Err(why) => format!("({why})"),
        };
        sections.insert(name.to_string(), text);
    };
    add("links (rtnetlink)", links());
    add("addresses (rtnetlink)", addresses());
    add("routes, every table (rtnetlink)", routes());
    add("routing rules (rtnetlink)", rules());
    add("nftables: tables, chains, rules (nfnetlink)", nftables());
    add(
        "legacy iptables tables (/proc/net/*_tables_names)",
        Ok(legacy_tables()),
    );
    add("named network namespaces (/run/netns)", Ok(named_netns()));
    sections.insert("processes".to_string(), course_processes().join("\n"));
    Snapshot { sections }
}

/// One rtnetlink answer: its fixed header (e.g. `struct rtmsg`), and its attributes' bytes.
type HeaderAndAttributes = (Vec<u8>, Vec<u8>);

/// Messages of an rtnetlink dump for every address family, each with its fixed header
/// (`header_len` bytes) and its attributes.
fn rtnetlink_dump(kind: u16, header_len: usize) -> Result<Vec<HeaderAndAttributes>, String> {
    let messages = netlink::dump(Family::Route, kind, &vec![0; header_len])
        .map_err(|e| format!("rtnetlink dump failed: {e}"))?;
    Ok(messages
        .into_iter()
        .filter(|m| m.payload.len() >= header_len)
        .map(|m| {
            let (head, attrs) = m.payload.split_at(header_len);
            (head.to_vec(), attrs.to_vec())
        })
        .collect())
}

/// Interface index → name, to print `dev eth0` rather than `dev 2`.
fn link_names() -> BTreeMap<u32, String> {
    rtnetlink_dump(netlink::RTM_GETLINK, 16)
        .unwrap_or_default()
        .iter()
        .filter_map(|(head, attrs)| {
            let index = u32_ne(&head[4..8])?;
            Some((index, attribute(&attributes(attrs), 3).map(text)?))
        })
        .collect()
}

fn name_of(names: &BTreeMap<u32, String>, index: u32) -> String {
    names
        .get(&index)
        .cloned()
        .unwrap_or_else(|| format!("if{index}"))
}

/// `eth0 (veth) up master br0 ether 02:42:…` — `struct ifinfomsg` (16 bytes) and its
/// attributes IFLA_ADDRESS (1), IFLA_IFNAME (3), IFLA_MASTER (10), IFLA_OPERSTATE (16),
/// IFLA_LINKINFO (18) → IFLA_INFO_KIND (1).
fn links() -> Result<Vec<String>, String> {
    const OPERSTATES: [&str; 7] = [
        "unknown",
        "notpresent",
        "down",
        "lowerlayerdown",
        "testing",
        "dormant",
        "up",
    ];
    let names = link_names();
    let mut lines = Vec::new();
    for (head, attrs) in rtnetlink_dump(netlink::RTM_GETLINK, 16)? {
        let attrs = attributes(&attrs);
        let flags = u32_ne(&head[8..12]).unwrap_or(0);
        let mut line = attribute(&attrs, 3).map(text).unwrap_or_default();
        if let Some(kind) =
            attribute(&attrs, 18).and_then(|info| attribute(&attributes(info), 1).map(text))
        {
            line += &format!(" ({kind})");
        }
        line += if flags & 1 != 0 { " UP" } else { " DOWN" };
        if let Some(state) = attribute(&attrs, 16).and_then(|v| v.first()) {
            let state = OPERSTATES.get(*state as usize).unwrap_or(&"?");
            line += &format!(" state {state}");
        }
        if let Some(master) = attribute(&attrs, 10).and_then(u32_ne) {
            line += &format!(" master {}", name_of(&names, master));
        }
        if let Some(mac) = attribute(&attrs, 1) {
            line += &format!(" link {}", address(mac));
        }
        lines.push(line);
    }
    lines.sort();
    Ok(lines)
}

/// `eth0 10.0.0.5/24` — `struct ifaddrmsg` (8 bytes: family, prefix length, flags,
/// scope, index) and IFA_ADDRESS (1) / IFA_LOCAL (2, the own address on a point-to-point link).
fn addresses() -> Result<Vec<String>, String> {
    let names = link_names();
    let mut lines = Vec::new();
    for (head, attrs) in rtnetlink_dump(netlink::RTM_GETADDR, 8)? {
        let attrs = attributes(&attrs);
        let index = u32_ne(&head[4..8]).unwrap_or(0);
        let Some(addr) = attribute(&attrs, 2).or_else(|| attribute(&attrs, 1)) else {
            continue;
        };
        lines.push(format!(
            "{} {}/{}",
            name_of(&names, index),
            address(addr),
            head[1]
        ));
    }
    lines.sort();
    Ok(lines)
}

fn table_name(table: u32) -> String {
    match table {
        253 => "default".to_string(),
        254 => "main".to_string(),
        255 => "local".to_string(),
        n => n.to_string(),
    }
}

/// `AF_INET` and `AF_INET6` by name; others (e.g. 128/129: multicast routing rules) by number.
fn family_name(family: u8) -> String {
    match family {
        2 => "inet".to_string(),
        10 => "inet6".to_string(),
        n => format!("family {n}"),
    }
}

/// A route's type (`RTN_*`), as `ip route` names it.
fn route_type(kind: u8) -> String {
    const NAMES: [&str; 12] = [
        "unspec",
        "unicast",
        "local",
        "broadcast",
        "anycast",
        "multicast",
        "blackhole",
        "unreachable",
        "prohibit",
        "throw",
        "nat",
        "xresolve",
    ];
    NAMES
        .get(kind as usize)
        .map_or_else(|| kind.to_string(), |name| name.to_string())
}

/// `inet 10.0.0.0/24 dev eth0 table main` — `struct rtmsg` (12 bytes: family, dst_len,
/// src_len, tos, table, protocol, scope, type, flags) and RTA_DST (1), RTA_OIF (4),
/// RTA_GATEWAY (5), RTA_PRIORITY (6), RTA_PREFSRC (7), RTA_TABLE (15). Routes the kernel
/// cloned into its cache (RTM_F_CLONED) come and go by themselves: left out.
fn routes() -> Result<Vec<String>, String> {
    const RTM_F_CLONED: u32 = 0x200;
    let names = link_names();
    let mut lines = Vec::new();
    for (head, attrs) in rtnetlink_dump(netlink::RTM_GETROUTE, 12)? {
        if u32_ne(&head[8..12]).unwrap_or(0) & RTM_F_CLONED != 0 {
            continue;
        }
        let attrs = attributes(&attrs);
        let destination = match attribute(&attrs, 1) {
            Some(dst) => format!("{}/{}", address(dst), head[1]),
            None => "default".to_string(),
        };
        let table = attribute(&attrs, 15)
            .and_then(u32_ne)
            .unwrap_or(u32::from(head[4]));
        let mut line = format!("{} {destination}", family_name(head[0]));
        if let Some(gateway) = attribute(&attrs, 5) {
            line += &format!(" via {}", address(gateway));
        }
        if let Some(oif) = attribute(&attrs, 4).and_then(u32_ne) {
            line += &format!(" dev {}", name_of(&names, oif));
        }
        if let Some(source) = attribute(&attrs, 7) {
            line += &format!(" src {}", address(source));
        }
        if let Some(metric) = attribute(&attrs, 6).and_then(u32_ne) {
            line += &format!(" metric {metric}");
        }
        line += &format!(" type {} table {}", route_type(head[7]), table_name(table));
        lines.push(line);
    }
    lines.sort();
    Ok(lines)
}

/// `inet priority 32766 from all to all lookup main` — `struct fib_rule_hdr` (12 bytes:
/// family, dst_len, src_len, tos, table, 2 reserved, action, flags) and FRA_DST (1),
/// FRA_SRC (2), FRA_IIFNAME (3), FRA_PRIORITY (6), FRA_FWMARK (10), FRA_TABLE (15),
/// FRA_OIFNAME (17).
fn rules() -> Result<Vec<String>, String> {
    let mut lines = Vec::new();
    for (head, attrs) in rtnetlink_dump(netlink::RTM_GETRULE, 12)? {
        let attrs = attributes(&attrs);
        let prefix = |kind: u16, len: u8| match attribute(&attrs, kind) {
            Some(a) => format!("{}/{len}", address(a)),
            None => "all".to_string(),
        };
        let mut line = format!(
            "{} priority {} from {} to {}",
            family_name(head[0]),
            attribute(&attrs, 6).and_then(u32_ne).unwrap_or(0),
            prefix(2, head[2]),
            prefix(1, head[1]),
        );
        if let Some(iif) = attribute(&attrs, 3) {
            line += &format!(" iif {}", text(iif));
        }
        if let Some(oif) = attribute(&attrs, 17) {
            line += &format!(" oif {}", text(oif));
        }
        if let Some(mark) = attribute(&attrs, 10).and_then(u32_ne) {
            line += &format!(" fwmark {mark:#x}");
        }
        let table = attribute(&attrs, 15)
            .and_then(u32_ne)
            .unwrap_or(u32::from(head[4]));
        line += match head[7] {
            1 => format!(" lookup {}", table_name(table)),
            action => format!(" action {action} table {}", table_name(table)),
        }
        .as_str();
        lines.push(line);
    }
    lines.sort();
    Ok(lines)
}

/// nftables' families (`NFPROTO_*`), as `nft` names them.
fn nft_family(family: u8) -> &'static str {
    match family {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// Every nftables table, chain and rule (iptables-nft's rules included: they are
/// nftables rules). Each message starts with `struct nfgenmsg` (4 bytes: family,
/// version, resource id), then attributes in network byte order.
///
/// A rule is shown as its expressions' names (`payload cmp immediate`) and a hash of
/// their parameters, leaving out the expressions that count (counter, quota, last):
/// a rule that changed shows up, a rule that merely matched packets does not.
///
/// Reading nftables needs CAP_NET_ADMIN: without it the section says so, the same
/// before and after. A kernel without nf_tables has no tables: an empty section.
fn nftables() -> Result<Vec<String>, String> {
    let dump = |kind| match netlink::dump(Family::Netfilter, kind, &[0; 4]) {
        Ok(messages) => Ok(messages),
        Err(Errno::EOPNOTSUPP | Errno::EPROTONOSUPPORT | Errno::ENOENT) => Ok(Vec::new()),
        Err(Errno::EPERM) => Err("not readable without CAP_NET_ADMIN (root)".to_string()),
        Err(error) => Err(format!("nfnetlink dump failed: {error}")),
    };
    let mut lines = Vec::new();
    for message in dump(netlink::NFT_MSG_GETTABLE)? {
        let Some((head, attrs)) = nft_split(&message.payload) else {
            continue;
        };
        let attrs = attributes(attrs);
        lines.push(format!(
            "table {} {} flags {}",
            nft_family(head),
            attribute(&attrs, 1).map(text).unwrap_or_default(),
            attribute(&attrs, 2).and_then(u32_be).unwrap_or(0),
        ));
    }
    for message in dump(netlink::NFT_MSG_GETCHAIN)? {
        let Some((head, attrs)) = nft_split(&message.payload) else {
            continue;
        };
        let attrs = attributes(attrs);
        let mut line = format!(
            "chain {} {} {}",
            nft_family(head),
            attribute(&attrs, 1).map(text).unwrap_or_default(),
            attribute(&attrs, 3).map(text).unwrap_or_default(),
        );
        if let Some(hook) = attribute(&attrs, 4).map(attributes) {
            let number = attribute(&hook, 1).and_then(u32_be).unwrap_or(0);
            let priority = attribute(&hook, 2).and_then(u32_be).unwrap_or(0) as i32;
            let kind = attribute(&attrs, 7).map(text).unwrap_or_default();
            let hook = [
                "prerouting",
                "input",
                "forward",
                "output",
                "postrouting",
                "ingress",
            ]
            .get(number as usize)
            .map_or_else(|| number.to_string(), |name| name.to_string());
            line += &format!(" (type {kind} hook {hook} priority {priority}");
            if let Some(policy) = attribute(&attrs, 5).and_then(u32_be) {
                line += if policy == 0 {
                    " policy drop"
                } else {
                    " policy accept"
                };
            }
            line += ")";
        }
        lines.push(line);
    }
    for message in dump(netlink::NFT_MSG_GETRULE)? {
        let Some((head, attrs)) = nft_split(&message.payload) else {
            continue;
        };
        let attrs = attributes(attrs);
        let mut names = Vec::new();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for (_, element) in attribute(&attrs, 4).map(attributes).unwrap_or_default() {
            let expr = attributes(element);
            let name = attribute(&expr, 1).map(text).unwrap_or_default();
            if !["counter", "quota", "last"].contains(&name.as_str()) {
                name.hash(&mut hasher);
                attribute(&expr, 2).hash(&mut hasher);
            }
            names.push(name);
        }
        attribute(&attrs, 7).hash(&mut hasher); // user data: iptables' comments
        lines.push(format!(
            "rule {} {} {} handle {}: {} #{:08x}",
            nft_family(head),
            attribute(&attrs, 1).map(text).unwrap_or_default(),
            attribute(&attrs, 2).map(text).unwrap_or_default(),
            attribute(&attrs, 3).and_then(u64_be).unwrap_or(0),
            names.join(" "),
            hasher.finish() as u32,
        ));
    }
    Ok(lines)
}

/// A nftables message: its family (first byte of `struct nfgenmsg`) and its attributes.
fn nft_split(payload: &[u8]) -> Option<(u8, &[u8])> {
    Some((*payload.first()?, payload.get(4..)?))
}

/// The tables of the legacy (x_tables) iptables, ip6tables and arptables. A file that
/// does not exist (module not loaded) lists no table — as one that is empty.
fn legacy_tables() -> Vec<String> {
    let mut lines = Vec::new();
    for (tool, file) in [
        ("iptables-legacy", "/proc/net/ip_tables_names"),
        ("ip6tables-legacy", "/proc/net/ip6_tables_names"),
        ("arptables-legacy", "/proc/net/arp_tables_names"),
    ] {
        let names = std::fs::read_to_string(file).unwrap_or_default();
        let mut names: Vec<&str> = names.split_whitespace().collect();
        names.sort();
        lines.extend(names.iter().map(|name| format!("{tool} table {name}")));
    }
    lines
}

/// What `ip netns list` lists: the bind mounts in `/run/netns` (none: empty).
fn named_netns() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Command lines of running processes that belong to the course: check binaries
/// (`…/deps/check-<hash>`), the lab, docker-proxy, anything naming an exercise or
/// solution — except ourselves and our ancestors (cargo, the shell).
pub fn course_processes() -> Vec<String> {
    let ancestors = ancestors();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if ancestors.contains(&pid) {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if is_course_process(&args) {
            found.push(args.join(" "));
        }
    }
    found.sort();
    found
}

pub fn is_course_process(args: &[String]) -> bool {
    let Some(argv0) = args.first() else {
        return false;
    };
    let base = argv0.rsplit('/').next().unwrap_or(argv0);
    if [
        "cargo",
        "rustc",
        "xtask",
        "rustup",
        "clippy-driver",
        "rustdoc",
    ]
    .contains(&base)
        || base.starts_with("cargo-")
    {
        return false;
    }
    let line = args.join(" ");
    base == "docker-proxy"
        || base.starts_with("check-")
        || base == "lab"
        || line.contains("exercise-")
        || line.contains("solution-")
}

fn ancestors() -> Vec<u32> {
    let mut pids = Vec::new();
    let mut pid = std::process::id();
    while pid > 1 && !pids.contains(&pid) {
        pids.push(pid);
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        pid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
    }
    pids
}

/// A readable diff, section by section: `- line` gone, `+ line` new. Empty: identical.
pub fn diff(before: &Snapshot, after: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    let names: std::collections::BTreeSet<&String> = before
        .sections
        .keys()
        .chain(after.sections.keys())
        .collect();
    for name in names {
        let old = before.sections.get(name).map_or("", String::as_str);
        let new = after.sections.get(name).map_or("", String::as_str);
        if old == new {
            continue;
        }
        out.push(format!("{name}:"));
        let old_lines: Vec<&str> = old.lines().collect();
        let new_lines: Vec<&str> = new.lines().collect();
        for line in &old_lines {
            if !new_lines.contains(line) {
                out.push(format!("  - {line}"));
            }
        }
        for line in &new_lines {
            if !old_lines.contains(line) {
                out.push(format!("  + {line}"));
            }
        }
        if out.last().is_some_and(|l| l.ends_with(':')) {
            out.push("  (same lines, in a different order)".to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot {
            sections: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn identical_snapshots_have_no_diff() {
        let a = snap(&[("ip -br link", "lo UNKNOWN\neth0 UP")]);
        assert!(diff(&a, &a.clone()).is_empty());
    }

    #[test]
    fn a_leftover_link_and_a_vanished_route_are_shown() {
        let before = snap(&[
            ("ip -br link", "lo UNKNOWN"),
            ("ip route", "default via 10.0.0.1"),
        ]);
        let after = snap(&[
            ("ip -br link", "lo UNKNOWN\nveth0@if2 UP"),
            ("ip route", ""),
        ]);
        assert_eq!(
            diff(&before, &after),
            [
                "ip -br link:",
                "  + veth0@if2 UP",
                "ip route:",
                "  - default via 10.0.0.1"
            ]
        );
    }

    /// On a fresh machine `cargo xtask test` takes its first snapshot before `setup`
    /// installs nftables and its second after: the kernel's state did not change, so
    /// the snapshot must not either. Here: a capture made by a process that finds no
    /// tool at all on its PATH equals one made with every tool there. (Before the
    /// snapshot read the kernel, the first said "ip: unavailable" and failed this.)
    #[test]
    fn the_snapshot_does_not_depend_on_installed_tools() {
        const CHILD: &str = "XTASK_SNAPSHOT_CHILD";
        const NAME: &str = "snapshot::tests::the_snapshot_does_not_depend_on_installed_tools";
        if std::env::var_os(CHILD).is_some() {
            // The child's part: capture, and print it between markers for the parent.
            let json = serde_json::to_string(&capture().sections).unwrap();
            println!("<<<{json}>>>");
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("PATH", "/nonexistent")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let json = stdout
            .split_once("<<<")
            .and_then(|(_, rest)| rest.split_once(">>>"))
            .map(|(json, _)| json)
            .unwrap_or_else(|| panic!("the child printed no snapshot: {stdout}"));
        let without_tools = Snapshot {
            sections: serde_json::from_str(json).unwrap(),
        };
        let with_tools = capture();
        // Processes come and go on a shared machine; the kernel's network state does not.
        let changes: Vec<String> = diff(&without_tools, &with_tools)
            .into_iter()
            .filter(|line| line != "processes:" && !line.starts_with("  "))
            .collect();
        assert!(
            changes.is_empty(),
            "sections that differ: {changes:?}\nwithout tools: {without_tools:#?}\nwith tools: {with_tools:#?}"
        );
    }

    #[test]
    fn the_snapshot_names_the_loopback_device_and_reads_nftables_as_root() {
        let snapshot = capture();
        let links = &snapshot.sections["links (rtnetlink)"];
        assert!(links.lines().any(|l| l.starts_with("lo ")), "{links}");
        let nft = &snapshot.sections["nftables: tables, chains, rules (nfnetlink)"];
        if crate::proc::is_root() {
            assert!(
                !nft.starts_with('('),
                "as root nftables must be readable: {nft}"
            );
        } else {
            assert!(nft.contains("CAP_NET_ADMIN"), "{nft}");
        }
    }

    #[test]
    fn course_processes_are_recognised() {
        let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert!(is_course_process(&args(
            "/w/target/debug/deps/check-0a1b --exact x"
        )));
        assert!(is_course_process(&args(
            "/w/.course/tools/docker-proxy -proto udp"
        )));
        assert!(!is_course_process(&args(
            "/usr/bin/cargo test --exclude exercise-udp-echo"
        )));
        assert!(!is_course_process(&args("/usr/sbin/sshd -D")));
        assert!(course_processes().iter().all(|p| !p.contains("xtask-")));
    }
}
