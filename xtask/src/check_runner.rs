//! Running an exercise's checks, one process per test (ARCHITECTURE.md, "Running a check").
//!
//! 1. Build the check binary: `cargo test -p <package> --test check --no-run` (see
//!    [`crate::cargo_build`]). Compile errors are shown as cargo shows them, followed by
//!    one sentence saying whose code does not compile.
//! 2. List its tests: `<bin> --list --format terse`.
//! 3. Run each test alone: `<bin> --exact <name> --nocapture --test-threads=1`, in its
//!    own process group with a time limit (see [`crate::proc`]). One process per test
//!    means a hung or crashed test cannot take the others down with it, and each test
//!    gets fresh namespaces.
//! 4. Turn each run into a verdict ([`crate::outcome`]) and print one line per test.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use course::Exercise;

use crate::cargo_build::{self, Build};
use crate::outcome::{self, SeenErrors, Verdict};
use crate::proc;
use crate::style;

/// How to run the checks.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Against `solutions/` instead of `exercises/`.
    pub solution: bool,
    /// Time limit per test.
    pub timeout: Duration,
    /// Count a SKIP as a failure (CI=true or --no-skip).
    pub skips_fail: bool,
    /// Print one line per test and the failure details (false: only return the results).
    pub verbose: bool,
    /// Run the built check binaries through `sudo -E` (`check --sudo`).
    pub sudo: bool,
}

/// Passed / failed / skipped counts.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
}

impl Tally {
    pub fn add(&mut self, other: Tally) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped += other.skipped;
    }

    /// Count one verdict.
    pub fn count(&mut self, verdict: &Verdict, skips_fail: bool) {
        match verdict {
            Verdict::Ok => self.passed += 1,
            Verdict::Skip { .. } if !skips_fail => self.skipped += 1,
            _ => self.failed += 1,
        }
    }

    /// `2 passed, 1 failed, 0 skipped`
    pub fn counts(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// The closing line of every command that runs checks.
    pub fn summary_line(&self) -> String {
        format!("summary: {}", self.counts())
    }
}

/// Everything one exercise's check run produced.
#[derive(Debug, Default)]
pub struct Report {
    /// Did the check binary build?
    pub compiled: bool,
    /// Each test's name and verdict, in run order.
    pub results: Vec<(String, Verdict)>,
    pub tally: Tally,
}

impl Report {
    /// All checks passed, none skipped: what makes an exercise "done".
    pub fn all_passed(&self) -> bool {
        self.compiled && self.tally.failed == 0 && self.tally.skipped == 0 && self.tally.passed > 0
    }
}

