//! `cargo xtask doctor`: is this machine ready for the course?
//!
//! One line per requirement — OK, WARN or MISSING — with the command that fixes it.
//! Only what the first exercises cannot do without (network namespaces we may create,
//! `ip`, `iptables`) makes the exit code non-zero; the tracer's toolchain and the
//! inspection tools are warnings.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

use anyhow::Result;

use crate::proc;
use crate::style;

mod kernel;

/// How a requirement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Missing,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Item {
    pub level: Level,
    pub what: String,
    pub detail: String,
    /// What to run to fix it.
    pub fix: Option<String>,
    /// Do the first exercises need it? (then MISSING fails the doctor)
    pub essential: bool,
}

impl Item {
    fn new(level: Level, what: &str, detail: impl Into<String>) -> Item {
        Item {
            level,
            what: what.to_string(),
            detail: detail.into(),
            fix: None,
            essential: false,
        }
    }
    fn fix(mut self, fix: impl Into<String>) -> Item {
        if self.level != Level::Ok {
            self.fix = Some(fix.into());
        }
        self
    }
    fn essential(mut self) -> Item {
        self.essential = true;
        self
    }
}

pub fn doctor(root: &Path) -> Result<ExitCode> {
    let items = examine(root);
    let mut fatal = false;
    for item in &items {
        let tag = match item.level {
            Level::Ok => style::green("OK     "),
            Level::Warn => style::yellow("WARN   "),
            Level::Missing => style::red("MISSING"),
        };
        println!("{tag} {:<28} {}", item.what, item.detail);
        if let Some(fix) = &item.fix {
            println!("        {} {fix}", style::dim("fix:"));
        }
        fatal |= item.essential && item.level == Level::Missing;
    }
    println!();
    if fatal {
        println!("Something the first exercises need is missing: see the fixes above, or run `cargo xtask setup`.");
    } else {
        println!(
            "Ready for the exercises. Warnings only matter for the chapters that use those tools."
        );
    }
    Ok(crate::exit(!fatal))
}

/// Every requirement, examined.
pub fn examine(root: &Path) -> Vec<Item> {
    let mut items = vec![kernel(), btf(), who_am_i(), user_namespaces()];
    let ip = tool("ip", "iproute2", "the lab's plumbing").essential();
    items.push(ip);
    items.push(iptables());
    for (name, package, why) in [
        ("nft", "nftables", "reading the ruleset iptables-nft writes"),
        ("conntrack", "conntrack", "reading the NAT table"),
        ("tcpdump", "tcpdump", "watching packets"),
        ("tshark", "tshark", "reading captures"),
        ("bpftool", "bpftool", "inspecting the tracer's BPF programs"),
    ] {
        items.push(tool(name, package, why));
    }
    items.push(kernel::iptables_backend_item());
    items.push(conntrack_table());
    items.push(kernel::kprobes());
    items.extend(kernel::tracer_capabilities(root));
    items.push(nightly());
    items.push(cargo_tool(
        "bpf-linker",
        "links the eBPF tracer",
        "cargo xtask setup",
    ));
    items.push(cargo_tool(
        "mdbook",
        "builds the book",
        "cargo xtask book (installs the pinned mdbook 0.4.52)",
    ));
    items.push(docker_proxy(root));
    items.push(docker_proxy_28(root));
    items
}

/// `6.8.0-45-generic` → (6, 8)
pub fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn kernel() -> Item {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let release = release.trim();
    match parse_kernel_version(release) {
        Some(v) if v >= (5, 17) => Item::new(Level::Ok, "kernel", format!("{release} (>= 5.17)")),
        Some(_) => Item::new(
            Level::Warn,
            "kernel",
            format!(
                "{release}: the tracer needs >= 5.17 (kfree_skb drop reasons); the exercises work"
            ),
        )
        .fix("use a newer kernel (or a VM with one) for the tracer chapters"),
        None => Item::new(
            Level::Warn,
            "kernel",
            "cannot read /proc/sys/kernel/osrelease",
        ),
    }
}

fn btf() -> Item {
    if Path::new("/sys/kernel/btf/vmlinux").exists() {
        Item::new(Level::Ok, "BTF", "/sys/kernel/btf/vmlinux")
    } else {
        Item::new(
            Level::Warn,
            "BTF",
            "no /sys/kernel/btf/vmlinux: the tracer cannot load",
        )
        .fix("use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distributions' are)")
    }
}

