//! `cargo xtask setup`: install what is missing, and only that.
//!
//! Idempotent: every step first looks whether its result is already there (`dpkg -s`,
//! `rustup toolchain list`, a binary on PATH, a file in `.course/tools/`).
//! System packages need root: without it, setup prints the exact `sudo` commands
//! instead. Rust tools (`rustup`, `cargo install`) and `apt-get download` need no root
//! and run either way.
//!
//! Every long step says first what it does and about how long it takes, then shows a
//! progress line ([`crate::spinner`]) instead of the tools' own hundreds of lines; those
//! are printed (their last lines) only when the step fails.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::cli::SetupArgs;
use crate::debian;
use crate::doctor::{self, Level};
use crate::proc;
use crate::spinner::{self, LongStep};
use crate::style;

/// Debian packages of the course's tools (the first exercises need the first two).
const COURSE_PACKAGES: &[&str] = &[
    "iproute2",
    "iptables",
    "nftables",
    "conntrack",
    "tcpdump",
    "tshark",
    "bpftool",
];
/// What `cargo install bpf-linker --features llvm-22` links against.
const TRACER_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "zlib1g-dev",
    "libzstd-dev",
];
/// What the book's browser test needs (`cargo xtask book --browser`, run by `cargo xtask
/// test`): a headless Chromium, a CJK font for the article's title, and Node to drive it;
/// and what its captures run (`cargo xtask book --check`): `patch` for the outputs of
/// deliberately modified code, python3 and busybox's `ping` inside `lab run` sessions.
const BOOK_PACKAGES: &[&str] = &[
    "chromium",
    "fonts-noto-cjk",
    "nodejs",
    "patch",
    "python3",
    "busybox-static",
];
/// What `repro` and the first exercises cannot do without.
const BASIC_PACKAGES: &[&str] = &["iproute2", "iptables"];

/// What `cargo install` builds, counted and timed on a 2-core Debian 12 machine
/// (`Compiling` lines; wall time, idle and busy): the progress bar's length and the
/// estimate said up front. A newer release that builds more crates only makes the
/// bar grow. bpf-linker links against Debian's LLVM, so it builds no LLVM of its own:
/// 34 s idle, 4 min 29 s with other builds running.
const BPF_LINKER_CRATES: u64 = 66;
const BPF_LINKER_ESTIMATE: &str = "1 to 5 minutes, depending on how busy the machine is";
/// mdbook 0.4.52: 1 min 39 s idle, 13 min 13 s busy.
pub const MDBOOK_CRATES: u64 = 201;
pub const MDBOOK_ESTIMATE: &str = "2 to 15 minutes, depending on how busy the machine is";
/// `cargo install bpf-linker`, as setup and repro run it (and print it, without root).
const BPF_LINKER_INSTALL: &str =
    "cargo install bpf-linker --locked --no-default-features --features llvm-22";
/// Where Debian's llvm-22-dev lives: bpf-linker's build looks for LLVM there.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
/// `rustup`, installing nightly with the standard library's source (for `-Z build-std`).
const NIGHTLY_INSTALL: &str =
    "rustup toolchain install nightly --component rust-src --profile minimal";

fn step(text: &str) {
    println!("{} {text}", style::bold("setup:"));
}

pub fn setup(root: &Path, args: SetupArgs) -> Result<ExitCode> {
    let mut ok = true;
    let mut packages: Vec<&str> = COURSE_PACKAGES.to_vec();
    if !args.only_course {
        packages.extend(TRACER_PACKAGES);
        packages.extend(BOOK_PACKAGES);
    }
    // The kernel matrix's QEMU and friends: only in CI (`cargo xtask kernels` installs them
    // itself), so that a learner's setup stays fast.
    if crate::check_runner::in_ci() {
        packages.extend(crate::kernels::HOST_PACKAGES);
    }
    ok &= report(apt_install(&packages), "system packages");
    if !args.only_course {
        ok &= report(nightly(), "nightly toolchain");
        ok &= report(bpf_linker(), "bpf-linker");
    }
    ok &= report(crate::book::ensure_mdbook(root).map(drop), "mdbook");
    ok &= report(docker_proxy(root), "docker-proxy");
    ok &= report(docker_proxy_28(root), "docker-proxy 28");
    println!();
    if ok {
        println!("setup: done. `cargo xtask doctor` shows where the machine stands.");
    } else {
        println!("setup: some steps did not succeed (see above). `cargo xtask doctor` shows what is missing.");
    }
    Ok(crate::exit(ok))
}

