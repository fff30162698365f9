//! Long steps — `apt-get install`, `cargo install bpf-linker`, the first build of the
//! eBPF programs — shown as one line that moves, not minutes of silence or hundreds
//! of `dpkg` lines.
//!
//! The command's output (stdout and stderr, one pipe) is read line by line: cargo's
//! `Compiling <crate>` lines and apt's status lines (`-o APT::Status-Fd=1`) drive a
//! progress bar ([indicatif](https://docs.rs/indicatif)); everything else is kept,
//! and its last lines are printed only if the step fails.
//!
//! Progress is not a result: like cargo's, it goes to stderr, so a command's stdout
//! (what `cargo xtask book` captures) is the same whether or not something was built.
//! The caller says first what starts, in one line, with an estimate of how long it
//! takes. On a terminal the bar then redraws itself in place, below that line.
//! Anywhere else (a CI log, a pipe, a file) nothing is redrawn: the step's end is one
//! more line, with its duration.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::style;

/// How many of a failed command's last lines to show.
const TAIL_LINES: usize = 25;

/// One long step on the screen.
pub struct LongStep {
    /// Who speaks (`setup:`, `repro:`), as the surrounding lines do.
    speaker: &'static str,
    label: String,
    started: Instant,
    /// Drawn only on a terminal; hidden otherwise.
    bar: ProgressBar,
    /// The unit counted (`crates`), when the step has a length.
    unit: Option<&'static str>,
}

