//! The rule that keeps pasted outputs out of the book.
//!
//! Every terminal output a chapter shows must come from `book/src/outputs/` (or
//! `generated/`), written by `cargo xtask book --refresh`: a pasted one goes stale
//! silently. So each fenced block of a chapter is one of:
//!
//! - **code** — ```` ```rust ````, `rust,ignore`, `c`, `toml`, `diff`, `json`: source
//!   shown to be read, not output;
//! - **commands** — ```` ```console ````: only what the learner types, each line
//!   starting with `$ ` (or continuing the previous one after a `\`), or a `#` comment;
//!   the output goes in an included block below it;
//! - **an include** — any other block (```` ```text ````, `sh`, none) holds nothing but
//!   `{{#include outputs/…}}` or `{{#include generated/…}}` lines;
//! - **an illustration** — a hand-drawn figure, a formula, a file tree, a walk through
//!   the story written by hand: its info string says so, ```` ```text,illustration ````.
//!   Never a program's output.

use std::path::Path;

use anyhow::{Context, Result};

/// Languages whose blocks are source code.
const CODE: &[&str] = &["rust", "c", "toml", "diff", "json"];

/// One block that breaks the rule: `file:line: why`.
pub fn violations(src: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(src)
        .with_context(|| format!("cannot read {}", src.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        for problem in check_chapter(&text) {
            found.push(format!("book/src/{name}:{problem}"));
        }
    }
    Ok(found)
}

/// The blocks of one chapter that break the rule, as `line: why`.
pub fn check_chapter(text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let Some(info) = line.trim_start().strip_prefix("```") else {
            continue;
        };
        let info = info.trim().to_string();
        let mut body = Vec::new();
        for (_, line) in lines.by_ref() {
            if line.trim_start().starts_with("```") {
                break;
            }
            body.push(line.trim());
        }
        if let Some(why) = check_block(&info, &body) {
            problems.push(format!("{}: {why}", index + 1));
        }
    }
    problems
}

/// Why a block breaks the rule, if it does.
fn check_block(info: &str, body: &[&str]) -> Option<String> {
    let words: Vec<&str> = info.split([',', ' ']).filter(|w| !w.is_empty()).collect();
    let language = words.first().copied().unwrap_or("");
    if words.contains(&"illustration") || CODE.contains(&language) {
        return None;
    }
    if language == "console" {
        let mut continued = false;
        for line in body {
            let ok =
                continued || line.starts_with("$ ") || line.starts_with('#') || line.is_empty();
            if !ok {
                return Some(format!(
                    "a ```console block holds `{line}`, which is not a command: show what \
                     the commands print in a block that includes it from outputs/ \
                     (book/outputs.toml), below"
                ));
            }
            continued = line.ends_with('\\');
        }
        return None;
    }
    let pasted = body.iter().find(|line| {
        let included =
            line.starts_with("{{#include outputs/") || line.starts_with("{{#include generated/");
        !(line.is_empty() || included)
    });
    pasted.map(|line| {
        format!(
            "a ```{info} block holds `{line}` instead of an include: capture the output \
             (an entry of book/outputs.toml, then {{{{#include outputs/NAME.txt}}}}), or, \
             for a figure drawn by hand, say so: ```text,illustration"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pasted_output_is_caught_and_includes_code_commands_and_figures_pass() {
        let chapter = "intro\n\n```console\n$ ip route\n172.18.0.3 dev br-dind\n```\n\n\
            ```text\n{{#include outputs/x.txt}}\n```\n\n```text\nOK    a_check\n```\n\n\
            ```rust,ignore\nfn main() {}\n```\n\n```text,illustration\n a ── b\n```\n\n\
            ```console\n$ cargo build \\\n    -p lab\n```\n";
        let problems = check_chapter(chapter);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("3: ") && problems[0].contains("172.18.0.3"));
        assert!(problems[1].starts_with("12: ") && problems[1].contains("OK    a_check"));
    }
}
