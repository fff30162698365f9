//! `cargo xtask dev-check`: prove the course honest.
//!
//! Like rustlings' `cargo dev check`: every check must **fail** against the untouched
//! exercise (otherwise it tests nothing the learner writes) and **pass** against the
//! solution (otherwise the learner is asked the impossible). A SKIP proves neither: it
//! is reported, and under `CI=true` it is an error. Then the lints and the course
//! crate's consistency tests.

use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::Result;
use course::Course;

use crate::check_runner::{self, Options, Tally};
use crate::outcome::Verdict;
use crate::proc;
use crate::style;

/// One row of the table.
#[derive(Debug)]
struct Row {
    exercise: String,
    test: String,
    untouched: String,
    solution: String,
    verdict: Result<(), String>,
    skipped: bool,
}

fn short(verdict: Option<&Verdict>) -> String {
    match verdict {
        None => "-".into(),
        Some(Verdict::Ok) => "OK".into(),
        Some(Verdict::Fail { .. }) => "FAIL".into(),
        Some(Verdict::NotImplemented { .. }) => "FAIL (todo)".into(),
        Some(Verdict::TimedOut { .. }) => "FAIL (timeout)".into(),
        Some(Verdict::Skip { .. }) => "SKIP".into(),
    }
}

pub fn dev_check(root: &Path, course: &Course, timeout: Duration) -> Result<ExitCode> {
    let mut tally = prove_checks(root, course, timeout)?;
    let course_tests = step_ok(
        proc::cargo()
            .current_dir(root)
            .args(["test", "-p", "course"]),
    );
    for (name, ok) in std::iter::once(("cargo test -p course", course_tests)).chain(lints(root)) {
        count(&mut tally, name, ok);
    }
    println!("{}", tally.summary_line());
    Ok(crate::exit(tally.failed == 0))
}

/// The workspace's lints, as (step name, passed): rustfmt and clippy with warnings denied,
/// also on the code behind the lab's `hop-table` feature (the story's hop table, which
/// `--workspace` builds without). Shared by `dev-check` and `test`.
pub fn lints(root: &Path) -> [(&'static str, bool); 3] {
    [
        (
            "cargo fmt --all -- --check",
            step_ok(
                proc::cargo()
                    .current_dir(root)
                    .args(["fmt", "--all", "--", "--check"]),
            ),
        ),
        (
            "cargo clippy --workspace --all-targets -- -D warnings",
            step_ok(proc::cargo().current_dir(root).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ),
        (
            "cargo clippy -p lab --features hop-table --all-targets -- -D warnings",
            step_ok(proc::cargo().current_dir(root).args([
                "clippy",
                "-p",
                "lab",
                "--features",
                "hop-table",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])),
        ),
    ]
}

/// Run a command visibly; false if it failed or could not start.
pub fn step_ok(cmd: &mut Command) -> bool {
    proc::run_visible(cmd).unwrap_or_else(|error| {
        println!("{error:#}");
        false
    })
}

/// Print a step's OK/FAIL line and count it in `tally`.
pub fn count(tally: &mut Tally, name: &str, ok: bool) {
    print_step(name, ok);
    if ok {
        tally.passed += 1;
    } else {
        tally.failed += 1;
    }
}

pub fn print_step(name: &str, ok: bool) {
    let tag = if ok {
        style::green("OK  ")
    } else {
        style::red("FAIL")
    };
    println!("  {tag}  {name}");
}

/// The honesty table: every check fails untouched and passes on the solution.
pub fn prove_checks(root: &Path, course: &Course, timeout: Duration) -> Result<Tally> {
    let ci = check_runner::in_ci();
    let mut rows = Vec::new();
    for ex in &course.exercises {
        if has_local_changes(root, &ex.dir) {
            println!(
                "{} exercises/{} has local changes: dev-check judges the exercise as it is on disk",
                style::yellow("warning:"),
                ex.dir
            );
        }
        let quiet = |solution| Options {
            sudo: false,
            solution,
            timeout,
            skips_fail: false,
            verbose: false,
        };
        println!("dev-check: {} (untouched exercise, then solution)…", ex.id);
        let untouched = check_runner::run_exercise(root, ex, quiet(false))?;
        let solution = check_runner::run_exercise(root, ex, quiet(true))?;
        let mut names: Vec<&String> = untouched.results.iter().map(|(n, _)| n).collect();
        for (name, _) in &solution.results {
            if !names.contains(&name) {
                names.push(name);
            }
        }
        if !untouched.compiled || !solution.compiled {
            let which = match (untouched.compiled, solution.compiled) {
                (false, false) => "neither the exercise nor the solution compiles",
                (false, true) => "the untouched exercise does not compile (it must: only todo!()s)",
                _ => "the solution does not compile",
            };
            rows.push(Row {
                exercise: ex.id.clone(),
                test: "(build)".into(),
                untouched: if untouched.compiled { "built" } else { "ERROR" }.into(),
                solution: if solution.compiled { "built" } else { "ERROR" }.into(),
                verdict: Err(which.into()),
                skipped: false,
            });
            continue; // per-test rows would only repeat that
        }
        for name in names {
            let u = untouched
                .results
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v);
            let s = solution
                .results
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v);
            let skipped =
                matches!(u, Some(Verdict::Skip { .. })) || matches!(s, Some(Verdict::Skip { .. }));
            let verdict = judge(u, s, ci);
            rows.push(Row {
                exercise: ex.id.clone(),
                test: name.clone(),
                untouched: short(u),
                solution: short(s),
                verdict,
                skipped,
            });
        }
    }
    print_table(&rows);
    let mut tally = Tally::default();
    for row in &rows {
        match (&row.verdict, row.skipped) {
            (Err(_), _) => tally.failed += 1,
            (Ok(()), true) => tally.skipped += 1,
            (Ok(()), false) => tally.passed += 1,
        }
    }
    Ok(tally)
}

