//! Running child processes: with a time limit, in their own process group, output captured.
//!
//! A check may start helpers of its own (servers, `ip`, `iptables`…). To be sure nothing
//! survives a timeout, each test runs as the leader of a fresh **process group**, and
//! the whole group is killed (`kill(-pgid, SIGKILL)`) when its time is up — and again,
//! to sweep up stragglers, once the leader has exited.
//!
//! A process in another group does not receive the terminal's Ctrl-C, so we install a
//! tiny SIGINT handler that kills the current group before exiting: pressing Ctrl-C
//! never leaves a test running behind your back.

use std::io::Read;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The process group of the test being run right now (0: none).
static CURRENT_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    // Only async-signal-safe calls here: kill(2) and _exit(2).
    let group = CURRENT_GROUP.load(Ordering::SeqCst);
    unsafe {
        if group > 0 {
            libc::kill(-group, libc::SIGKILL);
        }
        libc::_exit(130);
    }
}

/// Make Ctrl-C kill the running test's process group too. Call once, early in `main`.
pub fn install_interrupt_handler() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    unsafe {
        libc::signal(libc::SIGINT, handler as libc::sighandler_t);
        libc::signal(libc::SIGTERM, handler as libc::sighandler_t);
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
pub fn run_captured(mut cmd: Command, limit: Duration) -> Result<Captured> {
    use std::os::unix::process::CommandExt;

    let program = format!("{:?}", cmd.get_program());
    let (mut reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer)
        .process_group(0);
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
    let bytes = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
    Ok(Captured {
        status,
        timed_out,
        output: String::from_utf8_lossy(&bytes).into_owned(),
        elapsed,
    })
}

fn kill_group(group: i32) {
    if group > 0 {
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
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
    unsafe { libc::geteuid() == 0 }
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