impl LongStep {
    /// A step of unknown length: a spinner, the time so far, and the latest news.
    pub fn spinner(speaker: &'static str, label: &str) -> Self {
        let step = Self::start(speaker, label, None, None);
        step.bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {elapsed_precise} {wide_msg}")
                .expect("a valid template"),
        );
        step
    }

    /// A step that counts `total` `unit`s (an estimate: the bar grows if there are more).
    pub fn counted(speaker: &'static str, label: &str, total: u64, unit: &'static str) -> Self {
        let step = Self::start(speaker, label, Some(total), Some(unit));
        step.bar.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {{prefix}} [{{bar:20}}] {{pos}}/{{len}} {unit} {{elapsed_precise}} {{wide_msg}}"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        step
    }

    fn start(
        speaker: &'static str,
        label: &str,
        total: Option<u64>,
        unit: Option<&'static str>,
    ) -> Self {
        // A log gets no redraws: only the caller's start line and our end line.
        let target = if style::interactive() {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(total, target).with_prefix(label.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        LongStep {
            speaker,
            label: label.to_string(),
            started: Instant::now(),
            bar,
            unit,
        }
    }

    /// The latest news (what is being compiled or installed right now).
    pub fn say(&self, news: &str) {
        self.bar.set_message(news.to_string());
    }

    /// One more unit done; the bar grows if the estimate was short.
    pub fn advance(&self) {
        self.set_position(self.bar.position() + 1);
    }

    /// `done` units of the total (e.g. a percentage).
    pub fn set_position(&self, done: u64) {
        if self.bar.length().is_some_and(|len| done > len) {
            self.bar.set_length(done);
        }
        self.bar.set_position(done);
    }

    /// A line of its own above the bar (or, in a log, just a line).
    pub fn note(&self, text: &str) {
        if self.bar.is_hidden() {
            eprintln!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    /// End without a closing line (the step turned out to have nothing to do).
    pub fn finish_quietly(self) {
        self.bar.finish_and_clear();
    }

    /// Clear the bar and print the step's closing line: what, whether it worked, how long.
    pub fn finish(self, ok: bool) {
        self.bar.finish_and_clear();
        let took = human_duration(self.started.elapsed());
        let counted = match self.unit {
            Some(unit) if unit != "%" && self.bar.position() > 0 => {
                format!(", {} {unit}", self.bar.position())
            }
            _ => String::new(),
        };
        let outcome = if ok {
            style::green("done")
        } else {
            style::red("FAILED")
        };
        eprintln!(
            "{} {}: {outcome} in {took}{counted}",
            style::bold(self.speaker),
            self.label
        );
    }
}

/// What a command run under a [`LongStep`] left: did it succeed, and its last lines.
#[derive(Debug)]
pub struct Ran {
    pub success: bool,
    pub tail: Vec<String>,
}

impl Ran {
    /// Print the last lines of the output (after a failure), indented.
    pub fn print_tail(&self) {
        println!("  the last lines it printed:");
        for line in &self.tail {
            println!("  │ {line}");
        }
    }
}

/// Run `cmd` with its stdout and stderr captured (one pipe), handing each line to
/// `on_line` to move `step` along, and keeping the last lines for a failure report.
///
/// The command stays in our process group, so Ctrl-C reaches it as it reaches us.
pub fn run(
    mut cmd: Command,
    step: &LongStep,
    mut on_line: impl FnMut(&LongStep, &str),
) -> Result<Ran> {
    let program = format!("{:?}", cmd.get_program());
    let (reader, writer) = std::io::pipe().context("cannot create a pipe")?;
    cmd.stdin(Stdio::null())
        .stdout(writer.try_clone()?)
        .stderr(writer);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {program} — is it installed?"))?;
    // The Command holds the pipe's write ends: drop it, or we never see end-of-file.
    drop(cmd);
    let mut tail = VecDeque::with_capacity(TAIL_LINES);
    for line in BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        // Progress meters rewrite their line with '\r': keep only the latest state.
        let line = line
            .rsplit('\r')
            .next()
            .unwrap_or("")
            .trim_end()
            .to_string();
        if line.is_empty() {
            continue;
        }
        on_line(step, &line);
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait()?;
    Ok(Ran {
        success: status.success(),
        tail: tail.into(),
    })
}

/// `cargo build <args>` in `root`, quiet when everything is fresh; when something needs
/// compiling, first says so (`announce`: what, and about how long the first time),
/// then shows a spinner with the number of crates compiled so far and the latest one.
/// Ok(None) if it built, Ok(Some(ran)) with the output's tail if it failed.
pub fn cargo_build(
    root: &std::path::Path,
    args: &[&str],
    label: &str,
    announce: &str,
) -> Result<Option<Ran>> {
    let progress = LongStep::spinner("repro:", label);
    let mut cmd = crate::proc::cargo();
    cmd.current_dir(root).arg("build").args(args);
    let mut compiled = 0;
    let ran = run(cmd, &progress, |progress, line| {
        if let Some(krate) = compiling(line) {
            if compiled == 0 {
                progress.note(&format!("{} {announce}", style::bold("repro:")));
            }
            compiled += 1;
            progress.say(&format!("{compiled} compiled, now {krate}"));
        }
    })?;
    if compiled == 0 && ran.success {
        progress.finish_quietly();
        return Ok(None);
    }
    progress.finish(ran.success);
    Ok((!ran.success).then_some(ran))
}

/// `   Compiling llvm-sys v221.0.0` → `llvm-sys v221.0.0` (cargo's stderr, not a terminal).
pub fn compiling(line: &str) -> Option<String> {
    let rest = line.trim_start().strip_prefix("Compiling ")?;
    Some(
        rest.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// A line of apt's machine-readable status (`-o APT::Status-Fd=1`):
/// `dlstatus:<item>:<percent>:<text>` while downloading,
/// `pmstatus:<package>:<percent>:<text>` while dpkg unpacks and configures.
#[derive(Debug, Clone, PartialEq)]
pub struct AptStatus {
    pub downloading: bool,
    pub percent: f64,
    pub text: String,
}

pub fn apt_status(line: &str) -> Option<AptStatus> {
    let (downloading, rest) = if let Some(rest) = line.strip_prefix("dlstatus:") {
        (true, rest)
    } else {
        (false, line.strip_prefix("pmstatus:")?)
    };
    // Skip the item number or package name (which may itself hold a ':', as in
    // `libc6:amd64`): the percentage is the first field after it that is a number.
    let fields: Vec<&str> = rest.split(':').collect();
    let at = (1..fields.len()).find(|i| fields[*i].parse::<f64>().is_ok())?;
    Some(AptStatus {
        downloading,
        percent: fields[at].parse().ok()?,
        text: fields[at + 1..].join(":"),
    })
}

/// `42s`, `3m 05s`.
pub fn human_duration(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds < 60 {
        format!("{:.1}s", duration.as_secs_f64())
    } else {
        format!("{}m {:02}s", seconds / 60, seconds % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_compiling_lines_name_the_crate() {
        assert_eq!(
            compiling("   Compiling llvm-sys v221.0.0").as_deref(),
            Some("llvm-sys v221.0.0")
        );
        assert_eq!(
            compiling("   Compiling tracer v0.1.0 (/course/tracer/tracer)").as_deref(),
            Some("tracer v0.1.0")
        );
        assert_eq!(compiling("  Downloaded ar v0.9.0"), None);
    }

    #[test]
    fn apt_status_lines_give_the_phase_and_the_percentage() {
        assert_eq!(
            apt_status("dlstatus:3:12.5:Retrieving file 3 of 37"),
            Some(AptStatus {
                downloading: true,
                percent: 12.5,
                text: "Retrieving file 3 of 37".into()
            })
        );
        assert_eq!(
            apt_status("pmstatus:libzstd1:amd64:2.7027:Preparing libzstd1:amd64"),
            Some(AptStatus {
                downloading: false,
                percent: 2.7027,
                text: "Preparing libzstd1:amd64".into()
            })
        );
        assert_eq!(
            apt_status("Setting up nftables (1.0.6-2+deb12u2) ..."),
            None
        );
    }

    #[test]
    fn a_command_s_lines_are_fed_in_order_and_its_tail_kept() {
        let step = LongStep::counted("test:", "counting", 2, "lines");
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "echo '   Compiling a v1'; echo oops >&2; echo '   Compiling b v2'; exit 3",
        ]);
        let mut seen = Vec::new();
        let ran = run(cmd, &step, |step, line| {
            if let Some(krate) = compiling(line) {
                step.advance();
                seen.push(krate);
            }
        })
        .unwrap();
        assert!(!ran.success);
        assert_eq!(seen, ["a v1", "b v2"]);
        assert_eq!(ran.tail, ["   Compiling a v1", "oops", "   Compiling b v2"]);
        step.advance(); // past the estimate: the bar grows instead of overflowing
        assert_eq!(step.bar.length(), Some(3));
        step.finish(false);
    }

    #[test]
    fn durations_read_as_a_person_would_say_them() {
        assert_eq!(human_duration(Duration::from_millis(4200)), "4.2s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m 05s");
    }
}