/// Is one check honest? `Err` says why not.
fn judge(untouched: Option<&Verdict>, solution: Option<&Verdict>, ci: bool) -> Result<(), String> {
    let skip_note = |side: &str| {
        if ci {
            Err(format!(
                "SKIPPED on the {side} under CI: the check proved nothing"
            ))
        } else {
            Ok(())
        }
    };
    match untouched {
        None => return Err("missing from the untouched exercise's test list".into()),
        Some(Verdict::Ok) => {
            return Err(
                "PASSES on the untouched exercise: it tests nothing the learner writes".into(),
            )
        }
        Some(Verdict::Skip { .. }) => skip_note("untouched exercise")?,
        Some(_) => {}
    }
    match solution {
        None => Err("missing from the solution's test list".into()),
        Some(Verdict::Ok) => Ok(()),
        Some(Verdict::Skip { .. }) => skip_note("solution"),
        Some(_) => Err("FAILS on the solution".into()),
    }
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.test.len()).max().unwrap_or(4).max(4);
    println!();
    println!(
        "{}",
        style::bold(&format!(
            "  {:<12} {:<width$}  {:<15} {:<15} verdict",
            "exercise", "test", "untouched", "solution"
        ))
    );
    for row in rows {
        let verdict = match (&row.verdict, row.skipped) {
            (Err(why), _) => style::red(&format!("ERROR: {why}")),
            (Ok(()), true) => style::yellow("skipped (proves nothing here)"),
            (Ok(()), false) => style::green("honest"),
        };
        println!(
            "  {:<12} {:<width$}  {:<15} {:<15} {verdict}",
            row.exercise, row.test, row.untouched, row.solution
        );
    }
    println!();
}

fn has_local_changes(root: &Path, dir: &str) -> bool {
    Command::new("git")
        .current_dir(root)
        .args(["status", "--porcelain", "--", &format!("exercises/{dir}")])
        .output()
        .is_ok_and(|out| out.status.success() && !out.stdout.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Verdict {
        Verdict::Fail { details: vec![] }
    }
    fn skip() -> Verdict {
        Verdict::Skip { reason: "r".into() }
    }

    #[test]
    fn honest_means_fails_untouched_and_passes_solved() {
        assert!(judge(Some(&fail()), Some(&Verdict::Ok), false).is_ok());
        let todo = Verdict::NotImplemented {
            function: "f".into(),
            location: "l".into(),
        };
        assert!(judge(Some(&todo), Some(&Verdict::Ok), true).is_ok());
        assert!(judge(Some(&Verdict::Ok), Some(&Verdict::Ok), false)
            .unwrap_err()
            .contains("PASSES"));
        assert!(judge(Some(&fail()), Some(&fail()), false)
            .unwrap_err()
            .contains("FAILS"));
        assert!(judge(None, Some(&Verdict::Ok), false).is_err());
    }

    #[test]
    fn a_skip_proves_nothing_and_is_an_error_under_ci() {
        assert!(judge(Some(&skip()), Some(&Verdict::Ok), false).is_ok());
        assert!(judge(Some(&skip()), Some(&Verdict::Ok), true).is_err());
        assert!(judge(Some(&fail()), Some(&skip()), true).is_err());
    }
}