fn report(result: Result<()>, what: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(error) => {
            println!("{} {what}: {error:#}", style::red("setup failed:"));
            false
        }
    }
}

/// Is this Debian package installed?
fn installed(package: &str) -> bool {
    Command::new("dpkg")
        .args(["-s", package])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `apt-get install -y` the packages that `dpkg -s` does not know, after one `apt-get update`.
/// Without root, print the commands instead (and fail, as nothing was installed).
///
/// apt's and dpkg's output is captured: a progress line follows apt's machine-readable
/// status (`-o APT::Status-Fd=1`), and the output's last lines are shown if it fails.
pub fn apt_install(packages: &[&str]) -> Result<()> {
    if proc::which("apt-get").is_none() || proc::which("dpkg").is_none() {
        step(&format!(
            "no apt-get here: install these (or your distribution's equivalents) yourself: {}",
            packages.join(" ")
        ));
        return Ok(());
    }
    let missing: Vec<&str> = packages.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        step(&format!(
            "system packages already installed: {}",
            packages.join(" ")
        ));
        return Ok(());
    }
    if !proc::is_root() {
        println!(
            "{} not root, so not installing {}. Run:\n    sudo apt-get update && sudo apt-get install -y {}",
            style::yellow("setup:"),
            missing.join(" "),
            missing.join(" ")
        );
        bail!("system packages missing: {}", missing.join(" "));
    }
    step("apt-get update (a few seconds)");
    let progress = LongStep::spinner("setup:", "apt-get update");
    let ran = spinner::run(apt_get(&["update"]), &progress, |progress, line| {
        progress.say(line)
    })?;
    progress.finish(ran.success);
    if !ran.success {
        ran.print_tail();
        bail!("apt-get update failed (see its last lines above)");
    }
    let estimate = if missing.iter().any(|p| p.starts_with("llvm")) {
        "LLVM is large: about 2 minutes, most of it downloading"
    } else {
        "under a minute"
    };
    step(&format!(
        "apt-get install -y {} ({estimate})",
        missing.join(" ")
    ));
    let progress = LongStep::counted("setup:", "apt-get install", 100, "%");
    let mut install = apt_get(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    let ran = spinner::run(install, &progress, |progress, line| {
        if let Some(status) = spinner::apt_status(line) {
            // Downloading fills the first half of the bar, unpacking and configuring the rest.
            let (half, phase) = if status.downloading {
                (0.0, "downloading")
            } else {
                (50.0, "installing")
            };
            progress.set_position((half + status.percent / 2.0) as u64);
            progress.say(&format!("{phase}: {}", status.text));
        }
    })?;
    progress.finish(ran.success);
    if !ran.success {
        ran.print_tail();
        bail!("apt-get install failed for some of: {}", missing.join(" "));
    }
    Ok(())
}

/// `apt-get <args>`, non-interactive, with its machine-readable status on stdout.
fn apt_get(args: &[&str]) -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.args(["-o", "APT::Status-Fd=1"])
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// `rustup …` as one step with a spinner; the output's last lines if it fails.
fn rustup(args: &[&str], label: &str) -> Result<bool> {
    let progress = LongStep::spinner("setup:", label);
    let mut cmd = Command::new("rustup");
    cmd.args(args);
    let ran = spinner::run(cmd, &progress, |progress, line| progress.say(line))?;
    progress.finish(ran.success);
    if !ran.success {
        ran.print_tail();
    }
    Ok(ran.success)
}

/// `cargo install …` with a progress bar over the crates it compiles (`expected`: the
/// count measured once; see [`BPF_LINKER_CRATES`]). Ok(true) if it installed.
pub fn cargo_install(cmd: Command, label: &str, expected: u64) -> Result<bool> {
    let progress = LongStep::counted("setup:", label, expected, "crates");
    progress.say("resolving and downloading crates");
    let ran = spinner::run(cmd, &progress, |progress, line| {
        if let Some(krate) = spinner::compiling(line) {
            progress.advance();
            progress.say(&krate);
        } else if line.trim_start().starts_with("Installing") {
            progress.say(line.trim());
        }
    })?;
    progress.finish(ran.success);
    if !ran.success {
        ran.print_tail();
    }
    Ok(ran.success)
}

fn nightly() -> Result<()> {
    let Some(toolchains) = proc::output_of("rustup", &["toolchain", "list"]) else {
        bail!("rustup is not installed: see https://rustup.rs, then run setup again");
    };
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("rustup component add rust-src --toolchain nightly (seconds if it is there already)");
        let args = ["component", "add", "rust-src", "--toolchain", "nightly"];
        if !rustup(&args, "rust-src for nightly")? {
            bail!("rustup could not add rust-src to nightly");
        }
    } else {
        step(&format!("{NIGHTLY_INSTALL} (about 1 minute)"));
        let args = NIGHTLY_INSTALL.split(' ').skip(1).collect::<Vec<_>>();
        if !rustup(&args, "nightly toolchain")? {
            bail!("rustup could not install the nightly toolchain");
        }
    }
    Ok(())
}

