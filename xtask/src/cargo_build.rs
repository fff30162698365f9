//! Building a check binary: `cargo test -p <package> --test check --no-run`.
//!
//! We ask cargo for JSON messages (`--message-format=json-diagnostic-rendered-ansi`) so
//! that we can both find the test executable it produced and show the compiler's errors
//! exactly as `cargo build` would have rendered them. The three kinds of messages used:
//!
//! - `compiler-message`: a diagnostic; its `message.rendered` is the human text;
//! - `compiler-artifact`: a built target; the one with `profile.test == true` and
//!   `target.name == "check"` carries the path of our test binary in `executable`;
//! - `build-finished`: `success` says whether the build worked.
//!
//! Build scripts are another matter: exercise 5's `build.rs` compiles its eBPF crate
//! (aya-build runs a second cargo) and forwards every line of that build as
//! `cargo:warning=…`, which cargo prints on stderr as `warning: PKG@VER: line` — on every
//! build, even when nothing changed — and, when the script fails, prints all of it again
//! in a "failed to run custom build command" dump. [`BuildScriptOutput`] reads cargo's
//! stderr instead of letting it through: a successful build shows none of those lines; a
//! failed one shows the eBPF compiler's errors once, without the prefix, with paths
//! relative to the course's root.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::proc;

/// The result of building one package's `check` test target.
#[derive(Debug)]
pub enum Build {
    /// The test executable to run.
    Built(PathBuf),
    /// It did not compile (the diagnostics were shown); `culprits` are the packages
    /// the errors are in.
    Failed { culprits: Vec<String> },
}

/// What cargo wrote on stderr about build scripts (see the module's doc).
#[derive(Debug, Default)]
pub struct BuildScriptOutput {
    /// `warning: PKG@VER: line` lines, by package, without that prefix.
    lines: BTreeMap<String, Vec<String>>,
    /// Packages whose build script failed ("failed to run custom build command").
    failed: Vec<String>,
    /// Inside the dump that follows a failed build script (not shown: said above).
    in_failure_dump: bool,
    /// The failure dump's `--- stderr` lines, by package (its own words, if any).
    failure_stderr: BTreeMap<String, Vec<String>>,
    /// In the dump's `--- stderr` part (until `Stack backtrace:`).
    in_stderr: bool,
}

impl BuildScriptOutput {
    /// Take one line of cargo's stderr; returns it if it should be shown now, as it is.
    pub fn line(&mut self, raw: &str) -> Option<String> {
        let line = strip_ansi(raw);
        if let Some((package, text)) = build_script_warning(&line) {
            self.lines
                .entry(package.to_string())
                .or_default()
                .push(text.to_string());
            return None;
        }
        if let Some(rest) = line.strip_prefix("error: failed to run custom build command for `") {
            let package = rest.split([' ', '`']).next().unwrap_or(rest).to_string();
            self.failed.push(package);
            self.in_failure_dump = true;
            self.in_stderr = false;
            return None;
        }
        if self.in_failure_dump {
            let part_of_dump = line.is_empty()
                || line.starts_with(char::is_whitespace)
                || line.starts_with("note:")
                || line == "Caused by:";
            if part_of_dump {
                let trimmed = line.trim();
                if trimmed == "--- stderr" {
                    self.in_stderr = true;
                } else if trimmed == "Stack backtrace:" || trimmed.starts_with("--- ") {
                    self.in_stderr = false;
                } else if self.in_stderr && !trimmed.is_empty() {
                    let package = self.failed.last().cloned().unwrap_or_default();
                    self.failure_stderr
                        .entry(package)
                        .or_default()
                        .push(trimmed.to_string());
                }
                return None;
            }
            self.in_failure_dump = false;
        }
        Some(raw.to_string())
    }

    /// The packages whose build script failed.
    pub fn failed(&self) -> &[String] {
        &self.failed
    }

    /// What to show about a failed build script of `package`: its output without the
    /// `warning: PKG@VER:` prefix, without cargo's progress lines, with paths made
    /// relative to `root`. Falls back on the script's own error when it printed nothing.
    pub fn report(&self, package: &str, root: &Path) -> Vec<String> {
        let root_prefix = format!("{}/", root.display());
        let relative = |path: &str| path.strip_prefix(&root_prefix).unwrap_or(path).to_string();
        // The crate being compiled, from `Compiling NAME vX (PATH)`: rustc's paths
        // (`--> src/main.rs:79:21`) are relative to it.
        let mut crate_dir = String::new();
        let mut shown: Vec<String> = Vec::new();
        for line in self.lines.get(package).into_iter().flatten() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed.strip_prefix("Compiling ") {
                if let Some((_, path)) = rest.trim_end_matches(')').rsplit_once(" (") {
                    crate_dir = relative(path);
                }
                continue;
            }
            if trimmed.starts_with("Finished ")
                || trimmed.starts_with("Blocking waiting")
                || trimmed.starts_with("warning: build failed, waiting")
            {
                continue;
            }
            let line = match trimmed.strip_prefix("--> ") {
                Some(location) if !location.starts_with('/') && !crate_dir.is_empty() => {
                    let indent = &line[..line.len() - trimmed.len()];
                    format!("{indent}--> {crate_dir}/{location}")
                }
                _ => line.replace(&root_prefix, ""),
            };
            if line.trim().is_empty() && shown.last().is_none_or(|l| l.trim().is_empty()) {
                continue;
            }
            shown.push(line);
        }
        while shown.last().is_some_and(|l| l.trim().is_empty()) {
            shown.pop();
        }
        if shown.is_empty() {
            shown = self
                .failure_stderr
                .get(package)
                .into_iter()
                .flatten()
                .map(|l| l.replace(&root_prefix, ""))
                .collect();
        }
        shown
    }
}

