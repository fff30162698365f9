//! The kernel's capabilities that the course depends on, each with what its absence costs.
//!
//! The answers come from the running kernel, never from its version number: distributions
//! backport features and configure kernels differently. The eBPF questions (the `kfree_skb`
//! prototype, whether `tp_btf` may attach) are answered by the course's own tracer
//! (`tracer kernel`, see tracer/tracer/src/capabilities.rs) when it is built: xtask itself does
//! not link the tracer, whose build needs the eBPF toolchain that `cargo xtask setup` installs.

use std::path::{Path, PathBuf};

use super::{Item, Level};
use crate::proc;

/// The tracer binary, if built (debug or release).
fn tracer_binary(root: &Path) -> Option<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    ["debug", "release"]
        .iter()
        .map(|profile| target.join(profile).join("tracer"))
        .find(|p| p.is_file())
}

/// One line of `tracer kernel`: `key: ok|untested|missing: text`.
#[derive(Debug, PartialEq, Eq)]
pub struct TracerLine<'a> {
    pub key: &'a str,
    pub status: &'a str,
    pub text: &'a str,
}

/// Parses `tracer kernel`'s output.
pub fn parse_tracer_kernel(output: &str) -> Vec<TracerLine<'_>> {
    output
        .lines()
        .filter_map(|line| {
            let (key, rest) = line.split_once(": ")?;
            let (status, text) = rest.split_once(": ").unwrap_or((rest, ""));
            Some(TracerLine { key, status, text })
        })
        .collect()
}

/// What a missing tracer capability costs, one line each.
fn cost(key: &str) -> &'static str {
    match key {
        "kfree_skb" | "drop_reason" => {
            "without drop reasons (Linux < 5.17) chapters 5-8 cannot name why a packet died: use a 5.17+ kernel (Debian 12's 6.1 is fine)"
        }
        "tp_btf" => {
            "the tracer cannot attach: chapters 5 and 7 (drop and path tracers) and the story's hop table need it"
        }
        _ => "the tracer needs it",
    }
}

/// The `kfree_skb` prototype and `tp_btf` attach, from the tracer when it is built.
pub fn tracer_capabilities(root: &Path) -> Vec<Item> {
    let Some(tracer) = tracer_binary(root) else {
        return vec![Item::new(
            Level::Warn,
            "kfree_skb / tp_btf",
            "not examined: the tracer is not built yet (it reads the kfree_skb prototype from BTF and tries tp_btf)",
        )
        .fix("cargo build -p tracer (after `cargo xtask setup`), then cargo xtask doctor again")];
    };
    // `tracer kernel` exits 1 when something is missing: read its output either way.
    let output = std::process::Command::new(&tracer)
        .arg("kernel")
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    let Ok(output) = output else {
        return vec![Item::new(
            Level::Warn,
            "kfree_skb / tp_btf",
            format!("cannot run {}", tracer.display()),
        )
        .fix("cargo build -p tracer")];
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let mut items = Vec::new();
    for line in parse_tracer_kernel(&text) {
        let what = match line.key {
            "kfree_skb" => "kfree_skb prototype",
            "drop_reason" => "drop reasons",
            "tp_btf" => "tp_btf attach",
            _ => continue, // BTF has its own line already
        };
        items.push(match line.status {
            "ok" => Item::new(Level::Ok, what, line.text),
            "untested" => Item::new(
                Level::Warn,
                what,
                format!("{} — {}", line.text, cost(line.key)),
            )
            .fix("sudo cargo xtask doctor"),
            _ => Item::new(
                Level::Warn,
                what,
                format!("{} — {}", line.text, cost(line.key)),
            )
            .fix("use a kernel with BTF, 5.17 or newer, where root may load tracing programs"),
        });
    }
    items
}

/// Is `CONFIG_<option>=y` in the running kernel's /boot/config-*? `None` if no config file.
fn kernel_config(option: &str) -> Option<bool> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    let want = format!("CONFIG_{option}=y");
    Some(config.lines().any(|l| l == want))
}