/// Can this machine build the course's eBPF programs (nightly with rust-src, bpf-linker)?
pub fn ebpf_toolchain_ready() -> bool {
    nightly_has_rust_src() && proc::which("bpf-linker").is_some()
}

/// Is there a nightly toolchain with the standard library's source (for `-Z build-std`)?
fn nightly_has_rust_src() -> bool {
    Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/src/rust/library").is_dir())
}

fn bpf_linker() -> Result<()> {
    if proc::which("bpf-linker").is_some() {
        step("bpf-linker already installed");
        return Ok(());
    }
    step(&format!("{BPF_LINKER_INSTALL} ({BPF_LINKER_ESTIMATE})"));
    let mut cmd = proc::cargo();
    cmd.args(BPF_LINKER_INSTALL.split(' ').skip(1))
        .env("LLVM_PREFIX", LLVM_PREFIX)
        .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX);
    if !cargo_install(cmd, "cargo install bpf-linker", BPF_LINKER_CRATES)? {
        bail!("cargo install bpf-linker failed (it needs llvm-22-dev and libpolly-22-dev)");
    }
    Ok(())
}

/// What the hop table's eBPF tracer needs to be built: LLVM for bpf-linker, nightly
/// with rust-src, bpf-linker. Installs what is missing (system packages need root).
pub fn install_ebpf_toolchain() -> Result<()> {
    apt_install(TRACER_PACKAGES)?;
    nightly()?;
    bpf_linker()
}

/// The commands that install the eBPF toolchain, for someone who is not root.
pub fn ebpf_toolchain_commands() -> Vec<String> {
    vec![
        format!("sudo apt-get install -y {}", TRACER_PACKAGES.join(" ")),
        NIGHTLY_INSTALL.to_string(),
        format!("LLVM_PREFIX={LLVM_PREFIX} LLVM_SYS_221_PREFIX={LLVM_PREFIX} {BPF_LINKER_INSTALL}"),
    ]
}

/// What repro says before it installs the eBPF toolchain: the missing parts, each
/// with about how long it takes.
pub fn ebpf_toolchain_plan() -> Vec<String> {
    let mut plan = Vec::new();
    let missing: Vec<&str> = TRACER_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if !missing.is_empty() {
        plan.push(format!(
            "Debian's LLVM 22, for bpf-linker to link against: apt-get install {} \
             (about 2 minutes, 150 MB to download)",
            missing.join(" ")
        ));
    }
    if !nightly_has_rust_src() {
        plan.push(
            "nightly Rust with the standard library's source, to build for the BPF target: \
             rustup (about 1 minute)"
                .to_string(),
        );
    }
    if proc::which("bpf-linker").is_none() {
        plan.push(format!(
            "bpf-linker, the linker of BPF programs: cargo install ({BPF_LINKER_ESTIMATE})"
        ));
    }
    plan.push(
        "then the first build of the course's eBPF tracer (2 to 6 minutes, once)".to_string(),
    );
    plan
}

