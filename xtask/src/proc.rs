//! Running child processes: with a time limit, in their own process group, output captured,
//! and never outliving the runner.
//!
//! A check may start helpers of its own (servers, `ip`, `iptables`…). To be sure nothing
//! survives a timeout, each test runs as the leader of a fresh **process group**, and
//! the whole group is killed (`killpg(group, SIGKILL)`) when its time is up — and again,
//! to sweep up stragglers, once the leader has exited.
//!
//! A process in another group does not receive the terminal's Ctrl-C, nor the SIGHUP of
//! a closing terminal. So the runner handles SIGINT, SIGTERM and SIGHUP
//! ([`install_interrupt_handler`]): it kills the current group and exits with the
//! shell's code for the signal (130, 143, 129). And for the one signal nobody can catch,
//! SIGKILL, every child asks the kernel to kill it when the runner dies
//! ([`dies_with_runner`]: `PR_SET_PDEATHSIG`). A check run through `sudo` loses that
//! request (the kernel clears it when a set-user-ID program like sudo starts), so it
//! runs under a [`lifeline`] instead: a root process that kills the check as soon as the
//! pipe it holds from the runner reads end-of-file — which happens however the runner
//! died.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::unistd::{getpid, getppid, Pid, Uid};

/// The process group of the test being run right now (0: none).
static CURRENT_GROUP: AtomicI32 = AtomicI32::new(0);

/// The signals that stop the runner: Ctrl-C, `kill`, and the terminal closing.
const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The exit code a shell gives a program ended by `signal`: 128 + its number.
pub fn exit_code_for(signal: Signal) -> i32 {
    128 + signal as i32
}

/// Make Ctrl-C, SIGTERM and SIGHUP kill the running test's process group too, then
/// exit with 128 + the signal's number. Call once, early in `main`.
///
/// Why a handler, not a thread waiting in `sigwait`: waiting needs the signals blocked,
/// and children inherit a blocked mask (std does not reset it), so every program we
/// start would ignore Ctrl-C. A handler is reset to the default action by `exec`: the
/// children start clean.
pub fn install_interrupt_handler() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for signal in STOP_SIGNALS {
        // SAFETY: installing a handler has no safe API; `on_stop_signal` only makes
        // async-signal-safe calls (kill and _exit) and touches only an atomic.
        if let Err(error) = unsafe { sigaction(signal, &action) } {
            eprintln!("warning: cannot handle {signal} ({error}): it may leave a check running");
        }
    }
}

extern "C" fn on_stop_signal(signal: nix::libc::c_int) {
    kill_group(CURRENT_GROUP.load(Ordering::SeqCst));
    // SAFETY: `_exit` is async-signal-safe and ends the process at once, running no
    // destructors nor atexit handlers (which a signal handler must not run); neither
    // std nor nix offers it safely (std::process::exit is not async-signal-safe).
    unsafe { nix::libc::_exit(128 + signal) }
}

/// Ask the kernel to SIGKILL the child `cmd` starts as soon as this process dies, even
/// by SIGKILL, so that no check keeps running (with eBPF programs attached, or spinning
/// a CPU) after the runner is gone.
///
/// The parent-death signal fires when the *thread* that spawned the child ends: spawn
/// from a thread that lives as long as the child should (the runner spawns from `main`).
pub fn dies_with_runner(cmd: &mut Command) -> &mut Command {
    let runner = getpid();
    // SAFETY: `pre_exec` runs between fork and exec in the child, where only
    // async-signal-safe calls are allowed. The closure makes two system calls (prctl,
    // getppid) through nix's thin wrappers, which neither allocate nor lock, and on
    // failure returns an `io::Error` built from an errno (no allocation either).
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
            // The runner may have died between fork and prctl: then no signal will ever
            // come, and our parent is already someone else (init or a subreaper).
            if getppid() != runner {
                return Err(nix::errno::Errno::ESRCH.into());
            }
            Ok(())
        })
    }
}

/// What a finished (or killed) process left behind.
#[derive(Debug, Clone)]
pub struct Captured {
    /// `None` when it was killed for running out of time.
    pub status: Option<ExitStatus>,
    pub timed_out: bool,
    /// stdout and stderr, interleaved as they were written (one pipe for both).
    pub output: String,
    pub elapsed: Duration,
}

impl Captured {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// Run `cmd` to completion or until `limit`, capturing stdout+stderr together.
///
/// Takes the `Command` by value: it owns the pipe's write ends, and only dropping it
/// lets the reader see end-of-file once the child exits.
pub fn run_captured(cmd: Command, limit: Duration) -> Result<Captured> {
    run_captured_with(cmd, limit, Stdin::Null)
}

/// What a captured child reads on its standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdin {
    /// `/dev/null`.
    Null,
    /// A pipe nobody writes to, whose write end only this process holds: it reads
    /// end-of-file when the run is over or this process dies (see [`lifeline`]).
    Lifeline,
}