/// kprobes: what pwru (the article's tool) and bpftrace `kprobe:` need; the course's tracer
/// does not (it uses `tp_btf`).
pub fn kprobes() -> Item {
    let files = [
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
        "/sys/kernel/debug/kprobes",
    ];
    let found = files.iter().find(|f| Path::new(f).exists());
    let in_kallsyms = std::fs::read_to_string("/proc/kallsyms")
        .is_ok_and(|k| k.lines().any(|l| l.ends_with(" register_kprobe")));
    let what = "kprobes";
    let missing_cost = "pwru (the article's tool) and bpftrace kprobe:/kfunc: probes cannot run here; the course's tracer uses tp_btf and does not need them";
    match (found, in_kallsyms, kernel_config("KPROBES")) {
        (Some(f), _, _) => Item::new(Level::Ok, what, format!("{f}: pwru can run here")),
        (None, true, _) | (None, _, Some(true)) => Item::new(
            Level::Ok,
            what,
            "compiled in (tracefs is not mounted, which pwru does not need)",
        ),
        (None, false, Some(false)) => Item::new(
            Level::Warn,
            what,
            format!("compiled out (CONFIG_KPROBES is off) — {missing_cost}"),
        )
        .fix("nothing to do for the course; for pwru, a kernel with CONFIG_KPROBES=y"),
        (None, false, None) => Item::new(
            Level::Warn,
            what,
            format!("not found (no kprobe_events, no register_kprobe in /proc/kallsyms) — {missing_cost}"),
        )
        .fix("nothing to do for the course; for pwru, a kernel with CONFIG_KPROBES=y"),
    }
}

/// nftables or legacy iptables behind `iptables`: both work for the course; what differs is
/// where Docker's rules can be seen.
pub fn iptables_backend_item() -> Item {
    let what = "iptables backend";
    let Some(iptables) = proc::which("iptables") else {
        return Item::new(
            Level::Warn,
            what,
            "no iptables — exercise 3 cannot install Docker's NAT",
        )
        .fix("sudo apt-get install iptables");
    };
    let version = proc::output_of(&iptables.display().to_string(), &["-V"]).unwrap_or_default();
    match super::iptables_backend(version.trim()) {
        Some("nf_tables") => Item::new(
            Level::Ok,
            what,
            "nf_tables: `nft list ruleset` shows Docker's rules too (as Debian 11+ and Docker do)",
        ),
        Some("legacy") => Item::new(
            Level::Warn,
            what,
            "legacy x_tables: the exercises work, but `nft list ruleset` will not show the NAT rules (use iptables-save)",
        )
        .fix("sudo update-alternatives --set iptables /usr/sbin/iptables-nft (optional)"),
        _ => Item::new(
            Level::Warn,
            what,
            format!("cannot tell from {:?}: the course assumes iptables-nft or legacy", version.trim()),
        )
        .fix("sudo apt-get install iptables (Debian's 1.8.x says nf_tables or legacy)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracer_kernel_lines_are_parsed() {
        let out = "btf: ok: /sys/kernel/btf/vmlinux\n\
                   kfree_skb: ok: kfree_skb(struct sk_buff *, void *, enum skb_drop_reason)\n\
                   tp_btf: untested: needs root to test\n\
                   drop_reason: missing: no reason: before 5.17\n";
        let lines = parse_tracer_kernel(out);
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[1],
            TracerLine {
                key: "kfree_skb",
                status: "ok",
                text: "kfree_skb(struct sk_buff *, void *, enum skb_drop_reason)"
            }
        );
        assert_eq!(lines[2].status, "untested");
        assert_eq!(lines[3].text, "no reason: before 5.17");
    }

    #[test]
    fn every_kernel_item_says_what_is_missing() {
        for item in [kprobes(), iptables_backend_item()] {
            assert!(
                item.level == Level::Ok || !item.detail.is_empty(),
                "{item:?}"
            );
        }
    }
}
