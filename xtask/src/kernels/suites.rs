//! The suites the kernel matrix runs in each guest: built on the host (cargo never runs in
//! the guest), described in a plan file, run in the guest by this same xtask binary
//! (`kernels --guest PLAN`), one process per test as `cargo xtask check` does.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use course::Course;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::cargo_build::{self, Build};
use crate::check_runner;
use crate::outcome::Verdict;
use crate::proc;

/// The suites, in the order they run; `--suite` takes these names. Without `--suite`, all
/// but `pwru` (the article's tool beside the course's tracer on the story, [`super::pwru`]:
/// it needs kprobes, and takes minutes to attach where kprobe-multi is missing, as on 6.1;
/// CI runs it on 6.12).
pub const SUITES: [&str; 5] = ["tracer", "netlab", "repro", "checks", "pwru"];

/// What to run: test binaries (each test in its own process) or one command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Run {
    Tests {
        executable: PathBuf,
        cwd: PathBuf,
    },
    Command {
        /// Shown in the failure list.
        label: String,
        argv: Vec<String>,
        cwd: PathBuf,
        /// The output must contain this (e.g. the hop table's heading).
        expect: String,
    },
    /// pwru beside the course's tracer on `lab repro`, compared ([`super::pwru`]).
    Pwru {
        programs: super::pwru::Programs,
        cwd: PathBuf,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Suite {
    pub name: String,
    pub runs: Vec<Run>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Count a SKIP as a failure (CI=true).
    pub skips_fail: bool,
    /// Per-test time limit, seconds.
    pub timeout: u64,
    pub suites: Vec<Suite>,
}

/// What a suite did in a guest.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Outcome {
    pub name: String,
    pub passed: u32,
    pub failed: u32,
    pub skipped: u32,
    pub seconds: f64,
    /// `binary test` or label of each failure, with its first lines.
    pub failures: Vec<String>,
}

/// `cargo test <args> --no-run --message-format=json` → the test executables it built.
fn test_executables(root: &Path, args: &[&str]) -> Result<Vec<PathBuf>> {
    let out = proc::cargo()
        .current_dir(root)
        .arg("test")
        .args(args)
        .args(["--no-run", "--message-format=json"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !out.status.success() {
        bail!("cargo test {} --no-run failed", args.join(" "));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["profile"]["test"] == true)
        .filter_map(|m| m["executable"].as_str().map(PathBuf::from))
        .collect())
}

/// Builds everything `wanted` needs on the host, and returns the plan.
pub fn build_plan(root: &Path, course: &Course, wanted: &[String], timeout: u64) -> Result<Plan> {
    let mut suites = Vec::new();
    let want = |s: &str| (wanted.is_empty() && s != "pwru") || wanted.iter().any(|w| w == s);
    if want("tracer") {
        let runs = test_executables(root, &["-p", "tracer", "--test", "root"])?
            .into_iter()
            .map(|executable| Run::Tests {
                executable,
                cwd: root.join("tracer/tracer"),
            })
            .collect();
        suites.push(Suite {
            name: "tracer".into(),
            runs,
        });
    }
    if want("netlab") {
        let runs = test_executables(root, &["-p", "netlab"])?
            .into_iter()
            .map(|executable| Run::Tests {
                executable,
                cwd: root.join("crates/netlab"),
            })
            .collect();
        suites.push(Suite {
            name: "netlab".into(),
            runs,
        });
    }
    if want("repro") {
        build_lab(root)?;
        suites.push(Suite {
            name: "repro".into(),
            runs: vec![Run::Command {
                label: "lab repro".into(),
                argv: vec![
                    target_dir(root).join("debug/lab").display().to_string(),
                    "repro".into(),
                ],
                cwd: root.to_path_buf(),
                expect: "NO_SOCKET".into(),
            }],
        });
    }
    if want("checks") {
        let mut runs = Vec::new();
        for ex in &course.exercises {
            let package = format!("solution-{}", ex.slug);
            match cargo_build::build_check(root, &package, false)? {
                Build::Built(executable) => runs.push(Run::Tests {
                    executable,
                    cwd: root.join("solutions").join(&ex.dir),
                }),
                Build::Failed { culprits } => {
                    bail!("{package}'s checks do not build ({})", culprits.join(", "))
                }
            }
        }
        suites.push(Suite {
            name: "checks".into(),
            runs,
        });
    }
    if want("pwru") {
        build_lab(root)?;
        let fetching = std::time::Instant::now();
        let (pwru, version) = super::fetch::fetch_pwru(&root.join(".course/kernels"))?;
        eprintln!(
            "kernels: pwru {version} ready in {:.1} s",
            fetching.elapsed().as_secs_f64()
        );
        suites.push(Suite {
            name: "pwru".into(),
            runs: vec![Run::Pwru {
                programs: super::pwru::Programs {
                    pwru,
                    pwru_version: format!("pwru {version} (Debian trixie)"),
                    // Built by `matrix` before the boot (the guest records its capabilities).
                    tracer: target_dir(root).join("debug/tracer"),
                    lab: target_dir(root).join("debug/lab"),
                },
                cwd: root.to_path_buf(),
            }],
        });
    }
    Ok(Plan {
        skips_fail: check_runner::in_ci(),
        timeout,
        suites,
    })
}

/// `lab` with the hop table (what `cargo xtask repro` runs when the eBPF toolchain is there).
fn build_lab(root: &Path) -> Result<()> {
    let status = proc::cargo()
        .current_dir(root)
        .args(["build", "-p", "lab", "--features", "hop-table"])
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build -p lab --features hop-table failed");
    }
    Ok(())
}