/// Docker 20.10's `docker-proxy`, extracted from Debian's `docker.io` package without
/// installing it (the story's real userland proxy, to compare the learner's with). The
/// machine's own apt configuration (bookworm) has this version.
fn docker_proxy(root: &Path) -> Result<()> {
    let target = doctor::docker_proxy_path(root);
    if target.is_file() {
        step(&format!("docker-proxy already at {}", target.display()));
        return Ok(());
    }
    if proc::which("apt-get").is_none() || proc::which("dpkg-deb").is_none() {
        bail!("needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch docker.io's docker-proxy");
    }
    let work = std::env::temp_dir().join(format!("xtask-docker-proxy-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = (|| -> Result<()> {
        step("apt-get download docker.io (the package is not installed)");
        let debs = debian::download_from_system_apt(&work.join("download"), &["docker.io"])?;
        step(&format!("dpkg-deb -x {} x", debs[0].display()));
        debian::copy_docker_proxy(&debs[0], &work, &target)?;
        step(&format!("docker-proxy installed at {}", target.display()));
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// Docker 28's `docker-proxy` — the fixed one (moby/moby#48571) — from the `docker.io`
/// package of Debian's `sid` suite, extracted without installing it, for exercise 8's
/// side-by-side check. The machine's apt configuration is never touched: apt reads a
/// source list of our own and keeps its package lists and cache in a temporary
/// directory ([`debian::PrivateApt`]), which needs no root.
fn docker_proxy_28(root: &Path) -> Result<()> {
    let target = root.join(".course/tools/docker-proxy-28");
    if target.is_file() {
        step(&format!("docker-proxy 28 already at {}", target.display()));
        return Ok(());
    }
    let work = std::env::temp_dir().join(format!("xtask-docker-proxy-28-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = (|| -> Result<()> {
        let apt = debian::PrivateApt::new(&work, "sid")?;
        step("apt-get update, with a private source list for Debian sid (your apt configuration is not touched)");
        apt.update()
            .context("apt-get update of Debian sid's package list failed")?;
        step("apt-get download docker.io (from sid; the package is not installed)");
        let debs = apt.download(&work.join("download"), &["docker.io"])?;
        step(&format!("dpkg-deb -x {} x", debs[0].display()));
        debian::copy_docker_proxy(&debs[0], &work, &target)?;
        step(&format!(
            "docker-proxy 28 ({}) installed at {}",
            debs[0].file_name().unwrap_or_default().to_string_lossy(),
            target.display()
        ));
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&work);
    result
}

/// For `repro`: make sure what the first exercises need is there (installing it as
/// root), and say what is still missing. Returns whether everything essential is there.
pub fn ensure_basics(root: &Path) -> Result<bool> {
    let missing_tools = ["ip", "iptables"].iter().any(|t| proc::which(t).is_none());
    if missing_tools {
        let _ = report(apt_install(BASIC_PACKAGES), "system packages");
    }
    let mut ok = true;
    for item in doctor::examine(root) {
        if item.essential && item.level == Level::Missing {
            ok = false;
            println!("{} {} — {}", style::red("MISSING"), item.what, item.detail);
            if let Some(fix) = item.fix {
                println!("        fix: {fix}");
            }
        }
    }
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_root_the_ebpf_toolchain_commands_are_complete_and_only_apt_uses_sudo() {
        let commands = ebpf_toolchain_commands();
        for package in TRACER_PACKAGES {
            assert!(commands[0].contains(package), "{commands:?}");
        }
        assert!(commands[1].starts_with("rustup toolchain install nightly"));
        assert!(commands[2].contains("LLVM_PREFIX=/usr/lib/llvm-22"));
        assert!(commands[2].contains("cargo install bpf-linker"));
        let with_sudo = commands.iter().filter(|c| c.contains("sudo")).count();
        assert_eq!(
            with_sudo, 1,
            "rustup and cargo install run as the user: {commands:?}"
        );
    }
}