/// Is this a CI run (`CI=true`)? Then a skip is a failure.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Build, list and run the checks of one exercise (or of its solution).
pub fn run_exercise(root: &Path, ex: &Exercise, opts: Options) -> Result<Report> {
    let (package, dir) = if opts.solution {
        (ex.solution_package(), ex.solution_dir(root))
    } else {
        (ex.exercise_package(), ex.exercise_dir(root))
    };
    let shown_dir = dir.strip_prefix(root).unwrap_or(&dir).display().to_string();
    if opts.verbose {
        println!(
            "{} {} {}",
            style::bold(&format!("── {} · {}", ex.id, ex.title)),
            style::dim(&format!("({shown_dir})")),
            style::bold("──")
        );
        if ex.needs_root && !proc::is_root() && !opts.sudo {
            println!(
                "   {} {} needs root: as a normal user its checks report SKIPPED.\n   \
                 To run them for real: cargo xtask check {} --sudo\n   \
                 (it builds as you, then runs only the built checks with sudo -E)",
                style::yellow("note:"),
                ex.id,
                ex.id
            );
        }
    }
    if !dir.is_dir() {
        bail!("{shown_dir} does not exist: is your checkout complete? (`git status`; `cargo xtask reset {}` restores an exercise)", ex.id);
    }

    let mut report = Report::default();
    let executable = match cargo_build::build_check(root, &package, style::enabled())? {
        Build::Built(path) => path,
        Build::Failed { culprits, .. } => {
            let others: Vec<&String> = culprits.iter().filter(|c| **c != package).collect();
            if !others.is_empty() && !culprits.contains(&package) {
                println!(
                    "{} the course's own code does not compile ({}): this is not your fault — \
                     update your checkout (`git pull`) or report it",
                    style::red("error:"),
                    others
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            } else if opts.solution {
                println!(
                    "{} the reference solution in {shown_dir} does not compile — fix the errors above",
                    style::red("error:")
                );
            } else {
                println!(
                    "{} your code in {shown_dir} does not compile yet — fix the errors above",
                    style::red("error:")
                );
            }
            report.tally.failed += 1;
            return Ok(report);
        }
    };
    report.compiled = true;

    let tests = list_tests(&executable, &dir)?;
    if tests.is_empty() {
        bail!(
            "{} has no tests: checks/{}.rs should define some",
            executable.display(),
            ex.dir
        );
    }
    if opts.sudo && !proc::is_root() {
        sudo_validate()?;
    }
    let mut seen = SeenErrors::default();
    // The test whose error was printed last (to say "above" only when it is just above).
    let mut last_shown: Option<String> = None;
    for name in tests {
        let verdict = run_one(&executable, &dir, &name, opts.timeout, root, opts.sudo)?;
        report.tally.count(&verdict, opts.skips_fail);
        if opts.verbose {
            match seen.note(&name, &verdict) {
                Some(first) => {
                    print_repeat(&name, &first, last_shown.as_deref() == Some(first.as_str()));
                    last_shown = Some(first);
                }
                None => {
                    print_verdict(&name, &verdict, opts);
                    last_shown = verdict.is_failure(true).then(|| name.clone());
                }
            }
        }
        report.results.push((name, verdict));
    }
    if opts.verbose {
        for (first, count) in seen.repeated() {
            println!(
                "  {} {count} checks failed with the error shown under {}: one mistake, fix it first",
                style::yellow("note:"),
                short_name(first)
            );
        }
    }
    if opts.verbose && !opts.solution && report.tally.failed > 0 {
        println!(
            "  {}",
            style::dim(&format!("hint: cargo xtask hint {}", ex.id))
        );
    }
    Ok(report)
}

/// The tests in a libtest binary.
pub fn list_tests(executable: &Path, cwd: &Path) -> Result<Vec<String>> {
    let mut cmd = Command::new(executable);
    cmd.args(["--list", "--format", "terse"]).current_dir(cwd);
    let run = proc::run_captured(cmd, Duration::from_secs(60))?;
    if !run.success() {
        bail!(
            "`{} --list` failed:\n{}",
            executable.display(),
            run.output.trim_end()
        );
    }
    Ok(outcome::parse_test_list(&run.output))
}

/// Run one test of a check binary in its own process and classify the result.
pub fn run_one(
    executable: &Path,
    cwd: &Path,
    name: &str,
    timeout: Duration,
    root: &Path,
    sudo: bool,
) -> Result<Verdict> {
    if style::interactive() {
        print!("  {}  {name}", style::dim("RUN "));
        let _ = std::io::Write::flush(&mut std::io::stdout());
    }
    // With --sudo only the test binary runs as root, never cargo — under a lifeline that
    // kills it if we die (see proc.rs); each check still has its own time limits inside
    // (rstest's #[timeout]).
    let through_sudo = sudo && !proc::is_root();
    let mut cmd = if through_sudo {
        sudo_command(&std::env::current_exe()?, executable)
    } else {
        Command::new(executable)
    };
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .current_dir(cwd)
        .env("RUST_BACKTRACE", "0")
        .env("CARGO_MANIFEST_DIR", cwd);
    let stdin = if through_sudo {
        proc::Stdin::Lifeline
    } else {
        proc::Stdin::Null
    };
    let run = proc::run_captured_with(cmd, timeout, stdin)
        .with_context(|| format!("cannot run {}", executable.display()))?;
    if style::interactive() {
        print!("\r\x1b[2K");
    }
    Ok(outcome::classify(&run, name, root))
}

/// `sudo -n -E <xtask> lifeline -- <check binary>`: the check runs as root, in a process
/// group of its own, and dies when the runner's end of its stdin closes. `-n`: never
/// prompt (the password was asked once, up front, by [`sudo_validate`]); a prompt here
/// would wait unseen, as the check's output is captured.
pub fn sudo_command(xtask: &Path, executable: &Path) -> Command {
    let mut cmd = Command::new("sudo");
    cmd.args(["-n", "-E"])
        .arg(xtask)
        .args(["lifeline", "--"])
        .arg(executable);
    cmd
}

/// `sudo -v`: ask for the password once, in the foreground, before the captured runs.
fn sudo_validate() -> Result<()> {
    let ok = proc::run_visible(Command::new("sudo").arg("-v"))
        .context("`check --sudo` needs sudo: install it, or run the checks as root")?;
    if !ok {
        bail!("sudo refused (`sudo -v` failed): the eBPF checks need root");
    }
    Ok(())
}

/// A test's name as shown: every check lives in the module `check` (see tests/check.rs),
/// which is said once, not on every line.
fn short_name(name: &str) -> String {
    name.replacen("check::", "", 1)
}

/// `  FAIL  name  (the same error as above)`: one mistake, one message. `first` is the
/// test under which the error was shown; `just_above`: it is the last error printed.
fn print_repeat(name: &str, first: &str, just_above: bool) {
    let note = if just_above {
        "(the same error as above)".to_string()
    } else {
        format!("(the same error as {})", short_name(first))
    };
    println!(
        "  {}  {}  {}",
        style::red("FAIL"),
        short_name(name),
        style::dim(&note)
    );
}

/// `  OK    name`, `  FAIL  name` (+ details), `  SKIP  name (why)`.
pub fn print_verdict(name: &str, verdict: &Verdict, opts: Options) {
    let name = short_name(name);
    let indent = |lines: &[String]| {
        for line in lines {
            if line.trim().is_empty() {
                println!();
            } else {
                println!("        {line}");
            }
        }
    };
    match verdict {
        Verdict::Ok => println!("  {}    {name}", style::green("OK")),
        Verdict::Skip { reason } => {
            println!("  {}  {name} ({reason})", style::yellow("SKIP"));
            if opts.skips_fail {
                println!("        counted as a failure: skips are not allowed here (CI=true or --no-skip)");
            }
        }
        Verdict::NotImplemented { function, location } => {
            println!("  {}  {name}", style::red("FAIL"));
            println!(
                "        not implemented yet: {} {}",
                style::bold(function),
                style::dim(&format!("(the todo!() at {location})"))
            );
        }
        Verdict::TimedOut { after, details } => {
            println!("  {}  {name}", style::red("FAIL"));
            indent(details);
            println!(
                "        timed out after {} s: the test and every process it started were killed \
                 (more time: --timeout SECONDS)",
                after.as_secs()
            );
        }
        Verdict::Fail { details } => {
            println!("  {}  {name}", style::red("FAIL"));
            indent(details);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_counts_skips_as_failures_only_when_asked() {
        let skip = Verdict::Skip {
            reason: "no root".into(),
        };
        let mut tally = Tally::default();
        tally.count(&Verdict::Ok, false);
        tally.count(&skip, false);
        tally.count(&skip, true);
        tally.count(
            &Verdict::Fail {
                details: Vec::new(),
            },
            false,
        );
        assert_eq!(
            tally.summary_line(),
            "summary: 1 passed, 2 failed, 1 skipped"
        );
    }

    #[test]
    fn sudo_runs_only_the_check_under_a_lifeline() {
        let cmd = sudo_command(Path::new("/t/xtask"), Path::new("/t/deps/check-1"));
        assert_eq!(cmd.get_program(), "sudo");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(
            args,
            ["-n", "-E", "/t/xtask", "lifeline", "--", "/t/deps/check-1"]
        );
    }

    #[test]
    fn done_needs_every_check_to_pass() {
        let mut report = Report {
            compiled: true,
            ..Report::default()
        };
        assert!(!report.all_passed(), "no tests is not done");
        report.tally.passed = 2;
        assert!(report.all_passed());
        report.tally.skipped = 1;
        assert!(!report.all_passed());
    }
}