fn who_am_i() -> Item {
    if proc::is_root() {
        Item::new(Level::Ok, "user", "root: every check can run")
    } else {
        Item::new(
            Level::Ok,
            "user",
            "not root: checks run in a user namespace; those that need root report SKIPPED",
        )
    }
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Actually try to create a user + network namespace, as an unprivileged user.
fn user_namespaces() -> Item {
    let what = "unprivileged user namespaces";
    let Some(unshare) = proc::which("unshare") else {
        return Item::new(
            Level::Warn,
            what,
            "cannot test: `unshare` (util-linux) is missing",
        )
        .fix("apt-get install util-linux");
    };
    // As root, try as `nobody`: that is what a learner's (and CI's rootless) run meets.
    let mut cmd = if proc::is_root() && proc::which("runuser").is_some() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(&unshare);
        c
    } else {
        Command::new(&unshare)
    };
    cmd.args(["--user", "--map-root-user", "--net", "true"])
        .stdout(Stdio::null());
    let run = proc::run_captured(cmd, Duration::from_secs(10));
    let allowed = run.as_ref().is_ok_and(|r| r.success());
    let mut facts = Vec::new();
    for (path, name) in [
        (
            "/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
            "kernel.apparmor_restrict_unprivileged_userns",
        ),
        (
            "/proc/sys/kernel/unprivileged_userns_clone",
            "kernel.unprivileged_userns_clone",
        ),
        (
            "/proc/sys/user/max_user_namespaces",
            "user.max_user_namespaces",
        ),
    ] {
        if let Some(value) = read_sysctl(path) {
            facts.push(format!("{name}={value}"));
        }
    }
    let facts = if facts.is_empty() {
        String::new()
    } else {
        format!(" ({})", facts.join(", "))
    };
    if allowed {
        return Item::new(Level::Ok, what, format!("allowed{facts}"));
    }
    let why = run.map(|r| r.output.trim().to_string()).unwrap_or_default();
    let mut fix = Vec::new();
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1")
    {
        fix.push("Ubuntu's AppArmor blocks them: sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0".to_string());
    }
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        fix.push("sudo sysctl kernel.unprivileged_userns_clone=1".to_string());
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        // The same value as the checks' own SKIPPED message (netlab's sandbox).
        fix.push("sudo sysctl user.max_user_namespaces=10000".to_string());
    }
    if fix.is_empty() {
        fix.push("run the checks as root (cargo xtask check N --sudo: it builds as you, then runs only the built checks as root), or allow user namespaces (inside a container: run it with --privileged or a seccomp profile that allows unshare)".to_string());
    }
    let level = if proc::is_root() {
        Level::Warn
    } else {
        Level::Missing
    };
    let item = Item::new(level, what, format!("blocked: {why}{facts}")).fix(fix.join("; or "));
    if proc::is_root() {
        item
    } else {
        item.essential()
    }
}

fn tool(name: &str, package: &str, why: &str) -> Item {
    match proc::which(name) {
        Some(path) => Item::new(Level::Ok, name, path.display().to_string()),
        None => Item::new(Level::Missing, name, format!("not found ({why})"))
            .fix(format!("sudo apt-get install {package}")),
    }
}

/// `iptables v1.8.9 (nf_tables)` → `nf_tables`
pub fn iptables_backend(version_line: &str) -> Option<&str> {
    let start = version_line.rfind('(')?;
    let end = version_line.rfind(')')?;
    (start < end).then(|| &version_line[start + 1..end])
}

fn iptables() -> Item {
    let mut item = tool("iptables", "iptables", "Docker's NAT, exercise 3").essential();
    if item.level == Level::Ok {
        let version = proc::output_of(&item.detail, &["-V"]).unwrap_or_default();
        let version = version.trim();
        let backend = iptables_backend(version).unwrap_or("unknown");
        let number = version.split(' ').nth(1).unwrap_or("?");
        item.detail = format!("{} — {number}, backend {backend}", item.detail);
    }
    item
}

fn nightly() -> Item {
    let what = "nightly + rust-src";
    let Some(toolchains) = proc::output_of("rustup", &["toolchain", "list"]) else {
        return Item::new(Level::Warn, what, "rustup not found: the tracer's eBPF side needs a nightly toolchain")
            .fix("install rustup, then: rustup toolchain install nightly --component rust-src --profile minimal");
    };
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        return Item::new(
            Level::Warn,
            what,
            "no nightly toolchain (the tracer's eBPF side needs it)",
        )
        .fix("rustup toolchain install nightly --component rust-src --profile minimal");
    }
    let components = proc::output_of(
        "rustup",
        &["component", "list", "--toolchain", "nightly", "--installed"],
    )
    .unwrap_or_default();
    if components.lines().any(|l| l.starts_with("rust-src")) {
        Item::new(Level::Ok, what, "installed")
    } else {
        Item::new(Level::Warn, what, "nightly without rust-src")
            .fix("rustup component add rust-src --toolchain nightly")
    }
}

