//! `cargo xtask kernels`: the course on Debian's 6.1, 6.12 and 7.2 kernels, in QEMU.
//!
//! Learners run the course on their own kernels, and what works on one kernel is no evidence
//! for another (symbol names, drop-reason numbers and tracepoint prototypes differ). For each
//! kernel this command:
//! 1. fetches Debian's package with a private apt configuration ([`fetch`]), cached under
//!    `.course/kernels/`;
//! 2. builds, on the host, every suite ([`suites`]): the tracer's root tests, netlab's tests,
//!    `lab repro` with the hop table, the checks of every exercise against the solutions;
//! 3. boots the kernel in QEMU with the host's `/` read-only and an overlay in guest RAM
//!    ([`boot`]), where this same binary runs the suites as root (`kernels --guest PLAN`);
//! 4. prints a table kernel × suite with pass/fail counts and times ([`table`]).
//!
//! The guest has no network device: the host's network is never touched.

mod boot;
mod fetch;
mod pwru;
mod suites;
mod table;

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use course::Course;

use crate::setup;

/// The host packages of the kernel matrix (installed by `kernels`, or by `setup` in CI).
pub const HOST_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
    "zstd",
];

#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// 6.1, 6.12, 7.2 or all.
    #[arg(long, default_value = "all")]
    pub kernel: String,
    /// Only these suites (comma-separated): tracer, netlab, repro, checks, pwru (pwru
    /// beside the course's tracer on the story; not in the default set).
    #[arg(long, value_delimiter = ',')]
    pub suite: Vec<String>,
    /// With `--suite pwru`: write the comparison of this run into tracer/README.md (between
    /// its `pwru-comparison` markers), if it passed.
    #[arg(long)]
    pub record: bool,
    /// Time limit for each test, in seconds (TCG is 5-20 times slower than the host).
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// (Internal, in the guest.) Run the suites of this plan file.
    #[arg(long, hide = true)]
    pub guest: Option<std::path::PathBuf>,
}

/// One kernel's row of results.
pub struct KernelRun {
    pub kernel: String,
    pub release: String,
    pub boot: Duration,
    pub total: Duration,
    pub outcomes: Vec<suites::Outcome>,
    pub error: Option<String>,
    /// `tracer kernel`'s lines in the guest: the kfree_skb prototype, reasons, tp_btf.
    pub capabilities: String,
    /// pwru beside the tracer, when the pwru suite ran.
    pub pwru: Option<pwru::Comparison>,
}

/// The kernel the CI runs the pwru suite on: kprobe-multi attaches pwru in seconds there
/// (6.1 has no kprobe-multi: minutes), and it has the newer drop function (6.11+).
pub const PWRU_KERNEL: &str = "6.12";

/// The script the guest runs after `switch_root`: mounts what a booted system has, runs the
/// plan from the course's root, records the exit code, powers off. No tmpfs over `/tmp`: the
/// overlay already keeps the guest's writes in RAM, and the course may live under `/tmp`
/// (a tmpfs there hid the checkout of a clone in `/tmp`).
fn guest_init(root: &Path, xtask: &Path) -> String {
    let results = boot::RESULTS_IN_GUEST;
    format!(
        r#"#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
# Emulated (TCG), the guest runs several times slower than the host: the checks' own time
# limits (netlab::time_limit) stretch by this factor.
export COURSE_TIME_SCALE=4
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mountpoint -q /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
echo "guest: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s"
cd '{root}'
'{xtask}' kernels --guest {results}/plan.json > {results}/guest.log 2>&1
echo $? > {results}/exit-code
'{tracer}' kernel > {results}/capabilities.txt 2>&1
sync
echo o > /proc/sysrq-trigger
sleep 10
"#,
        root = root.display(),
        xtask = xtask.display(),
        tracer = suites::target_dir(root).join("debug/tracer").display(),
    )
}

/// The kernel's first `Oops` line, if it panicked before the guest's init said it was up.
fn panicked_before_init(console: &str) -> Option<String> {
    if console.contains(" up after ") || !console.contains("Kernel panic") {
        return None;
    }
    let oops = console
        .lines()
        .find(|l| l.contains("Oops") || l.contains("BUG") || l.contains("Kernel panic"))?;
    Some(oops.trim().to_string())
}