/// [`run_captured`], choosing what the child reads on stdin.
pub fn run_captured_with(mut cmd: Command, limit: Duration, stdin: Stdin) -> Result<Captured> {
    let program = format!("{:?}", cmd.get_program());
    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    // Both ends are close-on-exec: the write end stays in this process only.
    let mut lifeline_writer = None;
    match stdin {
        Stdin::Null => {
            cmd.stdin(Stdio::null());
        }
        Stdin::Lifeline => {
            let (read_end, write_end) = std::io::pipe().context("cannot create a pipe")?;
            cmd.stdin(read_end);
            lifeline_writer = Some(write_end);
        }
    }
    cmd.stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
    dies_with_runner(&mut cmd);
    let start = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    drop(cmd);
    let group = child.id() as i32;
    CURRENT_GROUP.store(group, Ordering::SeqCst);

    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = reader.read_to_end(&mut buffer);
        let _ = tx.send(buffer);
    });

    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() >= limit {
            kill_group(group);
            let _ = child.wait();
            timed_out = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    // Sweep up anything the test left running in its group (it would also hold the pipe).
    kill_group(group);
    CURRENT_GROUP.store(0, Ordering::SeqCst);
    // A lifeline (behind sudo, where the kill above may be refused) ends its check now.
    drop(lifeline_writer);
    let bytes = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    Ok(Captured {
        status,
        timed_out,
        output: String::from_utf8_lossy(&bytes).into_owned(),
        elapsed,
    })
}

/// SIGKILL every process of `group` that we may signal (0: no group, nothing to do).
fn kill_group(group: i32) {
    if group > 0 {
        // ESRCH (nobody left) and EPERM (root's processes behind sudo) are expected.
        let _ = killpg(Pid::from_raw(group), Signal::SIGKILL);
    }
}

/// `cargo xtask lifeline -- PROGRAM ARGS…` (hidden; what `check --sudo` runs as root).
///
/// Runs the program in its own process group, and kills that group when standard input
/// reads end-of-file: the runner holds the only write end of that pipe, so that happens
/// when the runner finishes with this check — or dies, even by SIGKILL, which no
/// parent-death signal could tell us through sudo. Exits with the program's code (or
/// 128 + the signal that ended it).
pub fn lifeline(program: &[String]) -> Result<ExitCode> {
    let (first, args) = program
        .split_first()
        .context("lifeline: no program to run")?;
    let mut cmd = Command::new(first);
    cmd.args(args).stdin(Stdio::null()).process_group(0);
    // We are the child's parent here, with no set-user-ID exec in between: this holds.
    dies_with_runner(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {first}"))?;
    let group = child.id() as i32;
    CURRENT_GROUP.store(group, Ordering::SeqCst);
    std::thread::spawn(move || {
        // Nothing is ever written: this returns when the runner closes its end or dies.
        let _ = std::io::stdin().lock().read_to_end(&mut Vec::new());
        kill_group(group);
        std::process::exit(exit_code_for(Signal::SIGKILL));
    });
    let status = child.wait()?;
    kill_group(group);
    let code = status
        .code()
        .or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            status.signal().map(|n| 128 + n)
        })
        .unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}

/// Run a command with inherited stdio (the user sees everything); Ok(true) if it succeeded.
pub fn run_visible(cmd: &mut Command) -> Result<bool> {
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {:?} — is it installed?", cmd.get_program()))?;
    Ok(status.success())
}

/// Run a command quietly and return its stdout (None if it could not run or failed).
pub fn output_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Find an executable on PATH, also looking in the sbin directories that a normal
/// user's PATH often lacks (`ip`, `iptables` and `nft` live there).
pub fn which(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let extra = ["/usr/local/sbin", "/usr/sbin", "/sbin"].map(std::path::PathBuf::from);
    std::env::split_paths(&path)
        .chain(extra)
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Are we root (effective uid 0)?
pub fn is_root() -> bool {
    Uid::effective().is_root()
}

/// The cargo that runs us (`$CARGO`), or `cargo` from PATH.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Command::new(cargo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_captured_from_both_streams() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2; exit 3"]);
        let run = run_captured(cmd, Duration::from_secs(10)).unwrap();
        assert_eq!(run.status.unwrap().code(), Some(3));
        assert!(run.output.contains("out\n") && run.output.contains("err\n"));
        assert!(!run.timed_out);
    }

    #[test]
    fn the_whole_group_is_killed_on_timeout() {
        // The grandchild `sleep` keeps the pipe open: only killing the group ends it.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 30 & sleep 30; echo never"]);
        let start = Instant::now();
        let run = run_captured(cmd, Duration::from_millis(300)).unwrap();
        assert!(run.timed_out);
        assert!(run.status.is_none());
        assert!(
            start.elapsed() < Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
        assert!(!run.output.contains("never"));
    }
}