pub fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The first lines of a failure, for the report.
fn first_lines(details: &[String]) -> String {
    details
        .iter()
        .take(3)
        .map(|l| l.trim())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// In the guest: runs the plan, writing `results.json` after every suite (a guest that dies
/// half-way still leaves what it did).
pub fn run_in_guest(root: &Path, plan_path: &Path) -> Result<bool> {
    let plan: Plan = serde_json::from_str(&std::fs::read_to_string(plan_path)?)?;
    let results_path = plan_path.with_file_name("results.json");
    let timeout = Duration::from_secs(plan.timeout);
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut all_ok = true;
    for suite in &plan.suites {
        let started = Instant::now();
        let mut o = Outcome {
            name: suite.name.clone(),
            ..Default::default()
        };
        eprintln!("guest: suite {}", suite.name);
        for run in &suite.runs {
            match run {
                Run::Tests { executable, cwd } => {
                    let bin = executable
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let tests = match check_runner::list_tests(executable, cwd) {
                        Ok(t) => t,
                        Err(e) => {
                            o.failed += 1;
                            o.failures.push(format!("{bin}: {e:#}"));
                            continue;
                        }
                    };
                    for test in tests {
                        let verdict =
                            check_runner::run_one(executable, cwd, &test, timeout, root, false)
                                .unwrap_or_else(|e| Verdict::Fail {
                                    details: vec![format!("{e:#}")],
                                });
                        eprintln!("guest:   {bin} {test}: {verdict:?}");
                        match &verdict {
                            Verdict::Ok => o.passed += 1,
                            Verdict::Skip { reason } if !plan.skips_fail => {
                                o.skipped += 1;
                                o.failures.push(format!("SKIP {bin} {test}: {reason}"));
                            }
                            Verdict::Fail { details } | Verdict::TimedOut { details, .. } => {
                                o.failed += 1;
                                o.failures
                                    .push(format!("{bin} {test}: {}", first_lines(details)));
                            }
                            other => {
                                o.failed += 1;
                                o.failures.push(format!("{bin} {test}: {other:?}"));
                            }
                        }
                    }
                }
                Run::Pwru { programs, cwd } => {
                    let dir = plan_path.parent().unwrap_or(Path::new("."));
                    match super::pwru::run_in_guest(programs, cwd, dir, timeout * 2) {
                        Ok(c) => {
                            eprintln!(
                                "guest:   pwru beside the tracer:\n{}",
                                super::pwru::render(&c)
                            );
                            if c.failures.is_empty() {
                                o.passed += 1;
                            } else {
                                o.failed += 1;
                                o.failures.push(format!(
                                    "pwru beside the tracer: {}",
                                    c.failures.join("; ")
                                ));
                            }
                        }
                        Err(e) => {
                            o.failed += 1;
                            o.failures.push(format!("pwru beside the tracer: {e:#}"));
                        }
                    }
                }
                Run::Command {
                    label,
                    argv,
                    cwd,
                    expect,
                } => {
                    let mut cmd = Command::new(&argv[0]);
                    cmd.args(&argv[1..]).current_dir(cwd);
                    let run = proc::run_captured(cmd, timeout * 2)?;
                    eprintln!("guest:   {label}:\n{}", run.output);
                    if run.success() && run.output.contains(expect.as_str()) {
                        o.passed += 1;
                    } else {
                        o.failed += 1;
                        let tail: Vec<&str> = run.output.lines().rev().take(3).collect();
                        o.failures.push(format!(
                            "{label}: {} (no {expect:?} or exit {:?}): {}",
                            if run.timed_out { "timed out" } else { "failed" },
                            run.status.and_then(|s| s.code()),
                            tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
                        ));
                    }
                }
            }
        }
        o.seconds = started.elapsed().as_secs_f64();
        all_ok &= o.failed == 0;
        outcomes.push(o);
        std::fs::write(&results_path, serde_json::to_string_pretty(&outcomes)?)?;
    }
    Ok(all_ok)
}
