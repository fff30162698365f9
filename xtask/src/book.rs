//! `cargo xtask book`: the book, built with a pinned mdBook, and its outputs kept true.
//!
//! Every terminal output the book shows is the real output of a real command, captured
//! by `cargo xtask book --refresh` into `book/src/outputs/NAME.txt` and pulled into the
//! chapters with mdBook's built-in `{{#include outputs/NAME.txt}}`. The commands are
//! listed once, in `book/outputs.toml`:
//!
//! ```toml
//! [[output]]
//! name = "check-1"                   # → book/src/outputs/check-1.txt
//! command = "cargo xtask check 1"    # run by `sh -c` in the course's root, NO_COLOR=1
//! masks = ["times"]                  # what may differ from one run to the next
//! root = false                       # needs root (skipped, and said so, without it)
//! ```
//!
//! `--check` (what CI runs) runs every command again and compares its output with the
//! file, after masking on both sides only what legitimately varies between runs (the
//! masks named in the entry: ports the kernel picks, durations, skb addresses, netns
//! inodes, pids). A difference fails CI: the book is behind the code.
//!
//! The files never contain a path of the machine they were captured on: the course's
//! root becomes a relative path and `$HOME` becomes `~` before anything is written,
//! and a capture still holding an absolute path of the checkout is refused.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use regex::Regex;
use serde::Deserialize;

use crate::{proc, style};

mod patched;
pub mod rule;

/// The mdBook the book is built with: exactly this one (0.5 changed the book format and
/// the preprocessor protocol). `cargo xtask book` installs it when missing.
pub const MDBOOK_VERSION: &str = "0.4.52";

/// What `cargo xtask book` does besides building.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Build,
    Serve,
    Refresh,
    Check,
    Browser,
}

impl From<&crate::cli::BookArgs> for Mode {
    fn from(args: &crate::cli::BookArgs) -> Mode {
        match (args.serve, args.refresh, args.check, args.browser) {
            (true, ..) => Mode::Serve,
            (_, true, ..) => Mode::Refresh,
            (_, _, true, _) => Mode::Check,
            (.., true) => Mode::Browser,
            _ => Mode::Build,
        }
    }
}

/// One entry of `book/outputs.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Output {
    /// The file's name, without `.txt`, in `book/src/outputs/`.
    pub name: String,
    /// A shell command line, run in the course's root.
    pub command: String,
    /// Names of [`masks`] applied before comparing.
    #[serde(default)]
    pub masks: Vec<String>,
    /// Needs root (eBPF, or the machine-wide view `doctor` gives as root).
    #[serde(default)]
    pub root: bool,
    /// Keep standard error too (default: standard output only; cargo's progress lines
    /// go to standard error).
    #[serde(default)]
    pub stderr: bool,
    /// Where to write it under `book/src/` (default `outputs/NAME.txt`), e.g. a figure:
    /// `generated/world.svg`.
    #[serde(default)]
    pub file: Option<String>,
    /// Keep only one numbered section of the output: `"5."` keeps from the line that
    /// starts with `5. ` to the next numbered heading (repro's steps). Entries with the
    /// same command share one run.
    #[serde(default)]
    pub section: Option<String>,
    /// The command must succeed (`check N --solution`): a failing run is an error, never
    /// a capture, so a broken build cannot slip into the book as its "success" output.
    #[serde(default)]
    pub must_pass: bool,
    /// Run the command on modified code: a copy of the checkout with this patch
    /// (`book/patches/NAME.patch`) applied, never `exercises/` or `solutions/` in place.
    #[serde(default)]
    pub patch: Option<String>,
}

