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
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("cannot run cargo")?;
    let stdout = child.stdout.take().context("no stdout from cargo")?;
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
    interpret(&messages, status.success(), package)
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
