//! Running the built `lab` binary in a private registry, with time limits and cleanup.
//!
//! Every test gets its own scratch directory and points the lab at it (`TMPDIR`, and
//! `XDG_RUNTIME_DIR` removed or set), so tests running in parallel, and a lab the learner
//! has running, never see each other's registrations.

#![allow(dead_code)] // each test file uses part of it

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Building the world takes a few seconds; on a loaded machine many more.
pub const START_LIMIT: Duration = Duration::from_secs(120);
/// Any single command, and a lab's teardown.
pub const COMMAND_LIMIT: Duration = Duration::from_secs(60);

pub const LAB: &str = env!("CARGO_BIN_EXE_lab");

/// A scratch directory (mode 0755) for one test, removed on drop, and the environment
/// the lab runs with: `TMPDIR=<scratch>/tmp`, no `XDG_RUNTIME_DIR` unless set.
pub struct Scratch {
    pub path: PathBuf,
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl Scratch {
    pub fn new(test: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!("lab-it-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .recursive(true)
            .create(path.join("tmp"))
            .unwrap();
        Scratch {
            path,
            xdg_runtime_dir: None,
        }
    }

    /// The lab's `TMPDIR`.
    pub fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Where the lab registers now: `$TMPDIR/packet-drop-lab-UID` (no usable XDG dir).
    pub fn registry(&self) -> PathBuf {
        self.tmp()
            .join(format!("packet-drop-lab-{}", nix::unistd::Uid::effective()))
    }

    /// Where the lab registered before issue 8: `$TMPDIR/packet-drop-lab`, shared by all.
    pub fn old_registry(&self) -> PathBuf {
        self.tmp().join("packet-drop-lab")
    }

    /// `lab ARGS` in this scratch's environment.
    pub fn lab(&self, args: &[&str]) -> Command {
        let mut command = Command::new(LAB);
        command.args(args);
        self.environment(&mut command);
        command
    }

    pub fn environment(&self, command: &mut Command) {
        command.env("TMPDIR", self.tmp()).env_remove("SUDO_UID");
        match &self.xdg_runtime_dir {
            Some(dir) => command.env("XDG_RUNTIME_DIR", dir),
            None => command.env_remove("XDG_RUNTIME_DIR"),
        };
    }

    /// `lab up` through `sh -c 'BEFORE; exec lab up'`: `BEFORE` knows the pid the lab
    /// will have (`$$`, since `exec` keeps it), so it can plant files named after it.
    /// `Err`: the lab exited before its world was up, with this on stderr.
    pub fn try_start_lab_after(&self, before: &str) -> Result<RunningLab, String> {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!("{before}\nexec \"$LAB\" up"))
            .env("LAB", LAB);
        self.environment(&mut command);
        RunningLab::start(command)
    }

    /// [`Scratch::try_start_lab_after`], ready; skips the test when this machine cannot
    /// build namespaces.
    pub fn start_lab_after(&self, before: &str) -> RunningLab {
        self.try_start_lab_after(before).unwrap_or_else(|stderr| {
            if stderr.contains("cannot create a user namespace") {
                netlab::skip!("{}", stderr.trim());
            }
            panic!("lab up failed:\n{stderr}")
        })
    }

    /// `lab up`, ready (its world built and registered).
    pub fn start_lab(&self) -> RunningLab {
        self.start_lab_after(":")
    }

    /// Run `lab ARGS` to completion (within [`COMMAND_LIMIT`]).
    pub fn run_lab(&self, args: &[&str]) -> Output {
        run(self.lab(args))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run a command to completion, killing it after [`COMMAND_LIMIT`].
pub fn run(mut command: Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let status = wait_within(&mut child, COMMAND_LIMIT)
        .unwrap_or_else(|| panic!("{command:?} did not finish within {COMMAND_LIMIT:?}"));
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

/// Wait for `child` at most `limit`; on timeout kill it and return `None`.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// A `lab up` process; killed (SIGKILL) on drop if still running.
pub struct RunningLab {
    child: Child,
    pub pid: u32,
    /// Node name → netns inode, as `lab up` printed them.
    pub inodes: HashMap<String, u64>,
    stdout: Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl RunningLab {
    /// Start `command` (a `lab up`) and wait until its world is up (it has printed its
    /// node table). `Err`: it exited first, with this on stderr.
    pub fn start(mut command: Command) -> Result<RunningLab, String> {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (lines, stdout) = mpsc::channel();
        let out = BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err = child.stderr.take().unwrap();
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buffer) {
                collected
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buffer[..n]));
            }
        });
        let mut lab = RunningLab {
            pid: child.id(),
            inodes: HashMap::new(),
            child,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            match lab.stdout.recv_timeout(Duration::from_millis(100)) {
                // After the picture comes the table `node  netns inode`, then `running:`.
                Ok(line) if line.contains("running:") => return Ok(lab),
                Ok(line) => {
                    if let [name, inode] = line.split_whitespace().collect::<Vec<_>>()[..] {
                        if let Ok(inode) = inode.parse() {
                            lab.inodes.insert(name.to_string(), inode);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = wait_within(&mut lab.child, COMMAND_LIMIT);
                    // Let the stderr thread finish reading.
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(format!("{status:?}\n{}", lab.stderr()));
                }
            }
            assert!(
                Instant::now() < deadline,
                "lab up was not ready within {START_LIMIT:?}; stderr:\n{}",
                lab.stderr()
            );
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send `signal` and wait for the lab to tear its world down and exit.
    pub fn stop(mut self, signal: Signal) -> ExitStatus {
        kill(Pid::from_raw(self.pid as i32), signal).unwrap();
        wait_within(&mut self.child, COMMAND_LIMIT).unwrap_or_else(|| {
            panic!(
                "lab up did not stop within {COMMAND_LIMIT:?} after {signal}; stderr:\n{}",
                self.stderr()
            )
        })
    }

    /// Its registration file in `registry`, if there is one.
    pub fn registration(&self, registry: &Path) -> std::io::Result<serde_json::Value> {
        let text = std::fs::read_to_string(registry.join(format!("{}.json", self.pid)))?;
        Ok(serde_json::from_str(&text).unwrap())
    }

    /// The inode of `node`'s namespace, as `lab up` printed it.
    pub fn inode_of(&self, node: &str) -> u64 {
        self.inodes[node]
    }
}

impl Drop for RunningLab {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The netns inode a command run by `lab exec` finds itself in: `readlink
/// /proc/self/ns/net` prints `net:[INODE]`.
pub fn netns_inode(readlink_output: &str) -> u64 {
    readlink_output
        .trim()
        .strip_prefix("net:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|inode| inode.parse().ok())
        .unwrap_or_else(|| panic!("not a netns link: {readlink_output:?}"))
}
