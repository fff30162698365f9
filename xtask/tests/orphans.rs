//! A check never outlives its runner (issue 8, "A check outlives its runner").
//!
//! Each test builds a tiny course of its own (one exercise whose only check hangs),
//! runs the real `xtask check` binary on it, kills or hangs up the runner, and then looks
//! for the check's process by a marker in its environment (`/proc/*/environ`): it must
//! be gone within a few seconds. Before the fix the check was reparented to init and ran
//! on forever.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long a killed check may take to disappear.
const GRACE: Duration = Duration::from_secs(5);

/// A one-exercise course whose check hangs forever, after writing its pid to the file
/// named by `$ORPHAN_STARTED`.
fn hanging_course() -> PathBuf {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("orphan-course");
    let files = [
        (
            "course.toml",
            r#"[[exercise]]
id = "exercise-1"
slug = "hang"
title = "A check that never ends"
dir = "01-hang"
chapter = "ch01-hang.md"
needs_root = false
hint = "none"
"#,
        ),
        (
            "Cargo.toml",
            "[workspace]\nresolver = \"2\"\nmembers = [\"exercises/01-hang\"]\n",
        ),
        (
            "exercises/01-hang/Cargo.toml",
            "[package]\nname = \"exercise-hang\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n",
        ),
        ("exercises/01-hang/src/lib.rs", "//! Nothing to do.\n"),
        (
            "exercises/01-hang/tests/check.rs",
            r#"#[test]
fn never_ends() {
    let started = std::env::var("ORPHAN_STARTED").expect("ORPHAN_STARTED is set");
    std::fs::write(started, std::process::id().to_string()).unwrap();
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}
"#,
        ),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text) {
            std::fs::write(&path, text).unwrap();
        }
    }
    root
}

/// `xtask check 1` in the hanging course, tagged with `marker` (inherited by every
/// process it starts); returns once the check runs, with the runner.
fn runner_with_a_running_check(marker: &str) -> Child {
    let root = hanging_course();
    let started = root.join(format!("{marker}.started"));
    let _ = std::fs::remove_file(&started);
    let runner = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["check", "1", "--timeout", "600"])
        .current_dir(&root)
        // Else the course would be found from xtask's own manifest directory.
        .env_remove("CARGO_MANIFEST_DIR")
        .env("CARGO_TARGET_DIR", root.join("target"))
        .env("ORPHAN_STARTED", &started)
        .env("ORPHAN_MARKER", marker)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start xtask");
    // The first run builds the check binary (a crate with no dependencies).
    let deadline = Instant::now() + Duration::from_secs(300);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the hanging check never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    runner
}

/// The live processes whose environment holds `ORPHAN_MARKER=marker` (zombies excluded).
fn processes_marked(marker: &str) -> Vec<u32> {
    let needle = format!("ORPHAN_MARKER={marker}");
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let marked = environ
            .split(|byte| *byte == 0)
            .any(|var| var == needle.as_bytes());
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(") ")
                    .map(|(_, rest)| rest.starts_with('Z'))
            })
            .unwrap_or(true);
        if marked && !zombie {
            found.push(pid);
        }
    }
    found
}

/// Wait up to [`GRACE`] for every marked process to be gone; the survivors otherwise.
fn survivors_after_grace(marker: &str) -> Vec<u32> {
    let deadline = Instant::now() + GRACE;
    loop {
        let left = processes_marked(marker);
        if left.is_empty() || Instant::now() >= deadline {
            for pid in &left {
                // Don't leave the orphans of a failed run behind.
                let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
            return left;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[test]
fn a_sigkilled_runner_takes_its_check_with_it() {
    let marker = unique("sigkill");
    let mut runner = runner_with_a_running_check(&marker);
    runner.kill().unwrap();
    runner.wait().unwrap();
    let left = survivors_after_grace(&marker);
    assert!(
        left.is_empty(),
        "processes {left:?} of the check were still running {GRACE:?} after the runner was SIGKILLed"
    );
}

#[test]
fn a_hung_up_runner_stops_its_check_and_exits_129() {
    let marker = unique("sighup");
    let mut runner = runner_with_a_running_check(&marker);
    kill(Pid::from_raw(runner.id() as i32), Signal::SIGHUP).unwrap();
    let status = runner.wait().unwrap();
    let left = survivors_after_grace(&marker);
    assert!(
        left.is_empty(),
        "processes {left:?} of the check were still running {GRACE:?} after SIGHUP"
    );
    assert_eq!(
        status.code(),
        Some(129),
        "the shell's code for SIGHUP is 128 + 1: {status}"
    );
}

/// What `check --sudo` relies on: the root-side lifeline kills its program as soon as
/// the runner's end of its stdin closes (sudo itself is not needed to show that).
#[test]
fn a_lifeline_kills_its_program_when_the_runner_goes() {
    let marker = unique("lifeline");
    let mut lifeline = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["lifeline", "--", "sleep", "600"])
        .env("ORPHAN_MARKER", &marker)
        .stdin(Stdio::piped())
        .spawn()
        .expect("cannot start xtask lifeline");
    let deadline = Instant::now() + Duration::from_secs(30);
    while processes_marked(&marker).len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the lifeline's sleep never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(lifeline.stdin.take());
    let status = lifeline.wait().unwrap();
    assert!(!status.success(), "the program was killed: {status}");
    let left = survivors_after_grace(&marker);
    assert!(
        left.is_empty(),
        "processes {left:?} were still running {GRACE:?} after the lifeline's stdin closed"
    );
}
