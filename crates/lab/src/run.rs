//! `lab run SCRIPT` — the story's world, a short session in it, and nothing left behind.
//!
//! `lab up` keeps the world until Ctrl-C, for a learner exploring by hand from another
//! terminal. `lab run` is the same world (the reference NAT rules, the echo server in
//! `server`, the buggy userland proxy in `host`) driven by a script instead of a person:
//! it runs each step in order, prints each one as the command a learner would type
//! followed by what it printed, then tears the world down — after the last step, after a
//! step that cannot even start, and at Ctrl-C or SIGTERM alike. The book captures its
//! sessions this way (`book/scripts/*.lab`, listed in `book/outputs.toml`).
//!
//! A script has one step per line:
//!
//! ```text
//! # a comment (not printed)
//! host$ ip route get 172.18.0.3          a shell command (sh -c) inside a node
//! ask hello                              the story's client sends "hello" from
//!                                        172.17.0.2:34320 to 192.168.0.239:4000
//! capture host br-dind FILE [FILTER…]    start capturing (the course's capture, in
//!                                        the background) into a pcap file …
//! start host$ COMMAND                    … or start any command in the background
//!                                        (once it printed its first line) …
//! stop                                   … and stop (SIGINT, as Ctrl-C) everything
//!                                        started, printing what it printed
//! ```
//!
//! The world is `lab up`'s: besides the UDP story, a TCP echo server in `server` and
//! the course's TCP relay in `host` (homework 2). `--world fixed-proxy` and
//! `--world hairpin` run the same session after the fix (exercise 8) instead.
//!
//! A command's exit code does not stop the session (a failing `ip route get` is worth
//! showing too); `lab run` itself fails only when a step cannot run at all.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use story::{Outcome, Story};

/// How long the client waits for an answer, as in `repro`.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// One line of a script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `NODE$ COMMAND`: `sh -c COMMAND` inside the node's network namespace.
    Shell { node: String, command: String },
    /// `ask PAYLOAD`: the story's client sends PAYLOAD to the host's published port.
    Ask { payload: String },
    /// `capture NODE IFACE FILE [FILTER…]`: capture in the background.
    Capture {
        node: String,
        interface: String,
        file: PathBuf,
        filter: Vec<String>,
    },
    /// `start NODE$ COMMAND`: a shell command in the background.
    Start { node: String, command: String },
    /// `stop`: stop everything started in the background, print what it printed.
    Stop,
}

/// The steps of a script, or the first line that is not one (with its number).
pub fn parse(text: &str) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let number = index + 1;
        let words: Vec<&str> = line.split_whitespace().collect();
        let step = if let Some(rest) = line.strip_prefix("start ") {
            let Some((node, command)) = rest.split_once("$ ") else {
                bail!("line {number}: `{line}`: write `start NODE$ COMMAND`");
            };
            Step::Start {
                node: node.trim().to_string(),
                command: command.trim().to_string(),
            }
        } else if let Some((node, command)) = line.split_once("$ ") {
            if node.contains(char::is_whitespace) || node.is_empty() {
                bail!("line {number}: `{line}`: write a command as `NODE$ COMMAND` (e.g. `host$ ip route`)");
            }
            Step::Shell {
                node: node.to_string(),
                command: command.trim().to_string(),
            }
        } else {
            match words.as_slice() {
                ["ask", payload @ ..] if !payload.is_empty() => Step::Ask {
                    payload: payload.join(" "),
                },
                ["capture", node, interface, file, filter @ ..] => Step::Capture {
                    node: node.to_string(),
                    interface: interface.to_string(),
                    file: PathBuf::from(file),
                    filter: filter.iter().map(|w| w.to_string()).collect(),
                },
                ["stop"] => Step::Stop,
                _ => bail!(
                    "line {number}: `{line}` is not a step: `NODE$ COMMAND`, `ask PAYLOAD`, \
                     `capture NODE IFACE FILE [FILTER…]` or `stop` (see `lab run --help`)"
                ),
            }
        };
        steps.push(step);
    }
    Ok(steps)
}

