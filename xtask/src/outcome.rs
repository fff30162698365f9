//! From a test process's exit status and output to a verdict a learner can act on.
//!
//! The protocol between checks and this CLI (ARCHITECTURE.md, "Conventions"):
//!
//! - exit 0 → **OK**;
//! - a line starting with `SKIPPED: ` (written by `netlab::skip!`) → **SKIP** with the
//!   rest of that line as the reason: the machine could not run the check, which is not
//!   the same as passing it;
//! - a panic whose message is `not yet implemented` (what `todo!()` says), in any
//!   thread → **not implemented yet: `fn`**, the function found by reading the source
//!   file upward from the panic's line;
//! - anything else → **FAIL**, with the test's own words (the assertion message) and
//!   without libtest's bookkeeping lines.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::proc::Captured;

/// What one test run means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Fail {
        details: Vec<String>,
    },
    Skip {
        reason: String,
    },
    NotImplemented {
        function: String,
        location: String,
    },
    TimedOut {
        after: Duration,
        details: Vec<String>,
    },
}

impl Verdict {
    /// Does it count as a failure? A skip does only when skips are not allowed (CI).
    pub fn is_failure(&self, skips_fail: bool) -> bool {
        match self {
            Verdict::Ok => false,
            Verdict::Skip { .. } => skips_fail,
            _ => true,
        }
    }
}

/// The errors already shown during one exercise's run, so that one mistake gets one
/// message: when 17 checks fail with the same topology error, or the same panic in the
/// learner's code, the error is printed under the first and the others point at it.
#[derive(Debug, Default)]
pub struct SeenErrors {
    /// (what the error says, the first test that showed it, how many tests had it)
    errors: Vec<(String, String, usize)>,
}

impl SeenErrors {
    /// Count `verdict`'s error; the first test that already showed the same one, if any.
    pub fn note(&mut self, test: &str, verdict: &Verdict) -> Option<String> {
        let key = error_text(verdict)?;
        if let Some((_, first, count)) = self.errors.iter_mut().find(|(k, ..)| *k == key) {
            *count += 1;
            return Some(first.clone());
        }
        self.errors.push((key, test.to_string(), 1));
        None
    }

    /// The errors that more than one test had: (first test, number of tests).
    pub fn repeated(&self) -> impl Iterator<Item = (&str, usize)> {
        self.errors
            .iter()
            .filter(|(_, _, count)| *count > 1)
            .map(|(_, first, count)| (first.as_str(), *count))
    }
}

/// What a failure says, to recognise the same error in another test (None: no error).
fn error_text(verdict: &Verdict) -> Option<String> {
    match verdict {
        Verdict::Ok | Verdict::Skip { .. } => None,
        Verdict::Fail { details } => Some(format!("fail\n{}", details.join("\n"))),
        // The time differs a little from test to test; what they printed is the error.
        Verdict::TimedOut { details, .. } => Some(format!("timeout\n{}", details.join("\n"))),
        Verdict::NotImplemented { function, location } => {
            Some(format!("todo\n{function}\n{location}"))
        }
    }
}

/// The names of the tests in libtest's `--list --format terse` output (`name: test`).
pub fn parse_test_list(output: &str) -> Vec<String> {
    output
        .lines()
        .filter_map(|line| line.trim_end().strip_suffix(": test"))
        .map(str::to_owned)
        .collect()
}

/// Classify a finished test run. `root` resolves the relative paths of panic locations.
pub fn classify(run: &Captured, test_name: &str, root: &Path) -> Verdict {
    if let Some(reason) = skipped_reason(&run.output) {
        return Verdict::Skip { reason };
    }
    if run.timed_out {
        return Verdict::TimedOut {
            after: run.elapsed,
            details: failure_text(&run.output, test_name),
        };
    }
    if run.success() {
        return Verdict::Ok;
    }
    if let Some(location) = todo_location(&run.output) {
        let function = resolve(root, &location.file)
            .and_then(|path| std::fs::read_to_string(path).ok())
            .and_then(|source| enclosing_fn(&source, location.line))
            .unwrap_or_else(|| "?".to_string());
        return Verdict::NotImplemented {
            function,
            location: format!("{}:{}", location.file, location.line),
        };
    }
    Verdict::Fail {
        details: failure_text(&run.output, test_name),
    }
}

/// The reason on the first line that starts with `SKIPPED: `.
pub fn skipped_reason(output: &str) -> Option<String> {
    output
        .lines()
        .map(without_libtest_prefix)
        .find_map(|line| line.trim_start().strip_prefix("SKIPPED: "))
        .map(|reason| reason.trim().to_string())
}

/// With `--nocapture`, libtest prints `test <name> ... ` and then whatever the test
/// prints, on the same line: `test check::x ... SKIPPED: no root`. Drop that prefix.
pub fn without_libtest_prefix(line: &str) -> &str {
    match (line.starts_with("test "), line.find(" ... ")) {
        (true, Some(at)) => &line[at + " ... ".len()..],
        _ => line,
    }
}