/// `warning: exercise-drop-tracer@0.1.0: text` → `("exercise-drop-tracer", "text")`.
fn build_script_warning(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix("warning: ")?;
    let (package_version, text) = rest.split_once(": ").or_else(|| {
        // An empty forwarded line: `warning: pkg@0.1.0:` (maybe with one trailing space).
        rest.trim_end()
            .strip_suffix(':')
            .map(|package_version| (package_version, ""))
    })?;
    let (package, version) = package_version.split_once('@')?;
    let plausible = !package.is_empty()
        && !package.contains(' ')
        && version.chars().next().is_some_and(|c| c.is_ascii_digit());
    plausible.then_some((package, text))
}

/// The text of a line without its colour codes (`ESC [ … m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Build `package`'s check binary in the workspace at `root`. Cargo's own progress
/// (`Compiling …`) and the compiler's diagnostics go to the terminal on stderr.
pub fn build_check(root: &Path, package: &str, color: bool) -> Result<Build> {
    let format = if color {
        "--message-format=json-diagnostic-rendered-ansi"
    } else {
        "--message-format=json"
    };
    let mut cargo = proc::cargo();
    proc::dies_with_runner(&mut cargo);
    let mut child = cargo
        .current_dir(root)
        .args(["test", "-p", package, "--test", "check", "--no-run", format])
        .arg(if color {
            "--color=always"
        } else {
            "--color=never"
        })
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no stdout from cargo")?;
    let stderr = child.stderr.take().context("no stderr from cargo")?;
    // Cargo's own progress goes through as it comes; build scripts' lines are held back.
    let build_scripts = std::thread::spawn(move || {
        let mut build_scripts = BuildScriptOutput::default();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(line) = build_scripts.line(&line) {
                eprintln!("{line}");
            }
        }
        build_scripts
    });
    // Show each diagnostic as it arrives, as cargo itself would (on stderr).
    let messages: Vec<Value> = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok())
        .inspect(|message| {
            if let Some(text) = message["message"]["rendered"].as_str() {
                eprint!("{text}");
            }
        })
        .collect();
    let status = child.wait()?;
    let build_scripts = build_scripts.join().unwrap_or_default();
    for failed in build_scripts.failed() {
        eprintln!(
            "{} the build script of {failed} failed{}",
            crate::style::red("error:"),
            if failed.starts_with("exercise-")
                || failed.starts_with("solution-")
                || failed == "tracer"
            {
                " — it compiles the eBPF program (with aya-build); the compiler said:"
            } else {
                ":"
            }
        );
        for line in build_scripts.report(failed, root) {
            eprintln!("  {line}");
        }
    }
    let mut build = interpret(&messages, status.success(), package)?;
    if let Build::Failed { culprits } = &mut build {
        for failed in build_scripts.failed() {
            if !culprits.contains(failed) {
                culprits.push(failed.clone());
            }
        }
    }
    Ok(build)
}

/// Make sense of cargo's JSON messages (separate from running cargo, to be testable).
pub fn interpret(messages: &[Value], cargo_succeeded: bool, package: &str) -> Result<Build> {
    let mut culprits: Vec<String> = Vec::new();
    let mut executable = None;
    for message in messages {
        match message["reason"].as_str() {
            Some("compiler-message") if message["message"]["level"] == "error" => {
                let name = package_name(message["package_id"].as_str().unwrap_or(""));
                if !culprits.contains(&name) {
                    culprits.push(name);
                }
            }
            Some("compiler-artifact")
                if message["profile"]["test"] == true && message["target"]["name"] == "check" =>
            {
                executable = message["executable"].as_str().map(PathBuf::from);
            }
            _ => {}
        }
    }
    match (cargo_succeeded, executable) {
        (true, Some(path)) => Ok(Build::Built(path)),
        (true, None) => bail!(
            "cargo built {package} but produced no `check` test binary: \
             does {package} have tests/check.rs?"
        ),
        (false, _) => Ok(Build::Failed { culprits }),
    }
}

