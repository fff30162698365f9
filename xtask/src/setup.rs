//! `cargo xtask setup`: install what is missing, and only that.
//!
//! Idempotent: every step first looks whether its result is already there (`dpkg -s`,
//! `rustup toolchain list`, a binary on PATH, a file in `.course/tools/`).
//! System packages need root: without it, setup prints the exact `sudo` commands
//! instead. Rust tools (`rustup`, `cargo install`) and `apt-get download` need no root
//! and run either way.

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};

use crate::cli::SetupArgs;
use crate::doctor::{self, Level};
use crate::proc;
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
/// test`): a headless Chromium, a CJK font for the article's title, and Node to drive it.
const BOOK_PACKAGES: &[&str] = &["chromium", "fonts-noto-cjk", "nodejs"];
/// What `repro` and the first exercises cannot do without.
const BASIC_PACKAGES: &[&str] = &["iproute2", "iptables"];

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
    step("apt-get update");
    if !proc::run_visible(Command::new("apt-get").args(["update"]))? {
        bail!("apt-get update failed");
    }
    step(&format!("apt-get install -y {}", missing.join(" ")));
    let ok = proc::run_visible(
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    if !ok {
        bail!("apt-get install failed for some of: {}", missing.join(" "));
    }
    Ok(())
}

fn nightly() -> Result<()> {
    let Some(toolchains) = proc::output_of("rustup", &["toolchain", "list"]) else {
        bail!("rustup is not installed: see https://rustup.rs, then run setup again");
    };
    if toolchains.lines().any(|l| l.starts_with("nightly")) {
        step("rustup component add rust-src --toolchain nightly");
        let ok = proc::run_visible(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
        if !ok {
            bail!("rustup could not add rust-src to nightly");
        }
    } else {
        step("rustup toolchain install nightly --component rust-src --profile minimal");
        let ok = proc::run_visible(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--component",
            "rust-src",
            "--profile",
            "minimal",
        ]))?;
        if !ok {
            bail!("rustup could not install the nightly toolchain");
        }
    }
    Ok(())
}