/// A program running in the background (a capture: `lab capture-here` inside the node).
struct Running {
    child: Child,
    /// Its first line ("Capturing on …"), read before the next step.
    started: String,
}

/// Spawn `command` with its standard output piped, and wait for its first line: a
/// capture prints it once it is open, so no frame of the next step is missed.
fn start_background(mut command: std::process::Command, what: &str) -> Result<Running> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {what}"))?;
    let stdout = child.stdout.take().context("no pipe to the program")?;
    let mut reader = BufReader::new(stdout);
    let mut started = String::new();
    reader.read_line(&mut started)?;
    if started.is_empty() {
        let status = child.wait()?;
        bail!("{what} stopped before it printed anything ({status})");
    }
    // The reader may hold more than that line already: keep what it buffered.
    let buffered = String::from_utf8_lossy(reader.buffer()).into_owned();
    child.stdout = Some(reader.into_inner());
    Ok(Running {
        child,
        started: started + &buffered,
    })
}

/// Which world a session runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum World {
    /// The story: Docker 20.10's NAT and the buggy userland proxy (and `lab up`'s TCP
    /// echo server and relay).
    Story,
    /// The same NAT with exercise 8's fixed proxy (`IP_PKTINFO`).
    FixedProxy,
    /// Exercise 8's hairpin NAT rules, no proxy at all (`userland-proxy: false`).
    Hairpin,
}

/// The running world of a session.
fn build(world: World) -> Result<Story> {
    Ok(match world {
        World::Story => crate::up::story_with_tcp()?,
        World::FixedProxy => {
            let mut story = Story::up(&story::reference_nat_rules(), true)?;
            story.start_proxy(solution_fix::run_fixed_udp_proxy)?;
            story
        }
        World::Hairpin => Story::up(&crate::repro_fix::hairpin_rules(), true)?,
    })
}

/// `lab run SCRIPT`: returns 0, or 128 + N when signal N interrupted the session.
pub fn run(script: &Path, world: World) -> Result<i32> {
    // Ctrl-C and SIGTERM: blocked before any thread exists (every thread inherits the
    // block), and received by a thread of ours that only raises a flag; the session stops
    // between two steps and the world is torn down by `drop`, as on every other path.
    let signals = stop_signals();
    signals
        .thread_block()
        .context("cannot block Ctrl-C and SIGTERM")?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let caught = Arc::new(std::sync::atomic::AtomicI32::new(0));
    {
        let (interrupted, caught) = (Arc::clone(&interrupted), Arc::clone(&caught));
        std::thread::spawn(move || {
            if let Ok(signal) = signals.wait() {
                caught.store(signal as i32, Ordering::SeqCst);
                interrupted.store(true, Ordering::SeqCst);
            }
        });
    }
    let text = std::fs::read_to_string(script)
        .with_context(|| format!("cannot read the script {}", script.display()))?;
    let steps = parse(&text).with_context(|| format!("in {}", script.display()))?;

    let story = build(world)?;
    let mut captures: Vec<Running> = Vec::new();
    let result = (|| -> Result<()> {
        for step in &steps {
            if interrupted.load(Ordering::SeqCst) {
                break;
            }
            run_step(&story, step, &mut captures)?;
        }
        Ok(())
    })();
    // Every exit path: captures stopped (their files written), then the world dropped.
    stop_captures(&mut captures);
    drop(story);
    result?;
    Ok(match caught.load(Ordering::SeqCst) {
        0 => 0,
        signal => 128 + signal,
    })
}

