//! `cargo xtask bench`: how long the course makes a learner wait. Numbers, not a test.
//!
//! 1. The world up and down: `cargo run --release -p lab -- bench` (the lab times
//!    itself and prints its numbers).
//! 2. `check --all --solution` end to end, wall clock, after a warm build (so it
//!    measures running the checks, not compiling them).

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Result;
use course::Course;

use crate::cargo_build::{self, Build};
use crate::check_runner::Options;
use crate::{proc, style};

pub fn bench(root: &Path, course: &Course, timeout: Duration) -> Result<ExitCode> {
    println!(
        "{}",
        style::bold("── 1. the world, up and down (cargo run --release -p lab -- bench) ──")
    );
    let start = Instant::now();
    let lab_ok = proc::run_visible(proc::cargo().current_dir(root).args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "lab",
        "--",
        "bench",
    ]))?;
    let lab_time = start.elapsed();

    println!();
    println!(
        "{}",
        style::bold("── 2. check --all --solution (after a warm build) ──")
    );
    for ex in &course.exercises {
        if let Build::Failed { .. } = cargo_build::build_check(root, &ex.solution_package(), false)?
        {
            println!(
                "{} does not compile; its time would mean nothing",
                ex.solution_package()
            );
        }
    }
    let opts = Options {
        sudo: false,
        solution: true,
        timeout,
        skips_fail: false,
        verbose: true,
    };
    let all: Vec<&course::Exercise> = course.exercises.iter().collect();
    let start = Instant::now();
    let tally = crate::check_exercises(root, course, &all, opts)?;
    let checks_time = start.elapsed();

    println!();
    println!("{}", style::bold("bench results"));
    println!(
        "  lab bench (incl. cargo's up-to-date check): {:>8.2} s{}",
        lab_time.as_secs_f64(),
        if lab_ok {
            ""
        } else {
            "  (the lab reported a failure)"
        }
    );
    println!(
        "  check --all --solution, warm:               {:>8.2} s  ({})",
        checks_time.as_secs_f64(),
        tally.counts()
    );
    Ok(crate::exit(lab_ok && tally.failed == 0))
}