impl Output {
    /// The file's path relative to `book/src/`.
    pub fn path(&self) -> String {
        self.file
            .clone()
            .unwrap_or_else(|| format!("outputs/{}.txt", self.name))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    output: Vec<Output>,
}

/// `book/outputs.toml`, parsed; every mask name checked.
pub fn manifest(root: &Path) -> Result<Vec<Output>> {
    let path = root.join("book").join("outputs.toml");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let manifest: Manifest =
        toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))?;
    let known: Vec<&str> = masks()
        .iter()
        .map(|(name, _, _)| *name)
        .chain(ORDER_MASKS.iter().copied())
        .collect();
    for output in &manifest.output {
        for mask in &output.masks {
            if !known.contains(&mask.as_str()) {
                bail!(
                    "book/outputs.toml: output {:?} names an unknown mask {mask:?} (known: {})",
                    output.name,
                    known.join(", ")
                );
            }
        }
    }
    Ok(manifest.output)
}

/// The masks: a name, a pattern, and what each match becomes. Only what legitimately
/// changes between two runs of the same code on the same machine.
fn masks() -> &'static [(&'static str, Regex, &'static str)] {
    use std::sync::OnceLock;
    static MASKS: OnceLock<Vec<(&'static str, Regex, &'static str)>> = OnceLock::new();
    MASKS.get_or_init(|| {
        let re = |pattern: &str| Regex::new(pattern).expect("a valid mask pattern");
        vec![
            // Ephemeral ports (Linux's default range 32768–60999); the story's fixed
            // client port 34320 is handled in `mask` (it must stay).
            ("ports", re(r"\b(3[2-9]|[4-5]\d|60)\d{3}\b"), "PORT"),
            // Durations and instants: 138ms, +0.146ms, 2.0s, 12µs, 0.03s.
            ("times", re(r"[+]?\d+(\.\d+)?\s?(ns|µs|us|ms|s)\b"), "TIME"),
            // skb addresses.
            ("skb", re(r"\b0x[0-9a-f]{8,16}\b"), "SKB"),
            // Network namespace inodes (4026531840 and up).
            ("netns", re(r"\b40265\d{5}\b"), "NETNS"),
            // The machine's kernel release and sysctl values (doctor's lines).
            (
                "kernel",
                re(r"\b\d+\.\d+\.\d+-[\w.+-]+|max_user_namespaces=\d+|\+0x[0-9a-f]+\b"),
                "KERNEL",
            ),
            // The seconds a conntrack entry has left (`udp 17 27 src=…`, `tcp 6 431998
            // ESTABLISHED`): they count down while the command runs.
            (
                "conntrack",
                re(r"\b(udp|tcp|icmp|unknown)(\s+\d+\s+)\d+\b"),
                "${1}${2}TIMEOUT",
            ),
            // … and the id of an ICMP echo (`ping` picks it).
            ("conntrack", re(r"\bid=\d+"), "id=ID"),
            // Packet and byte counters (`[2:80]` in iptables-save, `pkts bytes` columns
            // of iptables -L -v): IPv6 and IGMP housekeeping adds to them.
            ("counters", re(r"\[\d+:\d+\]"), "[N:N]"),
            // Capture times (tshark's seconds since the first frame, dates), and the
            // MAC addresses the kernel gives new interfaces.
            (
                "frames",
                re(r"(-|\b)\d+\.\d{6,9}\b|\w{3} \d+, \d{4} [\d:.]+ UTC|\b\d\d:\d\d:\d\d\.\d+\b|\b([0-9a-f]{2}:){5}[0-9a-f]{2}\b"),
                "STAMP",
            ),
            // … and how many frames a whole capture holds: the new interfaces' IPv6 and
            // IGMP housekeeping comes when it comes.
            ("frames", re(r"\b\d+ frames written"), "N frames written"),
            // Socket inodes and kernel pointers in /proc/net/{udp,tcp}, and `ss`'s
            // queue columns are left alone; BTF type ids, sizes and bit offsets of this
            // kernel's build (bpftool's dumps), and enum values.
            (
                "btf",
                re(r"\[\d+\]|\b(type_id|vlen|bits_offset|val|size)=\d+"),
                "${1}=N",
            ),
            // /proc/net/{udp,tcp}: the slot number, ephemeral ports (hex, the kernel's
            // default range 0x8000–0xEE47; the story's 34320 is 8610 and stays), and the
            // socket's inode, reference count and kernel address.
            ("proc-net", re(r"(?m)^\s*\d+:"), "N:"),
            ("proc-net", re(r":[89A-E][0-9A-F]{3}\b"), ":PORT"),
            (
                "proc-net",
                re(r"\b\d+ \d+ [0-9a-f]{16}\b"),
                "INODE REF POINTER",
            ),
            // How much of a stream made it before a deliberately broken relay stopped
            // (`left: 128128`): a race, by design of the broken code.
            ("echo-length", re(r"left: \d+"), "left: N"),
            // Process ids.
            ("pids", re(r"\bpid[ =:]?\d+"), "pid PID"),
            // … and the thread ids of Rust's panic messages (`thread 'name' (30259) panicked`).
            ("pids", re(r"' \(\d+\) panicked"), "' (TID) panicked"),
            // Column padding that follows a masked value of another width.
            ("spaces", re(r"[ \t]+"), " "),
        ]
    })
}