/// Runs one kernel: fetch, boot with the plan, read the results.
fn run_kernel(
    cache: &Path,
    spec: &fetch::KernelSpec,
    plan: &suites::Plan,
    root: &Path,
) -> KernelRun {
    let started = Instant::now();
    let mut row = KernelRun {
        kernel: spec.name.to_string(),
        release: String::new(),
        boot: Duration::ZERO,
        total: Duration::ZERO,
        outcomes: Vec::new(),
        error: None,
        capabilities: String::new(),
        pwru: None,
    };
    let result = (|| -> Result<()> {
        let kernel = fetch::fetch(cache, spec)?;
        row.release = kernel.release.clone();
        let work = cache.join(spec.name);
        let results = work.join("run");
        let _ = std::fs::remove_dir_all(&results);
        std::fs::create_dir_all(&results)?;
        let initrd = boot::initramfs(&kernel, &work)?;
        std::fs::write(
            results.join("plan.json"),
            serde_json::to_string_pretty(plan)?,
        )?;
        // Not current_exe(): the build above may just have replaced this very binary.
        let xtask = suites::target_dir(root).join("debug/xtask");
        std::fs::write(results.join("guest-init.sh"), guest_init(root, &xtask))?;
        // Generous: every test may take its full limit only in a pathological run.
        let tests: u64 = 400;
        let limit = Duration::from_secs(300 + tests * 30);
        eprintln!(
            "kernels: booting {} ({}) in QEMU",
            spec.name, kernel.release
        );
        boot::boot(&kernel, &initrd, &results, limit)?;
        let mut console = std::fs::read_to_string(results.join("console.log")).unwrap_or_default();
        if let Some(oops) = panicked_before_init(&console) {
            // TCG now and then trips over the kernel patching its own code on another CPU
            // (seen once on 6.12: `Oops: int3` in `sched_clock_tick` at 3 s). Nothing of the
            // course ran yet: boot once more, and keep the first console for a post-mortem.
            eprintln!(
                "kernels: {} panicked while booting, before the guest's init ({oops}): booting once more",
                spec.name
            );
            std::fs::rename(
                results.join("console.log"),
                results.join("console-panic.log"),
            )?;
            boot::boot(&kernel, &initrd, &results, limit)?;
            console = std::fs::read_to_string(results.join("console.log")).unwrap_or_default();
        }
        if let Some(up) = console
            .lines()
            .find_map(|l| l.split(" up after ").nth(1))
            .and_then(|s| s.trim_end_matches(" s").trim().parse::<f64>().ok())
        {
            row.boot = Duration::from_secs_f64(up);
        }
        row.capabilities =
            std::fs::read_to_string(results.join("capabilities.txt")).unwrap_or_default();
        let text = std::fs::read_to_string(results.join("results.json")).with_context(|| {
            format!(
                "the guest wrote no results: see {} and {}",
                results.join("console.log").display(),
                results.join("guest.log").display()
            )
        })?;
        row.outcomes = serde_json::from_str(&text)?;
        if let Ok(json) = std::fs::read_to_string(results.join("pwru.json")) {
            row.pwru = serde_json::from_str(&json).ok();
        }
        if row.outcomes.len() < plan.suites.len() {
            bail!(
                "the guest stopped after {} of {} suites: see {}",
                row.outcomes.len(),
                plan.suites.len(),
                results.join("guest.log").display()
            );
        }
        Ok(())
    })();
    row.error = result.err().map(|e| format!("{e:#}"));
    row.total = started.elapsed();
    row
}

pub fn kernels(root: &Path, course: &Course, args: &KernelsArgs) -> Result<ExitCode> {
    if let Some(plan) = &args.guest {
        let ok = suites::run_in_guest(root, plan)?;
        return Ok(crate::exit(ok));
    }
    for s in &args.suite {
        if !suites::SUITES.contains(&s.as_str()) {
            bail!("no suite {s:?}: choose among {}", suites::SUITES.join(", "));
        }
    }
    if args.record && !args.suite.iter().any(|s| s == "pwru") {
        bail!("--record writes the pwru comparison: add --suite pwru (e.g. --kernel {PWRU_KERNEL} --suite pwru --record)");
    }
    let rows = matrix(root, course, &args.kernel, &args.suite, args.timeout)?;
    let ok = rows
        .iter()
        .all(|r| r.error.is_none() && r.outcomes.iter().all(|o| o.failed == 0));
    if args.record {
        let Some(comparison) = rows
            .iter()
            .filter(|r| r.error.is_none() && r.outcomes.iter().all(|o| o.failed == 0))
            .find_map(|r| r.pwru.as_ref())
        else {
            bail!("nothing recorded: the pwru comparison did not pass (see above)");
        };
        let path = root.join("tracer/README.md");
        let readme = std::fs::read_to_string(&path)?;
        std::fs::write(&path, pwru::record(&readme, &pwru::render(comparison))?)?;
        println!("kernels: the comparison is recorded in {}", path.display());
    }
    Ok(crate::exit(ok))
}

