//! `cargo xtask test` — THE test command (what `.ci/run` runs, what the README says).
//!
//! In order: `setup` (as root) → `cargo fmt --check` → `cargo clippy -D warnings` →
//! the infrastructure crates' own tests → dev-check's honesty table → the rootless
//! proof → the book (`book --check`: captured outputs still true; `mdbook build`) → the root network namespace unchanged. Every step and every
//! check counts once in the closing `summary:` line; exit 0 only if nothing failed.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use course::Course;

use crate::check_runner::Tally;
use crate::cli::SetupArgs;
use crate::devcheck::{count, step_ok};
use crate::{book, devcheck, proc, rootless, setup, snapshot, style};

fn heading(text: &str) {
    println!();
    println!("{}", style::bold(&format!("══ {text} ══")));
}

pub fn test(root: &Path, course: &Course, timeout: Duration) -> Result<ExitCode> {
    // Before anything runs, setup included: the snapshot reads the kernel (netlink,
    // /proc), not tools, so installing nftables below does not change it.
    let before = snapshot::capture();
    let mut tally = Tally::default();

    if proc::is_root() {
        heading("setup");
        let ok = setup::setup(root, SetupArgs::default())? == ExitCode::SUCCESS;
        count(&mut tally, "cargo xtask setup", ok);
    }

    heading("format and lints");
    for (name, ok) in devcheck::lints(root) {
        count(&mut tally, name, ok);
    }

    heading("unit tests of the course's own crates");
    let mut cmd = proc::cargo();
    cmd.current_dir(root).args(["test", "--workspace"]);
    for ex in &course.exercises {
        cmd.args([
            "--exclude",
            &ex.exercise_package(),
            "--exclude",
            &ex.solution_package(),
        ]);
    }
    let ok = step_ok(&mut cmd);
    count(
        &mut tally,
        "cargo test --workspace (without exercises and solutions)",
        ok,
    );

    heading("dev-check: every check fails untouched and passes on the solution");
    tally.add(devcheck::prove_checks(root, course, timeout)?);

    heading("rootless proof");
    tally.add(rootless::prove(root, course, timeout)?);

    if root.join("book").join("book.toml").is_file() {
        heading("the book: every captured output still true, then mdbook build");
        let started = std::time::Instant::now();
        let ok = book::check(root, &[]).unwrap_or_else(|error| {
            println!("  {error:#}");
            false
        });
        count(
            &mut tally,
            "cargo xtask book --check (outputs match the code)",
            ok,
        );
        let ok = book::ensure_mdbook(root)
            .and_then(|mdbook| book::build(root, &mdbook))
            .unwrap_or_else(|error| {
                println!("  {error:#}");
                false
            });
        count(&mut tally, "cargo xtask book (mdbook build)", ok);
        let ok = ok
            && book::browser(root).unwrap_or_else(|error| {
                println!("  {error:#}");
                false
            });
        count(
            &mut tally,
            "cargo xtask book --browser (every page in headless Chromium)",
            ok,
        );
        println!("  (the book took {:.1}s)", started.elapsed().as_secs_f64());
    }

    heading("the machine's root network namespace is untouched");
    let after = snapshot::capture();
    let changes = snapshot::diff(&before, &after);
    for line in &changes {
        println!("    {line}");
    }
    count(
        &mut tally,
        "root namespace: links, addresses, routes, netns, rules, processes unchanged",
        changes.is_empty(),
    );

    println!();
    println!("{}", tally.summary_line());
    Ok(crate::exit(tally.failed == 0))
}