/// Masks that are not patterns: `conntrack-order`, the order in which the kernel lists
/// conntrack entries (its hash table's), which changes from run to run.
/// `socket-order`: the order of sockets in `ss` and /proc/net/{udp,tcp} (hash buckets),
/// compared sorted after the other masks.
const ORDER_MASKS: &[&str] = &["conntrack-order", "socket-order"];

/// Consecutive socket lines (`ESTAB …`, `N: 0100007F:…`) sorted.
fn sort_socket_runs(text: &str) -> String {
    let socket = Regex::new(r"^\s*(ESTAB|UNCONN|LISTEN|N:|\d+:) ").expect("valid");
    let mut out: Vec<&str> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if socket.is_match(line) {
            run.push(line);
            continue;
        }
        run.sort_unstable();
        out.append(&mut run);
        out.push(line);
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n")
}

/// Consecutive conntrack lines (`src=… dst=…`) sorted, so their order does not count.
fn sort_conntrack_runs(text: &str) -> String {
    let is_entry = |line: &str| line.contains("src=") && line.contains("dst=");
    let mut out: Vec<&str> = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in text.split('\n') {
        if is_entry(line) {
            run.push(line);
            continue;
        }
        run.sort_unstable();
        out.append(&mut run);
        out.push(line);
    }
    run.sort_unstable();
    out.append(&mut run);
    out.join("\n")
}

/// `text` with the named masks applied (the story's port 34320 is kept).
pub fn mask(text: &str, names: &[String]) -> String {
    let mut text = text
        .replace("34320", "STORYPORT")
        .replace(":8610", ":STORYHEX");
    if names.iter().any(|n| n == "conntrack-order") {
        text = sort_conntrack_runs(&text);
    }
    // "spaces" last: it evens out the columns the others changed.
    for (name, pattern, replacement) in masks() {
        if names.iter().any(|n| n == name) {
            text = pattern.replace_all(&text, *replacement).into_owned();
        }
    }
    // Sorted again once masked: entries whose timeouts or ports differ sorted apart.
    if names.iter().any(|n| n == "conntrack-order") {
        text = sort_conntrack_runs(&text);
    }
    if names.iter().any(|n| n == "socket-order") {
        text = sort_socket_runs(&text);
    }
    text.replace("STORYPORT", "34320")
        .replace(":STORYHEX", ":8610")
}

/// The course's root and `$HOME` taken out of `text`, and the colours, if any.
pub fn relativize(text: &str, root: &Path) -> String {
    let ansi = Regex::new("\x1b\\[[0-9;]*m").expect("valid");
    let mut text = ansi.replace_all(text, "").into_owned();
    let root = root.display().to_string();
    text = text.replace(&format!("{root}/"), "").replace(&root, ".");
    if let Some(home) = std::env::var_os("HOME") {
        let home = home.to_string_lossy().to_string();
        if home.len() > 1 {
            text = text.replace(&home, "~");
        }
    }
    text
}