fn cargo_tool(name: &str, why: &str, fix: &str) -> Item {
    match proc::which(name) {
        Some(path) => Item::new(Level::Ok, name, path.display().to_string()),
        None => Item::new(Level::Warn, name, format!("not found ({why})")).fix(fix),
    }
}

/// Where `setup` puts Docker 20.10's userland proxy.
pub fn docker_proxy_path(root: &Path) -> std::path::PathBuf {
    root.join(".course").join("tools").join("docker-proxy")
}

fn docker_proxy(root: &Path) -> Item {
    let path = docker_proxy_path(root);
    if path.is_file() {
        Item::new(
            Level::Ok,
            "docker-proxy (Docker 20.10)",
            path.display().to_string(),
        )
    } else {
        Item::new(
            Level::Warn,
            "docker-proxy (Docker 20.10)",
            "not in .course/tools/ (the story's real proxy, for comparison with yours)",
        )
        .fix("cargo xtask setup")
    }
}

/// Docker 28's userland proxy, the fixed one (exercise 8), where `setup` puts it.
fn docker_proxy_28(root: &Path) -> Item {
    let path = root.join(".course/tools/docker-proxy-28");
    let what = "docker-proxy (Docker 28)";
    if path.is_file() {
        Item::new(Level::Ok, what, path.display().to_string())
    } else {
        Item::new(
            Level::Warn,
            what,
            "not in .course/tools/ (Docker's own fix, to compare with yours in exercise 8)",
        )
        .fix("cargo xtask setup")
    }
}

/// Is the conntrack table printed in `/proc/net/nf_conntrack`? Kernels built without
/// `CONFIG_NF_CONNTRACK_PROCFS` have no such file; the course's tools (`repro`, the lab,
/// `tracer --explain`) then read the table over netlink (`netlab::conntrack`).
fn conntrack_table() -> Item {
    let what = "/proc/net/nf_conntrack";
    let release = read_sysctl("/proc/sys/kernel/osrelease").unwrap_or_default();
    let config = std::fs::read_to_string(format!("/boot/config-{release}")).ok();
    let option = |line: &str| {
        config
            .as_deref()
            .is_some_and(|c| c.lines().any(|l| l == line))
    };
    if Path::new(what).exists() || option("CONFIG_NF_CONNTRACK_PROCFS=y") {
        Item::new(Level::Ok, what, "the kernel prints conntrack tables there")
    } else if config.is_some() {
        Item::new(Level::Warn, what, "this kernel is built without it (CONFIG_NF_CONNTRACK_PROCFS is off): the course's tools read conntrack over netlink instead")
            .fix("nothing to do; to see a table yourself: cargo xtask lab exec dind2 -- conntrack -L -o extended")
    } else {
        Item::new(Level::Ok, what, "not visible before conntrack is loaded; where the kernel lacks it, the course reads conntrack over netlink")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_versions_are_parsed() {
        assert_eq!(parse_kernel_version("6.8.0-45-generic"), Some((6, 8)));
        assert_eq!(parse_kernel_version("5.17"), Some((5, 17)));
        assert_eq!(parse_kernel_version("6.18.44-fc-v782"), Some((6, 18)));
        assert!(parse_kernel_version("5.4.0") < Some((5, 17)));
        assert_eq!(parse_kernel_version("garbage"), None);
    }

    #[test]
    fn the_iptables_backend_is_read() {
        assert_eq!(
            iptables_backend("iptables v1.8.9 (nf_tables)"),
            Some("nf_tables")
        );
        assert_eq!(iptables_backend("iptables v1.8.7 (legacy)"), Some("legacy"));
        assert_eq!(iptables_backend("iptables v1.4"), None);
    }

    #[test]
    fn the_doctor_never_panics_on_this_machine() {
        let items = examine(Path::new("/nonexistent"));
        assert!(items.iter().any(|i| i.what == "ip"));
        assert!(items
            .iter()
            .all(|i| i.level == Level::Ok || i.fix.is_some() || i.what == "kernel"));
    }
}