/// Can this machine build the course's eBPF programs (nightly with rust-src, bpf-linker)?
pub fn ebpf_toolchain_ready() -> bool {
    let nightly_src = Command::new("rustup")
        .args(["run", "nightly", "rustc", "--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| std::path::PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| sysroot.join("lib/rustlib/src/rust/library").is_dir());
    nightly_src && proc::which("bpf-linker").is_some()
}

fn bpf_linker() -> Result<()> {
    if proc::which("bpf-linker").is_some() {
        step("bpf-linker already installed");
        return Ok(());
    }
    step("cargo install bpf-linker --locked --no-default-features --features llvm-22");
    let ok = proc::run_visible(
        proc::cargo()
            .args([
                "install",
                "bpf-linker",
                "--locked",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            .env("LLVM_PREFIX", "/usr/lib/llvm-22")
            .env("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
    )?;
    if !ok {
        bail!("cargo install bpf-linker failed (it needs llvm-22-dev and libpolly-22-dev)");
    }
    Ok(())
}

/// Docker 20.10's `docker-proxy`, extracted from Debian's `docker.io` package without
/// installing it (the story's real userland proxy, to compare the learner's with).
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
    std::fs::create_dir_all(&work)?;
    let result = (|| -> Result<()> {
        step("apt-get download docker.io (the package is not installed)");
        if !proc::run_visible(
            Command::new("apt-get")
                .current_dir(&work)
                .args(["download", "docker.io"]),
        )? {
            bail!("apt-get download docker.io failed (as root, `apt-get update` first may help)");
        }
        let deb = std::fs::read_dir(&work)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb file")?;
        step(&format!("dpkg-deb -x {} x", deb.display()));
        if !proc::run_visible(
            Command::new("dpkg-deb")
                .current_dir(&work)
                .arg("-x")
                .arg(&deb)
                .arg("x"),
        )? {
            bail!("dpkg-deb could not extract {}", deb.display());
        }
        let extracted = work.join("x/usr/sbin/docker-proxy");
        if !extracted.is_file() {
            bail!("{} has no usr/sbin/docker-proxy", deb.display());
        }
        std::fs::create_dir_all(target.parent().unwrap_or(root))?;
        std::fs::copy(&extracted, &target)
            .with_context(|| format!("cannot copy docker-proxy to {}", target.display()))?;
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
/// directory (`-o Dir::Etc::sourcelist=… -o Dir::State::Lists=… -o Dir::Cache=…`), which
/// needs no root.
fn docker_proxy_28(root: &Path) -> Result<()> {
    const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
    let target = root.join(".course/tools/docker-proxy-28");
    if target.is_file() {
        step(&format!("docker-proxy 28 already at {}", target.display()));
        return Ok(());
    }
    if proc::which("apt-get").is_none() || proc::which("dpkg-deb").is_none() {
        bail!("needs apt-get and dpkg-deb (Debian/Ubuntu) to fetch sid's docker.io docker-proxy");
    }
    if !Path::new(KEYRING).is_file() {
        bail!("{KEYRING} is missing: install the `debian-archive-keyring` package, then run setup again");
    }
    let work = std::env::temp_dir().join(format!("xtask-docker-proxy-28-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    for dir in ["lists/partial", "cache/archives/partial", "download"] {
        std::fs::create_dir_all(work.join(dir))?;
    }
    let result = (|| -> Result<()> {
        let sources = work.join("sources.list");
        std::fs::write(
            &sources,
            format!("deb [signed-by={KEYRING}] http://deb.debian.org/debian sid main\n"),
        )?;
        // The same private options for both apt-get calls.
        let apt = |action: &str| {
            let mut cmd = Command::new("apt-get");
            cmd.current_dir(work.join("download"))
                .arg("-o")
                .arg(format!("Dir::Etc::sourcelist={}", sources.display()))
                .args(["-o", "Dir::Etc::sourceparts=-"])
                .arg("-o")
                .arg(format!(
                    "Dir::State::Lists={}",
                    work.join("lists").display()
                ))
                .arg("-o")
                .arg(format!("Dir::Cache={}", work.join("cache").display()))
                .args(["-o", "Acquire::Languages=none"])
                .args([
                    "-o",
                    "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
                ])
                // As root, apt downloads as user _apt, who cannot write to our directory.
                .args(["-o", "APT::Sandbox::User=root"])
                .args(["-q", action]);
            cmd
        };
        step("apt-get update, with a private source list for Debian sid (your apt configuration is not touched)");
        if !proc::run_visible(&mut apt("update"))? {
            bail!(
                "apt-get update of Debian sid's package list failed (is deb.debian.org reachable?)"
            );
        }
        step("apt-get download docker.io (from sid; the package is not installed)");
        if !proc::run_visible(apt("download").arg("docker.io"))? {
            bail!("apt-get download docker.io from sid failed");
        }
        let deb = std::fs::read_dir(work.join("download"))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .context("apt-get download left no .deb file")?;
        step(&format!("dpkg-deb -x {} x", deb.display()));
        if !proc::run_visible(
            Command::new("dpkg-deb")
                .current_dir(&work)
                .arg("-x")
                .arg(&deb)
                .arg("x"),
        )? {
            bail!("dpkg-deb could not extract {}", deb.display());
        }
        let extracted = work.join("x/usr/sbin/docker-proxy");
        if !extracted.is_file() {
            bail!("{} has no usr/sbin/docker-proxy", deb.display());
        }
        std::fs::create_dir_all(target.parent().unwrap_or(root))?;
        std::fs::copy(&extracted, &target)
            .with_context(|| format!("cannot copy docker-proxy to {}", target.display()))?;
        step(&format!(
            "docker-proxy 28 ({}) installed at {}",
            deb.file_name().unwrap_or_default().to_string_lossy(),
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