/// `cargo xtask book [--serve | --refresh | --check]`.
pub fn book(root: &Path, args: &crate::cli::BookArgs) -> Result<ExitCode> {
    let mode = Mode::from(args);
    let mdbook = ensure_mdbook(root)?;
    let only = &args.only;
    match mode {
        Mode::Build => Ok(crate::exit(build(root, &mdbook)?)),
        Mode::Serve => {
            let ok = proc::run_visible(
                Command::new(&mdbook)
                    .current_dir(root)
                    .args(["serve", "book"]),
            )?;
            Ok(crate::exit(ok))
        }
        Mode::Refresh => {
            let ok = refresh(root, only)?;
            Ok(crate::exit(ok && build(root, &mdbook)?))
        }
        Mode::Check => {
            let ok = check(root, only)?;
            Ok(crate::exit(ok && build(root, &mdbook)?))
        }
        Mode::Browser => Ok(crate::exit(build(root, &mdbook)? && browser(root)?)),
    }
}

/// Open every page of the built book in headless Chromium (`book/test/browser.mjs`,
/// driven over the DevTools protocol by Node, no npm package): no console error, every
/// internal link and anchor resolves, figures are SVGs that render, no output block
/// overflows its column at 1280 px, the search finds "conntrack". Screenshots of the
/// world's figure and of the hop table go to `target/book-screenshots/`.
pub fn browser(root: &Path) -> Result<bool> {
    let missing: Vec<&str> = ["node", "chromium"]
        .into_iter()
        .filter(|tool| proc::which(tool).is_none())
        .collect();
    if !missing.is_empty() {
        println!(
            "  {}  the browser test needs {}: cargo xtask setup installs them (Debian: \
             apt-get install nodejs chromium fonts-noto-cjk)",
            style::red("FAIL"),
            missing.join(" and ")
        );
        return Ok(false);
    }
    println!("{}", style::bold("book: every page in headless Chromium"));
    proc::run_visible(
        Command::new("node")
            .current_dir(root)
            .arg("--experimental-websocket")
            .arg("book/test/browser.mjs")
            .arg("book/book")
            .arg("target/book-screenshots"),
    )
}

/// `mdbook build book`; true if it succeeded.
pub fn build(root: &Path, mdbook: &Path) -> Result<bool> {
    println!(
        "{}",
        style::bold(&format!("book: mdbook {MDBOOK_VERSION} build book"))
    );
    let ok = proc::run_visible(
        Command::new(mdbook)
            .current_dir(root)
            .args(["build", "book"]),
    )?;
    if ok {
        println!("book: open book/book/index.html (or: cargo xtask book --serve)");
    }
    Ok(ok)
}

/// The version an `mdbook` binary reports (`mdbook v0.4.52` → `0.4.52`).
fn version_of(mdbook: &Path) -> Option<String> {
    let out = Command::new(mdbook).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Some(
        text.trim()
            .trim_start_matches("mdbook")
            .trim()
            .trim_start_matches('v')
            .to_string(),
    )
}

/// The pinned mdBook: the one on PATH if it is that version, else the one in
/// `.course/tools/bin/`, installed there (`cargo install --root`) when missing, so a
/// different mdBook of the learner's is left alone.
pub fn ensure_mdbook(root: &Path) -> Result<PathBuf> {
    if let Some(found) = proc::which("mdbook") {
        if version_of(&found).as_deref() == Some(MDBOOK_VERSION) {
            return Ok(found);
        }
    }
    let tools = root.join(".course").join("tools");
    let local = tools.join("bin").join("mdbook");
    if local.is_file() && version_of(&local).as_deref() == Some(MDBOOK_VERSION) {
        return Ok(local);
    }
    println!(
        "{} cargo install mdbook --locked --version ={MDBOOK_VERSION} --root .course/tools ({})",
        style::bold("book:"),
        crate::setup::MDBOOK_ESTIMATE
    );
    let mut cmd = proc::cargo();
    cmd.current_dir(root)
        .args(["install", "mdbook", "--locked", "--version"])
        .arg(format!("={MDBOOK_VERSION}"))
        .arg("--root")
        .arg(&tools);
    let ok = crate::setup::cargo_install(cmd, "cargo install mdbook", crate::setup::MDBOOK_CRATES)?;
    if !ok || !local.is_file() {
        bail!("cargo install mdbook {MDBOOK_VERSION} failed (see above)");
    }
    Ok(local)
}

