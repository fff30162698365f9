//! `cargo xtask` — the course's command-line companion.
//!
//! Following the [xtask convention](https://github.com/matklad/cargo-xtask), this is an
//! ordinary binary of the workspace, aliased in `.cargo/config.toml`
//! (`xtask = "run --quiet --package xtask --"`). It **orchestrates** `cargo`, `git` and
//! the machine's tools; it never re-does what they do, and it contains no network code.
//!
//! Map of the modules:
//! - [`cli`] — the commands and flags;
//! - [`check_runner`], [`cargo_build`], [`outcome`], [`proc`] — `check`: build, list,
//!   run one process per test, classify;
//! - [`progress`] — `.course/progress.json` and the list's states;
//! - [`watch`] — re-check on save;
//! - [`doctor`], [`setup`] — is the machine ready, and make it so;
//! - [`devcheck`], [`ci`], [`snapshot`], [`rootless`], [`bench`] — for course authors and CI.

mod bench;
mod book;
mod cargo_build;
mod check_runner;
mod ci;
mod cli;
mod debian;
mod devcheck;
mod doctor;
mod kernels;
mod outcome;
mod proc;
mod progress;
mod rootless;
mod setup;
mod snapshot;
mod spinner;
mod style;
mod watch;

use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use course::Course;

use crate::check_runner::{Options, Tally};
use crate::cli::{CheckArgs, Cli, Command as Cmd};
use crate::progress::{Progress, State};