/// `exercises/01-x/tests/../../../checks/01-x.rs` → `checks/01-x.rs` (lexically).
pub fn normalize_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            ".." if parts.last().is_some_and(|p| *p != ".." && !p.is_empty()) => {
                parts.pop();
            }
            "." => {}
            _ => parts.push(part),
        }
    }
    parts.join("/")
}

/// Where a panic happened: `file:line:col`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: String,
    pub line: usize,
    pub column: usize,
}

/// Parse the location out of a panic header, in both of Rust's formats:
/// `thread 'main' panicked at src/lib.rs:4:5:` (1.73 and later; the message follows on
/// the next line) and `thread 'main' panicked at 'msg', src/lib.rs:4:5` (older).
pub fn panic_location(line: &str) -> Option<Location> {
    let rest = &line[line.find("panicked at ")? + "panicked at ".len()..];
    let spot = if rest.starts_with('\'') {
        rest.rsplit_once("', ")?.1
    } else {
        rest.trim_end().strip_suffix(':').unwrap_or(rest)
    };
    let mut parts = spot.trim().rsplitn(3, ':');
    let column = parts.next()?.parse().ok()?;
    let line = parts.next()?.parse().ok()?;
    let file = normalize_path(parts.next()?);
    Some(Location { file, line, column })
}

/// The location of the first `todo!()` panic (message `not yet implemented`) in the output.
pub fn todo_location(output: &str) -> Option<Location> {
    let lines: Vec<&str> = output.lines().map(without_libtest_prefix).collect();
    lines.iter().enumerate().find_map(|(i, line)| {
        let location = panic_location(line)?;
        let old_style = line.contains("panicked at 'not yet implemented");
        let next_is_todo = lines
            .get(i + 1)
            .is_some_and(|next| next.trim_start().starts_with("not yet implemented"));
        (old_style || next_is_todo).then_some(location)
    })
}

/// The name of the nearest `fn <ident>` at or above `line` (1-based) in `source`.
pub fn enclosing_fn(source: &str, line: usize) -> Option<String> {
    let lines: Vec<&str> = source.lines().collect();
    let last = line.min(lines.len());
    lines[..last].iter().rev().find_map(|text| fn_name(text))
}

/// `pub async fn serve(…)` → `serve`; comment lines and `fn` inside words don't count.
fn fn_name(line: &str) -> Option<String> {
    let code = line.trim_start();
    if code.starts_with("//") || code.starts_with('*') || code.starts_with("/*") {
        return None;
    }
    let mut search = code;
    loop {
        let at = search.find("fn ")?;
        let before_ok = at == 0
            || search[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_whitespace() || c == '(' || c == '{' || c == ';');
        let after = &search[at + 3..];
        let ident: String = after
            .trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if before_ok && !ident.is_empty() {
            return Some(ident);
        }
        search = after;
    }
}

/// The test's own failure text, without libtest's and the panic machinery's noise.
///
/// Kept: what the test printed and its assertion message. Dropped: `running 1 test`,
/// `test x ... FAILED`, the `failures:` lists, `test result:`, `note: run with
/// RUST_BACKTRACE…`, and `thread '…' panicked at …` headers — except that a panic inside
/// the learner's code is kept as "(panicked at exercises/…:L:C)", which is useful.
pub fn failure_text(output: &str, test_name: &str) -> Vec<String> {
    const MAX_LINES: usize = 60;
    let mut kept: Vec<String> = Vec::new();
    for line in output.lines() {
        let line = without_libtest_prefix(line);
        let trimmed = line.trim();
        if let Some(location) = panic_location(line) {
            if line.trim_start().starts_with("thread '") {
                if location.file.starts_with("exercises/")
                    || location.file.starts_with("solutions/")
                {
                    kept.push(format!(
                        "(panicked at {}:{}:{})",
                        location.file, location.line, location.column
                    ));
                }
                continue;
            }
        }
        let noise = trimmed.starts_with("running ")
            && (trimmed.ends_with(" test") || trimmed.ends_with(" tests"))
            || trimmed.starts_with(&format!("test {test_name} ..."))
            || trimmed == "ok"
            || trimmed == "FAILED"
            || trimmed == "failures:"
            || trimmed == "successes:"
            || trimmed == test_name
            || trimmed.starts_with("test result: ")
            || trimmed.starts_with("note: run with `RUST_BACKTRACE")
            || trimmed.starts_with("note: Some details are omitted")
            || (trimmed.starts_with("---- ") && trimmed.ends_with(" ----"))
            || trimmed.starts_with("error: test failed, to rerun pass");
        if !noise {
            kept.push(line.trim_end().to_string());
        }
    }
    // Collapse runs of blank lines and trim them at both ends.
    let mut lines: Vec<String> = Vec::new();
    for line in kept {
        if line.trim().is_empty() && lines.last().is_none_or(|l| l.trim().is_empty()) {
            continue;
        }
        lines.push(line);
    }
    while lines.last().is_some_and(|l| l.trim().is_empty()) {
        lines.pop();
    }
    // rstest's own time limit (`#[timeout(netlab::time_limit(N))]`): say how to stretch it.
    if lines
        .iter()
        .any(|l| l.contains("Timeout ") && l.contains(" expired"))
    {
        lines.push(format!(
            "(the check's time limit ran out: if your machine is slow or busy, \
             {TIME_SCALE_VAR}=3 cargo xtask check … gives every check three times as long)"
        ));
    }
    if lines.len() > MAX_LINES {
        let hidden = lines.len() - MAX_LINES;
        lines.drain(..hidden);
        lines.insert(0, format!("… ({hidden} earlier lines not shown)"));
    }
    lines
}