/// The captures are of the untouched stubs and a fresh learner: refuse to run on a
/// checkout whose exercises were edited.
fn ensure_pristine_exercises(root: &Path) -> Result<()> {
    let status = Command::new("git")
        .current_dir(root)
        .args(["status", "--porcelain", "--", "exercises"])
        .output();
    match status {
        Ok(out) if out.status.success() && !out.stdout.is_empty() => bail!(
            "exercises/ differs from git ({}): the book shows the untouched stubs; \
             capture from a clean checkout (git stash, or a fresh clone)",
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
        ),
        _ => Ok(()),
    }
}

/// One run per distinct command, shared by the entries that show sections of it.
#[derive(Default)]
struct Runs(std::collections::HashMap<String, String>);

impl Runs {
    /// The entry's text: its command's output (run once), cut to its section.
    fn text(&mut self, root: &Path, output: &Output) -> Result<String> {
        // The same command on patched code is another run.
        let key = format!(
            "{}\0{}",
            output.command,
            output.patch.as_deref().unwrap_or("")
        );
        let whole = match self.0.get(&key) {
            Some(text) => text.clone(),
            None => {
                let text = capture(root, output)?;
                self.0.insert(key, text.clone());
                text
            }
        };
        match &output.section {
            None => Ok(whole),
            Some(number) => section(&whole, number)
                .with_context(|| format!("`{}` printed no section {number}", output.command)),
        }
    }
}

/// The heading that starts with `number ` (`"5."`) and the indented lines under it,
/// without trailing blank lines (a section ends at the next line that is not indented:
/// the next numbered heading, or the closing words).
fn section(text: &str, number: &str) -> Option<String> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.starts_with(&format!("{number} ")));
    let first = lines.next()?;
    let mut kept = vec![first];
    kept.extend(lines.take_while(|l| l.trim().is_empty() || l.starts_with(' ')));
    while kept.last().is_some_and(|l| l.trim().is_empty()) {
        kept.pop();
    }
    Some(kept.join("\n") + "\n")
}

/// Run one entry's command as a fresh learner would see it: colours off, no progress
/// recorded (the learner's own `.course/progress.json` is put back afterwards).
/// Returns the output with the machine's paths taken out.
pub fn capture(root: &Path, output: &Output) -> Result<String> {
    let mut cmd = Command::new("sh");
    let dir = match &output.patch {
        Some(patch) => {
            let copy = patched::prepare(root, patch)?;
            patched::configure(&mut cmd, root);
            copy
        }
        None => root.to_path_buf(),
    };
    let progress = root.join(".course").join("progress.json");
    let saved = std::fs::read(&progress).ok();
    let _ = std::fs::remove_file(&progress);
    cmd.current_dir(&dir)
        .arg("-c")
        .arg(if output.stderr {
            format!("{} 2>&1", output.command)
        } else {
            format!("{} 2>/dev/null", output.command)
        })
        .env("NO_COLOR", "1")
        .env("CARGO_TERM_COLOR", "never")
        .env_remove("CI");
    let result = cmd.output();
    match saved {
        Some(bytes) => std::fs::write(&progress, bytes)?,
        None => {
            let _ = std::fs::remove_file(&progress);
        }
    }
    let out = result.with_context(|| format!("cannot run `{}`", output.command))?;
    if output.must_pass && !out.status.success() {
        bail!(
            "`{}` must succeed but failed ({}): fix that first, then refresh",
            output.command,
            out.status
        );
    }
    // The copy's paths first (it lives inside the checkout), then the checkout's.
    let text = relativize(&String::from_utf8_lossy(&out.stdout), &dir);
    let text = relativize(&text, root);
    if text.trim().is_empty() {
        bail!("`{}` printed nothing (exit {})", output.command, out.status);
    }
    if text.contains(&root.display().to_string()) {
        bail!(
            "`{}`: an absolute path of the checkout survived",
            output.command
        );
    }
    Ok(text)
}