/// Fetch, boot and run: one [`KernelRun`] per kernel (`kernel`: 6.1, 6.12, 7.2 or all),
/// with the table printed.
pub fn matrix(
    root: &Path,
    course: &Course,
    kernel: &str,
    suites_wanted: &[String],
    timeout: u64,
) -> Result<Vec<KernelRun>> {
    let specs: Vec<fetch::KernelSpec> = match kernel {
        "all" => fetch::KERNELS.to_vec(),
        k => vec![*fetch::KERNELS
            .iter()
            .find(|s| s.name == k)
            .with_context(|| format!("no kernel {k:?}: choose 6.1, 6.12, 7.2 or all"))?],
    };
    run_matrix(root, course, &specs, suites_wanted, &|_, _| true, timeout)
}

/// What `cargo xtask test` runs in CI (and counts, every cell): the default suites on every
/// kernel, and pwru beside the tracer on [`PWRU_KERNEL`].
pub fn ci_matrix(root: &Path, course: &Course, timeout: u64) -> Result<Vec<KernelRun>> {
    let all: Vec<String> = suites::SUITES.iter().map(|s| s.to_string()).collect();
    run_matrix(root, course, &fetch::KERNELS, &all, &runs_in_ci, timeout)
}

/// In CI, every suite runs on every kernel, except pwru: on [`PWRU_KERNEL`] only.
fn runs_in_ci(kernel: &str, suite: &str) -> bool {
    suite != "pwru" || kernel == PWRU_KERNEL
}

/// Builds the suites once, then runs on each kernel the suites that `runs_on(kernel, suite)`.
fn run_matrix(
    root: &Path,
    course: &Course,
    specs: &[fetch::KernelSpec],
    suites_wanted: &[String],
    runs_on: &dyn Fn(&str, &str) -> bool,
    timeout: u64,
) -> Result<Vec<KernelRun>> {
    if !crate::proc::is_root() {
        bail!("the kernel matrix needs root (QEMU's shares of / and apt): run it as root (e.g. in a root shell: cargo xtask kernels)");
    }
    setup::apt_install(HOST_PACKAGES)?;
    let cache = root.join(".course/kernels");
    std::fs::create_dir_all(&cache)?;
    let built = Instant::now();
    eprintln!("kernels: building the suites on the host");
    let plan = suites::build_plan(root, course, suites_wanted, timeout)?;
    // The guest also needs the tracer binary (`tracer kernel` records its capabilities).
    let status = crate::proc::cargo()
        .current_dir(root)
        .args(["build", "-p", "tracer", "-p", "xtask"])
        .status()?;
    if !status.success() {
        bail!("cargo build -p tracer -p xtask failed");
    }
    eprintln!("kernels: built in {:.0} s", built.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    for spec in specs {
        let mut own = plan.clone();
        own.suites.retain(|s| runs_on(spec.name, &s.name));
        let row = run_kernel(&cache, spec, &own, root);
        table::print_failures(&row);
        rows.push(row);
    }
    for row in &rows {
        for line in row.capabilities.lines() {
            println!("{:<8} {line}", row.kernel);
        }
    }
    println!("{}", table::render(&rows, &plan));
    for row in &rows {
        if let Some(comparison) = &row.pwru {
            println!("{}", pwru::render(comparison));
        }
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_panic_before_the_guests_init_is_booted_again() {
        let early = "[    3.032901] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\n[    3.035295] Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert_eq!(
            panicked_before_init(early).as_deref(),
            Some("[    3.032901] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI")
        );
        let late = "guest: 6.12.117+deb13-amd64 up after 3.3 s\nKernel panic - not syncing: x\n";
        assert_eq!(
            panicked_before_init(late),
            None,
            "a panic in a test is a failure"
        );
        assert_eq!(panicked_before_init("guest: 6.12 up after 3.3 s\n"), None);
    }

    #[test]
    fn ci_runs_every_suite_on_every_kernel_and_pwru_on_one() {
        for spec in fetch::KERNELS {
            for suite in suites::SUITES {
                let expected = suite != "pwru" || spec.name == "6.12";
                assert_eq!(
                    runs_in_ci(spec.name, suite),
                    expected,
                    "{} {suite}",
                    spec.name
                );
            }
        }
        assert!(fetch::KERNELS.iter().any(|k| k.name == PWRU_KERNEL));
    }
}
