//! The rootless proof: the exercises that claim `needs_root = false` really pass for
//! a user with no privileges at all.
//!
//! Run as root (in CI), this creates a system user `course-rootless`, copies the
//! solutions' check binaries somewhere that user can read (root's home is mode 700, so
//! `target/` there is out of its reach), and runs every test as that user with
//! `CI=true`: each must pass, and a SKIP counts as a failure. If the machine blocks
//! unprivileged user namespaces, the proof cannot hold, and that is reported with the
//! reason rather than silently skipped.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use course::Course;

use crate::cargo_build::{self, Build};
use crate::check_runner::{Options, Tally};
use crate::outcome;
use crate::proc;
use crate::style;

pub const USER: &str = "course-rootless";

/// Run the proof; returns the tally (one entry per test, plus one for a setup failure).
pub fn prove(root: &Path, course: &Course, timeout: Duration) -> Result<Tally> {
    let mut tally = Tally::default();
    println!(
        "{}",
        style::bold(&format!("── rootless proof (as user {USER}) ──"))
    );
    if !proc::is_root() {
        println!(
            "  {}  rootless proof (needs root to switch users; CI runs it)",
            style::yellow("SKIP")
        );
        tally.skipped += 1;
        return Ok(tally);
    }
    if let Err(error) = ensure_user().and_then(|()| user_namespaces_allowed()) {
        println!("  {}  rootless proof: {error:#}", style::red("FAIL"));
        tally.failed += 1;
        return Ok(tally);
    }
    let work = std::env::temp_dir().join(format!("course-rootless-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o755))?;
    let result = run_all(root, course, timeout, &work, &mut tally);
    let _ = std::fs::remove_dir_all(&work);
    result?;
    Ok(tally)
}

fn run_all(
    root: &Path,
    course: &Course,
    timeout: Duration,
    work: &Path,
    tally: &mut Tally,
) -> Result<()> {
    let opts = Options {
        sudo: false,
        solution: true,
        timeout,
        skips_fail: true,
        verbose: true,
    };
    // The checks find Docker's docker-proxy through $DOCKER_PROXY: give the user a copy
    // it can read, wherever the repository is (CI may clone it below a mode-700 home).
    for tool in ["docker-proxy", "docker-proxy-28"] {
        let docker_proxy = root.join(".course/tools").join(tool);
        if docker_proxy.is_file() {
            let copy = work.join(tool);
            std::fs::copy(&docker_proxy, &copy)
                .with_context(|| format!("cannot copy {}", docker_proxy.display()))?;
            std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    for ex in course.exercises.iter().filter(|e| !e.needs_root) {
        let package = ex.solution_package();
        let executable = match cargo_build::build_check(root, &package, false)? {
            Build::Built(path) => path,
            Build::Failed { .. } => {
                println!("  {}  {package} does not compile", style::red("FAIL"));
                tally.failed += 1;
                continue;
            }
        };
        let copy = work.join(format!("{}-check", ex.dir));
        std::fs::copy(&executable, &copy).with_context(|| {
            format!("cannot copy {} to {}", executable.display(), copy.display())
        })?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))?;

        let list = proc::run_captured(
            as_user(&copy, &["--list", "--format", "terse"], work),
            Duration::from_secs(60),
        )?;
        let tests = outcome::parse_test_list(&list.output);
        if !list.success() || tests.is_empty() {
            println!(
                "  {}  {package}: cannot list its tests as {USER}:\n{}",
                style::red("FAIL"),
                list.output.trim_end()
            );
            tally.failed += 1;
            continue;
        }
        for name in tests {
            // A non-root exercise may hold a few eBPF checks, in a module `as_root` (exercise
            // 8's tracer check): they need real root, which this proof has dropped, and
            // are run by the root pass instead.
            if name.contains("as_root::") {
                println!(
                    "  {}  {} {name} (needs real root: run by the root pass)",
                    style::dim("ROOT"),
                    ex.id
                );
                continue;
            }
            let run = proc::run_captured(
                as_user(
                    &copy,
                    &["--exact", &name, "--nocapture", "--test-threads=1"],
                    work,
                ),
                timeout,
            )?;
            let verdict = outcome::classify(&run, &name, root);
            tally.count(&verdict, true);
            crate::check_runner::print_verdict(&format!("{} {name}", ex.id), &verdict, opts);
        }
    }
    Ok(())
}

/// `runuser -u course-rootless -- env CI=true RUST_BACKTRACE=0 <bin> <args>`, in `cwd`.
fn as_user(binary: &Path, args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new("runuser");
    cmd.args(["-u", USER, "--", "env", "CI=true", "RUST_BACKTRACE=0"])
        .arg(format!(
            "DOCKER_PROXY={}",
            cwd.join("docker-proxy").display()
        ))
        .arg(format!(
            "DOCKER_PROXY_28={}",
            cwd.join("docker-proxy-28").display()
        ))
        .arg(binary)
        .args(args)
        .current_dir(cwd);
    cmd
}

fn ensure_user() -> Result<()> {
    if proc::output_of("id", &["-u", USER]).is_some() {
        return Ok(());
    }
    println!("  creating system user {USER} (useradd --system --no-create-home)");
    let ok = proc::run_visible(Command::new("useradd").args([
        "--system",
        "--no-create-home",
        "--shell",
        "/usr/sbin/nologin",
        USER,
    ]))?;
    if !ok {
        bail!("useradd could not create {USER}");
    }
    Ok(())
}

fn user_namespaces_allowed() -> Result<()> {
    let mut cmd = Command::new("runuser");
    cmd.args([
        "-u",
        USER,
        "--",
        "unshare",
        "--user",
        "--map-root-user",
        "--net",
        "true",
    ]);
    let run = proc::run_captured(cmd, Duration::from_secs(10))?;
    if run.success() {
        return Ok(());
    }
    bail!(
        "unprivileged user namespaces are blocked on this machine, so no rootless check can run: {} \
         (`cargo xtask doctor` explains the setting to change)",
        run.output.trim()
    )
}
