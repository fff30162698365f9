//! Your progress, remembered in `.course/progress.json` (git-ignored).
//!
//! `check` records, per exercise, whether every check passed and a **hash of the
//! exercise folder's files** at that moment. An exercise is *done* only while its files
//! still hash the same: edit a passing exercise and it goes back to *failing* until you
//! check it again. An exercise that was never checked is *not started*.
//!
//! The hash is FNV-1a (64 bits) over the sorted relative paths and contents: tiny,
//! dependency-free, and stable across Rust versions (std's `DefaultHasher` is not
//! promised to be).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use course::{Course, Exercise};

/// The whole progress file.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// By exercise id.
    #[serde(default)]
    pub exercises: BTreeMap<String, Entry>,
}

/// The last check of one exercise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Every check passed (no failure, no skip).
    pub passed: bool,
    /// Hash of the exercise folder at that time.
    pub hash: String,
    /// e.g. "2 passed, 1 failed, 0 skipped".
    pub summary: String,
    /// Seconds since the Unix epoch.
    pub checked_at: u64,
}

/// Where an exercise stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    NotStarted,
    Failing,
    Done,
}

impl State {
    pub fn label(self) -> &'static str {
        match self {
            State::NotStarted => "not started",
            State::Failing => "failing",
            State::Done => "done",
        }
    }
}

pub fn path(root: &Path) -> PathBuf {
    root.join(".course").join("progress.json")
}

impl Progress {
    /// Read the progress file; a missing or unreadable one means "no progress yet".
    pub fn load(root: &Path) -> Progress {
        fs::read_to_string(path(root))
            .ok()
            .and_then(|text| serde_json::from_str(&text).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, root: &Path) -> Result<()> {
        let file = path(root);
        fs::create_dir_all(file.parent().unwrap_or(root))?;
        let text = serde_json::to_string_pretty(self)? + "\n";
        // Write then rename, so an interrupted write never leaves half a file.
        let tmp = file.with_extension("json.tmp");
        fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))
    }

    /// Remember the result of a check of `exercise` whose files hash to `hash`.
    pub fn record(&mut self, exercise: &Exercise, passed: bool, hash: String, summary: String) {
        let checked_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.exercises.insert(
            exercise.id.clone(),
            Entry {
                passed,
                hash,
                summary,
                checked_at,
            },
        );
    }

    pub fn forget(&mut self, exercise: &Exercise) {
        self.exercises.remove(&exercise.id);
    }

    /// The state of `exercise`, given the current hash of its files.
    pub fn state(&self, exercise: &Exercise, current_hash: &str) -> State {
        match self.exercises.get(&exercise.id) {
            None => State::NotStarted,
            Some(entry) if entry.passed && entry.hash == current_hash => State::Done,
            Some(_) => State::Failing,
        }
    }

    /// The state of every exercise, hashing the folders as they are now.
    pub fn states(&self, root: &Path, course: &Course) -> Vec<State> {
        course
            .exercises
            .iter()
            .map(|ex| self.state(ex, &hash_dir(&ex.exercise_dir(root))))
            .collect()
    }
}

/// FNV-1a over the folder's files (relative path, a zero byte, contents, a zero byte),
/// in sorted order, skipping `target/`.
pub fn hash_dir(dir: &Path) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for byte in bytes {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for rel in course::consistency::relative_files(dir) {
        feed(rel.as_bytes());
        feed(&[0]);
        feed(&fs::read(dir.join(&rel)).unwrap_or_default());
        feed(&[0]);
    }
    format!("{hash:016x}")
}

/// `[#######-------------] 1/3 done`
pub fn bar(done: usize, total: usize) -> String {
    const WIDTH: usize = 30;
    let filled = (done * WIDTH).checked_div(total).unwrap_or(0);
    format!(
        "[{}{}] {done}/{total} done",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(id: &str) -> Exercise {
        Exercise {
            id: id.into(),
            slug: "s".into(),
            title: "t".into(),
            dir: "01-s".into(),
            chapter: "c.md".into(),
            needs_root: false,
            hint: "h".into(),
        }
    }

    #[test]
    fn states_follow_the_last_check_and_the_files() {
        let ex = exercise("exercise-1");
        let mut progress = Progress::default();
        assert_eq!(progress.state(&ex, "aa"), State::NotStarted);
        progress.record(&ex, false, "aa".into(), String::new());
        assert_eq!(progress.state(&ex, "aa"), State::Failing);
        progress.record(&ex, true, "aa".into(), String::new());
        assert_eq!(progress.state(&ex, "aa"), State::Done);
        // Edited since it passed: no longer done.
        assert_eq!(progress.state(&ex, "bb"), State::Failing);
        progress.forget(&ex);
        assert_eq!(progress.state(&ex, "aa"), State::NotStarted);
    }

    #[test]
    fn progress_survives_a_round_trip_and_garbage_is_no_progress() {
        let root = std::env::temp_dir().join(format!("xtask-progress-{}", std::process::id()));
        let mut progress = Progress::default();
        progress.record(
            &exercise("exercise-2"),
            true,
            "cc".into(),
            "1 passed".into(),
        );
        progress.save(&root).unwrap();
        assert_eq!(Progress::load(&root), progress);
        fs::write(path(&root), "{ not json").unwrap();
        assert_eq!(Progress::load(&root), Progress::default());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn the_hash_sees_content_and_names_but_not_target() {
        let dir = std::env::temp_dir().join(format!("xtask-hash-{}", std::process::id()));
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(dir.join("src/lib.rs"), "fn a() {}").unwrap();
        let first = hash_dir(&dir);
        fs::create_dir_all(dir.join("target")).unwrap();
        fs::write(dir.join("target/x"), "junk").unwrap();
        assert_eq!(hash_dir(&dir), first);
        fs::write(dir.join("src/lib.rs"), "fn b() {}").unwrap();
        let second = hash_dir(&dir);
        assert_ne!(second, first);
        fs::rename(dir.join("src/lib.rs"), dir.join("src/main.rs")).unwrap();
        assert_ne!(hash_dir(&dir), second);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_bar_fills_in_proportion() {
        assert_eq!(bar(0, 3), format!("[{}] 0/3 done", "-".repeat(30)));
        assert_eq!(
            bar(1, 3),
            format!("[{}{}] 1/3 done", "#".repeat(10), "-".repeat(20))
        );
        assert_eq!(bar(0, 0), format!("[{}] 0/0 done", "-".repeat(30)));
    }
}