/// `path+file:///w/exercises/01-udp-echo#exercise-udp-echo@0.1.0` → `exercise-udp-echo`;
/// also understands the older `exercise-udp-echo 0.1.0 (path+file:///…)` form.
fn package_name(package_id: &str) -> String {
    if let Some((_, fragment)) = package_id.rsplit_once('#') {
        let name = fragment.split('@').next().unwrap_or(fragment);
        if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            // `…/exercise-udp-echo#0.1.0`: the name is the last path segment.
            let path = package_id.rsplit_once('#').map_or("", |p| p.0);
            return path.rsplit('/').next().unwrap_or(path).to_string();
        }
        return name.to_string();
    }
    package_id
        .split(' ')
        .next()
        .unwrap_or(package_id)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_check_executable_is_found() {
        let messages = [
            json!({"reason": "compiler-artifact", "profile": {"test": false}, "target": {"name": "netlab"}, "executable": null}),
            json!({"reason": "compiler-artifact", "profile": {"test": true}, "target": {"name": "check"}, "executable": "/t/debug/deps/check-abc"}),
            json!({"reason": "build-finished", "success": true}),
        ];
        let Build::Built(path) = interpret(&messages, true, "exercise-x").unwrap() else {
            panic!("not built")
        };
        assert_eq!(path, Path::new("/t/debug/deps/check-abc"));
    }

    #[test]
    fn compile_errors_are_collected_with_their_package() {
        let messages = [
            json!({"reason": "compiler-message", "package_id": "path+file:///w/exercises/01-udp-echo#exercise-udp-echo@0.1.0",
                   "message": {"level": "error", "rendered": "error[E0308]: mismatched types"}}),
            json!({"reason": "compiler-message", "package_id": "path+file:///w/exercises/01-udp-echo#exercise-udp-echo@0.1.0",
                   "message": {"level": "warning", "rendered": "warning: unused variable"}}),
        ];
        let Build::Failed { culprits } = interpret(&messages, false, "exercise-udp-echo").unwrap()
        else {
            panic!("not failed")
        };
        assert_eq!(culprits, ["exercise-udp-echo"]);
    }

    /// Real stderr of `cargo test -p exercise-drop-tracer --test check --no-run` with a type
    /// error in the exercise's eBPF crate (the course's root replaced by /course).
    const EBPF_BUILD_ERROR: &str = include_str!("testdata/ebpf-build-error.txt");

    #[test]
    fn an_ebpf_build_error_is_shown_once_without_prefixes_with_course_paths() {
        let mut output = BuildScriptOutput::default();
        let passed: Vec<String> = EBPF_BUILD_ERROR
            .lines()
            .filter_map(|line| output.line(line))
            .collect();
        assert!(
            passed
                .iter()
                .all(|l| !l.contains("@0.1.0:") && !l.contains("cargo:warning")),
            "no build script line goes through as it is: {passed:#?}"
        );
        assert_eq!(output.failed(), ["exercise-drop-tracer"]);
        let report = output.report("exercise-drop-tracer", Path::new("/course"));
        assert_eq!(
            report
                .iter()
                .filter(|l| l.contains("mismatched types"))
                .count(),
            1,
            "{report:#?}"
        );
        assert!(
            report.contains(&"  --> exercises/05-drop-tracer/ebpf/src/main.rs:79:21".to_string()),
            "{report:#?}"
        );
        assert!(report
            .iter()
            .all(|l| !l.contains("/course/") && !l.contains("Compiling")));
    }

    #[test]
    fn a_successful_build_shows_no_build_script_lines() {
        let mut output = BuildScriptOutput::default();
        let shown: Vec<String> = [
            "   Compiling exercise-drop-tracer v0.1.0 (/course/exercises/05-drop-tracer)",
            "warning: tracer@0.1.0:    Compiling tracer-ebpf v0.1.0 (/course/tracer/tracer-ebpf)",
            "warning: tracer@0.1.0:     Finished `release` profile [optimized] target(s) in 4m 45s",
            "\x1b[1m\x1b[33mwarning\x1b[0m\x1b[1m:\x1b[0m exercise-drop-tracer@0.1.0: Finished",
            "    Finished `test` profile [optimized + debuginfo] target(s) in 12.5s",
        ]
        .iter()
        .filter_map(|line| output.line(line))
        .collect();
        assert_eq!(shown.len(), 2, "{shown:#?}");
        assert!(shown.iter().all(|l| !l.contains("warning")));
        assert!(output.failed().is_empty());
        // A compiler's own warning about the course's code is not a build script's.
        assert_eq!(build_script_warning("warning: unused variable: `x`"), None);
    }

    #[test]
    fn package_ids_of_every_format_are_understood() {
        assert_eq!(package_name("path+file:///w/netlab#0.1.0"), "netlab");
        assert_eq!(
            package_name("path+file:///w/ex#exercise-a@0.1.0"),
            "exercise-a"
        );
        assert_eq!(
            package_name("exercise-a 0.1.0 (path+file:///w/ex)"),
            "exercise-a"
        );
    }
}