fn run_step(story: &Story, step: &Step, captures: &mut Vec<Running>) -> Result<()> {
    match step {
        Step::Shell { node, command } => {
            println!("{node}$ {command}");
            let output = story
                .world
                .node(node)?
                .command("sh")
                .arg("-c")
                .arg(command)
                .stdin(Stdio::null())
                .output()
                .with_context(|| format!("cannot run `{command}` in {node}"))?;
            print!("{}", String::from_utf8_lossy(&output.stdout));
            print!("{}", String::from_utf8_lossy(&output.stderr));
            if !output.status.success() {
                println!("(exit status: {})", output.status.code().unwrap_or(1));
            }
        }
        Step::Ask { payload } => {
            let to = SocketAddr::new(story::HOST_LAN.parse()?, story::PORT);
            println!(
                "client: sends {payload:?} from 0.0.0.0:{} to {to}",
                story::CLIENT_PORT
            );
            match story.client_ask(to, payload.as_bytes(), CLIENT_TIMEOUT)? {
                Outcome::Reply { from, payload } => println!(
                    "  [client] reply from {from}: {:?}",
                    String::from_utf8_lossy(&payload)
                ),
                Outcome::NoReply { waited } => {
                    println!("  [client] no reply after {waited:.1?}")
                }
            }
        }
        Step::Capture {
            node,
            interface,
            file,
            filter,
        } => {
            let exe = std::env::current_exe().context("cannot find the lab's own executable")?;
            let mut command = story.world.node(node)?.command(&exe.to_string_lossy());
            command
                .arg("capture-here")
                .args([node, interface])
                .arg(file)
                .args(filter);
            println!(
                "capture {node} {interface} {}{}",
                file.display(),
                filter
                    .iter()
                    .fold(String::new(), |text, word| text + " " + word)
            );
            let running =
                start_background(command, &format!("a capture on {interface} in {node}"))?;
            captures.push(running);
        }
        Step::Start { node, command } => {
            let mut program = story.world.node(node)?.command("sh");
            // `exec`: the program itself gets the SIGINT of `stop`, not a shell.
            // Its standard error too, into the same pipe (a summary line, say).
            program.arg("-c").arg(format!("exec {command} 2>&1"));
            println!("start {node}$ {command}");
            let running = start_background(program, &format!("`{command}` in {node}"))?;
            captures.push(running);
        }
        Step::Stop => {
            println!("stop");
            stop_captures(captures);
        }
    }
    Ok(())
}

/// Stop every running capture (SIGINT, as Ctrl-C would) and print what it said.
fn stop_captures(captures: &mut Vec<Running>) {
    for Running { mut child, started } in captures.drain(..) {
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        // A program that ignores Ctrl-C gets SIGTERM after two seconds, then SIGKILL.
        for (grace, signal) in [(20, Signal::SIGTERM), (20, Signal::SIGKILL)] {
            for _ in 0..grace {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if matches!(child.try_wait(), Ok(None)) {
                let _ = kill(pid, signal);
            }
        }
        let mut rest = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            use std::io::Read;
            let _ = stdout.read_to_string(&mut rest);
        }
        let _ = child.wait();
        print!("{started}{rest}");
    }
}

/// The signals that stop a session: Ctrl-C, `kill`, and the terminal closing.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_step_parses_and_comments_are_skipped() {
        let steps = parse(
            "# the route\nhost$ ip route get 172.18.0.3\n\nask hello world\n\
             capture host br-dind /tmp/x.pcap udp port 4000\nstop\n",
        )
        .unwrap();
        assert_eq!(
            steps,
            vec![
                Step::Shell {
                    node: "host".into(),
                    command: "ip route get 172.18.0.3".into()
                },
                Step::Ask {
                    payload: "hello world".into()
                },
                Step::Capture {
                    node: "host".into(),
                    interface: "br-dind".into(),
                    file: "/tmp/x.pcap".into(),
                    filter: vec!["udp".into(), "port".into(), "4000".into()],
                },
                Step::Stop,
            ]
        );
    }

    #[test]
    fn a_line_that_is_no_step_is_refused_with_its_number() {
        let error = parse("host$ true\nip route\n").unwrap_err().to_string();
        assert!(error.contains("line 2"), "{error}");
        assert!(parse("ask\n").is_err());
    }
}