fn main() -> ExitCode {
    proc::install_interrupt_handler();
    let cli = Cli::parse();
    if let Cmd::Lifeline { program } = &cli.command {
        // Runs as root behind sudo, possibly outside the course's directory: no course.
        return proc::lifeline(program).unwrap_or_else(|error| {
            eprintln!("{} {error:#}", style::red("error:"));
            ExitCode::FAILURE
        });
    }
    match run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{} {error:#}", style::red("error:"));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let (root, course) = Course::discover()?;
    match cli.command {
        Cmd::List => list(&root, &course),
        Cmd::Check(args) => check(&root, &course, &args),
        Cmd::Hint { name } => hint(&root, &course, &name),
        Cmd::Watch(timeout) => watch::watch(&root, &course, timeout.duration()),
        Cmd::Reset { name } => reset(&root, &course, &name),
        Cmd::Doctor => doctor::doctor(&root),
        Cmd::Setup(args) => setup::setup(&root, args),
        Cmd::Repro { args } => repro(&root, &args),
        Cmd::Lab { args } => lab(&root, &args),
        Cmd::DevCheck(timeout) => devcheck::dev_check(&root, &course, timeout.duration()),
        Cmd::Test(timeout) => ci::test(&root, &course, timeout.duration()),
        Cmd::Bench(timeout) => bench::bench(&root, &course, timeout.duration()),
        Cmd::Book(args) => book::book(&root, &args),
        Cmd::Kernels(args) => kernels::kernels(&root, &course, &args),
        Cmd::Lifeline { program } => proc::lifeline(&program),
    }
}

/// `ExitCode` from "did everything pass?".
pub fn exit(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// `cargo xtask list`: one line per exercise, then the progress bar.
fn list(root: &Path, course: &Course) -> Result<ExitCode> {
    let progress = Progress::load(root);
    let states = progress.states(root, course);
    println!("{}", style::bold("  id           state         title"));
    for (ex, state) in course.exercises.iter().zip(&states) {
        let label = format!("{:<12}", state.label());
        let label = match state {
            State::Done => style::green(&label),
            State::Failing => style::red(&label),
            State::NotStarted => style::dim(&label),
        };
        let root_note = if ex.needs_root { "  (needs root)" } else { "" };
        println!("  {:<12} {label}  {}{root_note}", ex.id, ex.title);
    }
    println!();
    println!("{}", progress_line(&states));
    if let Some(next) = course
        .exercises
        .iter()
        .zip(&states)
        .find(|(_, s)| **s != State::Done)
    {
        println!(
            "next: cargo xtask check {}   (or: cargo xtask watch)",
            next.0.id
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `[#####-----] 1/3 done`
pub fn progress_line(states: &[State]) -> String {
    let done = states.iter().filter(|s| **s == State::Done).count();
    progress::bar(done, states.len())
}

/// `cargo xtask check …`
fn check(root: &Path, course: &Course, args: &CheckArgs) -> Result<ExitCode> {
    let exercises = match (&args.name, args.all) {
        (Some(name), _) => vec![course.find(name)?],
        (None, true) => course.exercises.iter().collect(),
        (None, false) => {
            match current_exercise(root, course, args.solution) {
                Some(ex) => {
                    println!(
                    "{}",
                    style::dim(&format!(
                        "checking your current exercise, {} (another one: cargo xtask check N; every one: --all)",
                        ex.id
                    ))
                );
                    vec![ex]
                }
                None => {
                    println!(
                    "{}",
                    style::green("Every exercise is done. `cargo xtask check --all` checks them all again.")
                );
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let opts = Options {
        sudo: args.sudo,
        solution: args.solution,
        timeout: args.timeout.duration(),
        skips_fail: args.no_skip || check_runner::in_ci(),
        verbose: true,
    };
    let tally = check_exercises(root, course, &exercises, opts)?;
    println!("{}", tally.summary_line());
    Ok(exit(tally.failed == 0))
}

/// The learner's current exercise: the first that is not done (as `watch` and `list`
/// say). With `--solution` there is no progress to follow: the first exercise.
fn current_exercise<'c>(
    root: &Path,
    course: &'c Course,
    solution: bool,
) -> Option<&'c course::Exercise> {
    if solution {
        return course.exercises.first();
    }
    let states = Progress::load(root).states(root, course);
    course
        .exercises
        .iter()
        .zip(&states)
        .find(|(_, state)| **state != State::Done)
        .map(|(ex, _)| ex)
}

/// Check several exercises, record progress (for the learner's own code), and return
/// the combined tally. Shared by `check` and `bench`.
pub fn check_exercises(
    root: &Path,
    course: &Course,
    exercises: &[&course::Exercise],
    opts: Options,
) -> Result<Tally> {
    let mut tally = Tally::default();
    for ex in exercises {
        let report = check_runner::run_exercise(root, ex, opts)?;
        tally.add(report.tally);
        if !opts.solution {
            let mut progress = Progress::load(root);
            let hash = progress::hash_dir(&ex.exercise_dir(root));
            progress.record(ex, report.all_passed(), hash, report.tally.counts());
            progress.save(root)?;
        }
        println!();
    }
    if !opts.solution {
        let states = Progress::load(root).states(root, course);
        println!("{}", progress_line(&states));
    }
    Ok(tally)
}

/// `cargo xtask hint …`
fn hint(root: &Path, course: &Course, name: &str) -> Result<ExitCode> {
    let ex = course.find(name)?;
    println!("{}", style::bold(&format!("{} · {}", ex.id, ex.title)));
    println!();
    println!("{}", ex.hint.trim());
    println!();
    let chapter = ex.chapter_path(root);
    println!(
        "The chapter that explains it: {}",
        chapter.strip_prefix(root).unwrap_or(&chapter).display()
    );
    println!("The code to edit:             exercises/{}/", ex.dir);
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask reset …`: `git checkout HEAD -- exercises/<dir>`, and forget its progress.
fn reset(root: &Path, course: &Course, name: &str) -> Result<ExitCode> {
    let ex = course.find(name)?;
    let rel = format!("exercises/{}", ex.dir);
    let ok = proc::run_visible(
        Command::new("git")
            .current_dir(root)
            .args(["checkout", "HEAD", "--", &rel]),
    )?;
    if !ok {
        anyhow::bail!(
            "git could not restore {rel} (is this a git checkout, with {rel} committed?)"
        );
    }
    let mut progress = Progress::load(root);
    progress.forget(ex);
    progress.save(root)?;
    println!(
        "Restored every tracked file of {rel} as it is in git (HEAD) and cleared its progress."
    );
    println!("Files you added there yourself were left alone: `git status {rel}` shows them.");
    Ok(ExitCode::SUCCESS)
}

/// `cargo xtask lab …`: becomes `cargo run --quiet -p lab -- …` (exec, so Ctrl-C and the
/// exit code belong to the lab).
fn lab(root: &Path, args: &[String]) -> Result<ExitCode> {
    run_lab(root, &[], args)
}

/// `cargo run -p lab [cargo_args] -- args`, replacing this process (Ctrl-C and the exit
/// code belong to the lab).
fn run_lab(root: &Path, cargo_args: &[&str], args: &[String]) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let error = proc::cargo()
        .current_dir(root)
        .args(["run", "--quiet", "-p", "lab"])
        .args(cargo_args)
        .arg("--")
        .args(args)
        .exec();
    Err(error).context("cannot run `cargo run -p lab`")
}

/// `cargo xtask repro`: make sure the first exercises' tools are there, then run the lab.
///
/// The hop table (step 4 of the story, its turning point) needs the course's eBPF
/// tracer, and building that needs LLVM, nightly's rust-src and bpf-linker. As root,
/// repro installs what is missing (saying first what, and about how long); otherwise
/// it prints the commands, and the story still reproduces, without the table.
fn repro(root: &Path, args: &[String]) -> Result<ExitCode> {
    if !setup::ensure_basics(root)? {
        println!("The lab cannot run without those; see above, then try again.");
        return Ok(ExitCode::FAILURE);
    }
    let mut lab_args = vec!["repro".to_string()];
    lab_args.extend(args.iter().cloned());
    let mut hop_table = setup::ebpf_toolchain_ready();
    if !hop_table && proc::is_root() {
        println!(
            "{} the hop table (step 4) needs the course's eBPF tracer; building it needs what \
             this machine lacks. As root, repro installs it now:",
            style::bold("repro:")
        );
        for line in setup::ebpf_toolchain_plan() {
            println!("  - {line}");
        }
        println!(
            "  (once only; Ctrl-C stops, and the next `cargo xtask repro` goes on from there)"
        );
        match setup::install_ebpf_toolchain() {
            Ok(()) => {
                hop_table = setup::ebpf_toolchain_ready();
                if !hop_table {
                    println!(
                        "{} installed, but bpf-linker is not on PATH: cargo installs into \
                         ~/.cargo/bin (or $CARGO_INSTALL_ROOT/bin); add that to PATH. \
                         The story runs on, without the hop table.",
                        style::yellow("repro:")
                    );
                }
            }
            Err(error) => println!(
                "{} {error:#}\nThe story runs on, without the hop table.",
                style::yellow("repro:")
            ),
        }
    } else if !hop_table {
        println!(
            "(no hop table this time: the eBPF tracer needs nightly's rust-src and bpf-linker to \
             build, and root to run. As root, `cargo xtask repro` installs them; or run:"
        );
        for command in setup::ebpf_toolchain_commands() {
            println!("    {command}");
        }
        println!("then `cargo xtask repro` again.)");
    }
    if hop_table {
        // Build first, with progress: the first build compiles the eBPF programs
        // (nightly, build-std) and takes minutes; `cargo run --quiet` would be silent.
        let failed = spinner::cargo_build(
            root,
            &["-p", "lab", "--features", "hop-table"],
            "building the lab with the eBPF tracer",
            "building the lab with the eBPF tracer (the first time: 2 to 6 minutes; \
             the tracer's build script compiles the eBPF programs)",
        )?;
        match failed {
            None => return run_lab(root, &["--features", "hop-table"], &lab_args),
            Some(ran) => {
                ran.print_tail();
                println!("The eBPF tracer did not build (above); the story runs on, without the hop table.");
            }
        }
    }
    lab(root, &lab_args)
}