fn book_src(root: &Path) -> PathBuf {
    root.join("book").join("src")
}

/// Should this entry run here? (Root-only entries are skipped without root, and said so.)
fn runnable(output: &Output) -> bool {
    if output.root && !proc::is_root() {
        println!(
            "  {}  {:<24} needs root (eBPF or the machine's view): kept as it is",
            style::yellow("SKIP"),
            output.name
        );
        return false;
    }
    true
}

/// The manifest's outputs, or only those named (each name must exist).
fn selected(root: &Path, only: &[String]) -> Result<Vec<Output>> {
    let all = manifest(root)?;
    for name in only {
        if !all.iter().any(|o| &o.name == name) {
            bail!("book/outputs.toml has no output named {name:?}");
        }
    }
    Ok(all
        .into_iter()
        .filter(|o| only.is_empty() || only.contains(&o.name))
        .collect())
}

/// `--refresh`: run every command and write its file.
pub fn refresh(root: &Path, only: &[String]) -> Result<bool> {
    ensure_pristine_exercises(root)?;
    let dir = book_src(root);
    let mut ok = true;
    let mut runs = Runs::default();
    for output in selected(root, only)? {
        if !runnable(&output) {
            continue;
        }
        let started = Instant::now();
        match runs.text(root, &output) {
            Ok(text) => {
                let path = dir.join(output.path());
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::write(path, text)?;
                println!(
                    "  {}    {:<24} {}  ({:.1}s)",
                    style::green("OK"),
                    output.name,
                    output.command,
                    started.elapsed().as_secs_f64()
                );
            }
            Err(error) => {
                ok = false;
                println!("  {}  {:<24} {error:#}", style::red("FAIL"), output.name);
            }
        }
    }
    Ok(ok)
}

/// `--check`: no chapter pastes an output ([`rule`]); then run every command again: its
/// masked output must equal the masked file.
pub fn check(root: &Path, only: &[String]) -> Result<bool> {
    ensure_pristine_exercises(root)?;
    let pasted = rule::violations(&book_src(root))?;
    for problem in &pasted {
        println!("  {}  {problem}", style::red("FAIL"));
    }
    if pasted.is_empty() {
        println!(
            "  {}    every output block of the book is included from outputs/",
            style::green("OK")
        );
    }
    let dir = book_src(root);
    let mut ok = true;
    let mut runs = Runs::default();
    let all = Instant::now();
    for output in selected(root, only)? {
        let path = dir.join(output.path());
        let Ok(recorded) = std::fs::read_to_string(&path) else {
            ok = false;
            println!(
                "  {}  {:<24} book/src/{} is missing: cargo xtask book --refresh",
                style::red("FAIL"),
                output.name,
                output.path()
            );
            continue;
        };
        if !runnable(&output) {
            continue;
        }
        let started = Instant::now();
        let now = match runs.text(root, &output) {
            Ok(text) => text,
            Err(error) => {
                ok = false;
                println!("  {}  {:<24} {error:#}", style::red("FAIL"), output.name);
                continue;
            }
        };
        let (was, is) = (mask(&recorded, &output.masks), mask(&now, &output.masks));
        if was == is {
            println!(
                "  {}    {:<24} {}  ({:.1}s)",
                style::green("OK"),
                output.name,
                output.command,
                started.elapsed().as_secs_f64()
            );
        } else {
            ok = false;
            println!(
                "  {}  {:<24} `{}` prints something else now: the book is behind the code \
                 (cargo xtask book --refresh, then read the diff)",
                style::red("FAIL"),
                output.name,
                output.command
            );
            for line in first_difference(&was, &is) {
                println!("        {line}");
            }
        }
    }
    println!(
        "book: every output checked in {:.1}s",
        all.elapsed().as_secs_f64()
    );
    Ok(ok && pasted.is_empty())
}

