//! Outputs of deliberately modified code: what a check says about a wrong answer.
//!
//! A chapter shows, say, the reference answer with a 2048-byte buffer failing its check.
//! That failure is captured like every other output — by running it — but never by
//! editing `exercises/` or `solutions/` in place: the checkout is copied (its tracked
//! files, as they are now) to `target/book-patched/`, the entry's patch
//! (`book/patches/NAME.patch`, a unified diff against the course's root) is applied to
//! the copy, and the command runs there. The copy lives in one fixed place, with a
//! `target/` of its own (`target/book-patched-target/`: sharing the checkout's would let
//! the copy's binaries, `target/debug/xtask` and the like, replace the checkout's), so a
//! second patched run rebuilds only what its patch touched.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Where the patched copy lives.
pub fn copy_dir(root: &Path) -> PathBuf {
    root.join("target").join("book-patched")
}

/// A fresh copy of the checkout's tracked files with `patch` applied; returns its root.
pub fn prepare(root: &Path, patch: &str) -> Result<PathBuf> {
    let copy = copy_dir(root);
    let listed = Command::new("git")
        .current_dir(root)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .context("cannot run `git ls-files` (the book's patched outputs need a git checkout)")?;
    if !listed.status.success() {
        bail!("`git ls-files` failed: the book's patched outputs need a git checkout");
    }
    let names: std::collections::BTreeSet<String> = listed
        .stdout
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    // What a previous patch added (or the checkout since deleted) goes first…
    remove_unlisted(&copy, &copy, &names)?;
    // … then every file, copied over what a previous patch changed: the copy is the
    // checkout again, and files that did not change keep their times (cargo rebuilds less).
    for name in &names {
        let (from, to) = (root.join(name), copy.join(name));
        let Ok(bytes) = std::fs::read(&from) else {
            continue; // deleted in the working tree
        };
        if std::fs::read(&to).ok().as_deref() == Some(bytes.as_slice()) {
            continue;
        }
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&to, &bytes).with_context(|| format!("cannot write {}", to.display()))?;
        let mode = std::fs::metadata(&from)?.permissions();
        std::fs::set_permissions(&to, mode)?;
    }
    // The course's tools (docker-proxy, mdbook) and the learner's progress: the same.
    let course = copy.join(".course");
    if std::fs::symlink_metadata(&course).is_err() && root.join(".course").exists() {
        std::os::unix::fs::symlink(root.join(".course"), &course)?;
    }
    let file = root.join(patch);
    let diff = std::fs::File::open(&file)
        .with_context(|| format!("cannot open the patch {}", file.display()))?;
    let out = Command::new("patch")
        .current_dir(&copy)
        .args(["-p1", "--forward", "--no-backup-if-mismatch", "-s"])
        .stdin(diff)
        .output()
        .context("cannot run `patch` (Debian: apt-get install patch)")?;
    if !out.status.success() {
        bail!(
            "{patch} no longer applies to the checkout (the code moved): update it \
             (`diff -u`) — patch said: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }
    Ok(copy)
}

/// Remove the files under `dir` (in the copy `top`) that `names` does not list; the link
/// to the checkout's `.course/` stays.
fn remove_unlisted(
    top: &Path,
    dir: &Path,
    names: &std::collections::BTreeSet<String>,
) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(()); // no copy yet
    };
    for entry in entries {
        let path = entry?.path();
        let relative = path.strip_prefix(top)?.to_string_lossy().into_owned();
        if relative == ".course" {
            continue;
        }
        if path.is_dir() && !path.is_symlink() {
            remove_unlisted(top, &path, names)?;
        } else if !names.contains(&relative) {
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(())
}

/// `Command`'s environment for a run in the copy: its own target directory.
pub fn configure(command: &mut Command, root: &Path) {
    command.env(
        "CARGO_TARGET_DIR",
        root.join("target").join("book-patched-target"),
    );
}