/// `netlab::TIME_SCALE_VAR`, the variable that stretches every check's time limit (xtask
/// does not link netlab).
const TIME_SCALE_VAR: &str = "COURSE_TIME_SCALE";

/// A panic's file, as written by rustc (relative to the workspace root for workspace
/// members, absolute otherwise), as an existing path.
fn resolve(root: &Path, file: &str) -> Option<PathBuf> {
    let path = Path::new(file);
    let candidates = [root.join(path), path.to_path_buf()];
    candidates.into_iter().find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::os::unix::process::ExitStatusExt;
    use std::process::ExitStatus;

    fn captured(code: i32, output: &str) -> Captured {
        Captured {
            status: Some(ExitStatus::from_raw(code << 8)),
            timed_out: false,
            output: output.to_string(),
            elapsed: Duration::from_millis(5),
        }
    }

    #[test]
    fn the_terse_list_is_parsed() {
        let list =
            "echo::replies_to_everyone: test\nechoes::case_1_small: test\nbench_x: benchmark\n\n";
        assert_eq!(
            parse_test_list(list),
            ["echo::replies_to_everyone", "echoes::case_1_small"]
        );
    }

    #[rstest]
    #[case::new_format(
        "thread 'main' panicked at exercises/01-udp-echo/src/lib.rs:42:9:",
        "exercises/01-udp-echo/src/lib.rs",
        42,
        9
    )]
    #[case::worker_thread(
        "thread 'tokio-runtime-worker' panicked at /abs/src/lib.rs:7:5:",
        "/abs/src/lib.rs",
        7,
        5
    )]
    #[case::old_format(
        "thread 'main' panicked at 'not yet implemented', src/lib.rs:3:5",
        "src/lib.rs",
        3,
        5
    )]
    fn panic_locations_are_parsed(
        #[case] line: &str,
        #[case] file: &str,
        #[case] at: usize,
        #[case] column: usize,
    ) {
        let location = panic_location(line).unwrap();
        assert_eq!(
            (location.file.as_str(), location.line, location.column),
            (file, at, column)
        );
    }

    #[test]
    fn nocapture_output_shares_a_line_with_libtest() {
        assert_eq!(
            skipped_reason("test check::x ... SKIPPED: no root\nok\n").as_deref(),
            Some("no root")
        );
        let output = "test check::t ... thread 'check::t' (4) panicked at exercises/a/tests/../src/lib.rs:4:5:\nnot yet implemented\n";
        assert_eq!(
            todo_location(output).unwrap().file,
            "exercises/a/src/lib.rs"
        );
        assert_eq!(
            normalize_path("exercises/01-x/tests/../../../checks/01-x.rs"),
            "checks/01-x.rs"
        );
        assert_eq!(normalize_path("/abs/./x.rs"), "/abs/x.rs");
    }

    #[test]
    fn todo_panics_are_found_in_any_thread() {
        let output = "running 1 test\n\
            thread 'echo' panicked at checks/01-udp-echo.rs:10:5:\nassertion failed\n\
            thread 'tokio-runtime-worker' panicked at exercises/01-udp-echo/src/lib.rs:30:5:\n\
            not yet implemented: bind the socket\n";
        let location = todo_location(output).unwrap();
        assert_eq!(location.file, "exercises/01-udp-echo/src/lib.rs");
        assert_eq!(location.line, 30);
        assert!(todo_location("thread 'x' panicked at a.rs:1:1:\nboom\n").is_none());
    }

    #[test]
    fn the_enclosing_fn_is_found_upward() {
        let source = "\
/// Bind a socket: see fn explained below.
pub async fn bind(addr: SocketAddr) -> io::Result<UdpSocket> {
    // fn not_this_one
    let f = |x| {
        todo!()
    };
}

fn other() {}
";
        assert_eq!(enclosing_fn(source, 5).as_deref(), Some("bind"));
        assert_eq!(enclosing_fn(source, 9).as_deref(), Some("other"));
        assert_eq!(enclosing_fn(source, 1), None);
        assert_eq!(
            fn_name("    pub(crate) fn on_datagram<'a>(x: u8)").as_deref(),
            Some("on_datagram")
        );
        assert_eq!(fn_name("let defn = 3;"), None);
        assert_eq!(fn_name("impl Fn(u8) for X"), None);
    }

    #[test]
    fn not_implemented_reads_the_source_file() {
        let dir = std::env::temp_dir().join(format!("xtask-outcome-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("src")).unwrap();
        std::fs::write(dir.join("src/lib.rs"), "pub fn serve() {\n    todo!()\n}\n").unwrap();
        let run = captured(
            101,
            "thread 'serve' panicked at src/lib.rs:2:5:\nnot yet implemented\nnote: run with `RUST_BACKTRACE=1`\n",
        );
        let verdict = classify(&run, "serve", &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            verdict,
            Verdict::NotImplemented {
                function: "serve".into(),
                location: "src/lib.rs:2".into()
            }
        );
    }

    #[test]
    fn skipped_wins_over_the_exit_code() {
        let run = captured(
            0,
            "running 1 test\nSKIPPED: needs CAP_NET_ADMIN (run as root)\n",
        );
        assert_eq!(
            classify(&run, "t", Path::new("/")),
            Verdict::Skip {
                reason: "needs CAP_NET_ADMIN (run as root)".into()
            }
        );
        let run = captured(101, "SKIPPED: user namespaces are blocked\n");
        assert!(matches!(
            classify(&run, "t", Path::new("/")),
            Verdict::Skip { .. }
        ));
        assert!(Verdict::Skip {
            reason: String::new()
        }
        .is_failure(true));
        assert!(!Verdict::Skip {
            reason: String::new()
        }
        .is_failure(false));
    }

    #[test]
    fn failures_keep_only_the_tests_words() {
        let output = "\nrunning 1 test\n\
            test echo::replies ... sent 5 bytes to 127.0.0.1:4000\n\
            thread 'echo::replies' panicked at checks/01-udp-echo.rs:40:5:\n\
            expected the reply to come from 127.0.0.1:4000, it came from 127.0.0.1:5000\n\
            note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n\
            FAILED\n\nfailures:\n\nfailures:\n    echo::replies\n\n\
            test result: FAILED. 0 passed; 1 failed; 0 ignored\n\n";
        let run = captured(101, output);
        let Verdict::Fail { details } = classify(&run, "echo::replies", Path::new("/")) else {
            panic!("not a failure")
        };
        assert_eq!(
            details,
            [
                "sent 5 bytes to 127.0.0.1:4000",
                "expected the reply to come from 127.0.0.1:4000, it came from 127.0.0.1:5000"
            ]
        );
    }

    #[test]
    fn the_same_error_is_shown_once_and_counted() {
        let topology = Verdict::Fail {
            details: vec!["invalid topology: dind1 has no route to 172.18.0.1".into()],
        };
        let other = Verdict::Fail {
            details: vec!["expected a reply".into()],
        };
        let mut seen = SeenErrors::default();
        assert_eq!(seen.note("a", &topology), None, "the first one is shown");
        assert_eq!(seen.note("b", &Verdict::Ok), None);
        assert_eq!(seen.note("c", &other), None, "another error is shown too");
        for test in ["d", "e", "f"] {
            assert_eq!(seen.note(test, &topology).as_deref(), Some("a"));
        }
        assert_eq!(seen.repeated().collect::<Vec<_>>(), [("a", 4)]);
        let timed_out = |secs| Verdict::TimedOut {
            after: Duration::from_secs(secs),
            details: vec!["waiting".into()],
        };
        assert_eq!(seen.note("g", &timed_out(20)), None);
        assert_eq!(seen.note("h", &timed_out(21)).as_deref(), Some("g"));
    }

    #[test]
    fn a_checks_own_time_limit_says_how_to_stretch_it() {
        let text = failure_text(
            "running 1 test\nthread 'x' panicked at checks/04-capture.rs:218:1:\nTimeout 30s expired\n",
            "x",
        );
        assert!(
            text.last()
                .is_some_and(|l| l.contains("COURSE_TIME_SCALE=3")),
            "{text:?}"
        );
    }

    #[test]
    fn a_timeout_is_a_failure_with_what_was_printed() {
        let mut run = captured(0, "waiting for a reply\n");
        run.status = None;
        run.timed_out = true;
        let verdict = classify(&run, "t", Path::new("/"));
        assert!(
            matches!(verdict, Verdict::TimedOut { ref details, .. } if details == &["waiting for a reply"])
        );
        assert!(verdict.is_failure(false));
    }
}