/// The first lines that differ, as `- book` / `+ now`.
fn first_difference(was: &str, is: &str) -> Vec<String> {
    let (a, b): (Vec<&str>, Vec<&str>) = (was.lines().collect(), is.lines().collect());
    let first = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut lines = vec![format!("(masked, from line {})", first + 1)];
    lines.extend(a.iter().skip(first).take(3).map(|l| format!("- {l}")));
    lines.extend(b.iter().skip(first).take(3).map(|l| format!("+ {l}")));
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_what_varies_and_keep_the_story() {
        let names: Vec<String> = ["ports", "times", "skb", "netns", "spaces"]
            .map(String::from)
            .to_vec();
        let a = "  6  +0.146ms  host (4026532246)   172.18.0.1:49561 > 172.18.0.3:34320 skb 0xffff8881234abcd0";
        let b = "  6  +12.5ms  host (4026532999)   172.18.0.1:37047 > 172.18.0.3:34320 skb 0xffff888100000000";
        assert_eq!(mask(a, &names), mask(b, &names));
        assert!(mask(a, &names).contains(":34320"));
        assert!(mask(a, &names).contains(":4000") || !a.contains(":4000"));
        // The kernel lists conntrack entries in its own order.
        let order = vec!["conntrack-order".to_string()];
        assert_eq!(
            mask("x\nsrc=1 dst=2\nsrc=3 dst=4\ny", &order),
            mask("x\nsrc=3 dst=4\nsrc=1 dst=2\ny", &order)
        );
        // A different address is a real difference.
        let c = a.replace("172.18.0.1", "192.168.0.239");
        assert_ne!(mask(a, &names), mask(&c, &names));
    }

    #[test]
    fn a_section_runs_to_the_next_numbered_heading() {
        let text = "intro\n1. One\n  a\n\n2. Two\n  b\n  c\n\n3. Three\n\nThe end.\n";
        assert_eq!(section(text, "2.").as_deref(), Some("2. Two\n  b\n  c\n"));
        assert_eq!(section(text, "3.").as_deref(), Some("3. Three\n"));
        assert_eq!(section(text, "4."), None);
    }

    #[test]
    fn relativize_removes_the_checkout_and_home() {
        let root = Path::new("/some/where/course");
        let text =
            "at /some/where/course/exercises/01-udp-echo/src/lib.rs:45 in /some/where/course";
        assert_eq!(
            relativize(text, root),
            "at exercises/01-udp-echo/src/lib.rs:45 in ."
        );
    }

    #[test]
    fn no_chapter_pastes_an_output() {
        let (root, _) = course::Course::discover().unwrap();
        let problems = rule::violations(&root.join("book").join("src")).unwrap();
        assert!(
            problems.is_empty(),
            "outputs pasted into the book (capture them: book/outputs.toml):\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_manifest_parses_and_names_only_known_masks() {
        let (root, _) = course::Course::discover().unwrap();
        let outputs = manifest(&root).unwrap();
        assert!(!outputs.is_empty());
        let mut names: Vec<&str> = outputs.iter().map(|o| o.name.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len(), "two outputs share a name");
    }

    #[test]
    fn every_include_in_the_book_names_a_captured_file_and_every_capture_is_used() {
        let (root, _) = course::Course::discover().unwrap();
        let src = root.join("book").join("src");
        let outputs = manifest(&root).unwrap();
        let include = Regex::new(r"\{\{#include outputs/([\w.-]+)\.txt").unwrap();
        let mut used = std::collections::BTreeSet::new();
        let mut text_all = String::new();
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                let text = std::fs::read_to_string(&path).unwrap();
                text_all.push_str(&text);
                for (_, [name]) in include.captures_iter(&text).map(|c| c.extract()) {
                    assert!(
                        outputs.iter().any(|o| o.name == name),
                        "{} includes outputs/{name}.txt, which book/outputs.toml does not produce",
                        path.display()
                    );
                    used.insert(name.to_string());
                }
            }
        }
        for output in &outputs {
            assert!(
                used.contains(&output.name) || text_all.contains(&format!("({})", output.path())),
                "book/outputs.toml captures {:?}, which no chapter includes",
                output.name
            );
        }
    }
}
