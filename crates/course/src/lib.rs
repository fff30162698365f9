//! The course's metadata model.
//!
//! `course.toml`, at the root of the workspace, is the **only** list of the course's
//! exercises. Everything else — the `cargo xtask` CLI, the consistency tests, the book's
//! table of contents check — reads it through this crate, so that nothing ever lists the
//! exercises twice by hand.
//!
//! From one `[[exercise]]` entry with `dir = "NN-slug"` follow, by convention:
//!
//! | what                         | where                      | see                          |
//! |------------------------------|----------------------------|------------------------------|
//! | what the learner edits       | `exercises/NN-slug/`       | [`Exercise::exercise_dir`]   |
//! | the reference answer         | `solutions/NN-slug/`       | [`Exercise::solution_dir`]   |
//! | their packages               | `exercise-<slug>`, `solution-<slug>` | [`Exercise::exercise_package`] |
//! | the one copy of its checks   | `checks/NN-slug.rs`        | [`Exercise::check_file`]     |
//! | its chapter of the book      | `book/src/<chapter>`       | [`Exercise::chapter_path`]   |
//!
//! [`consistency`] turns each of those conventions into a test that fails, with a
//! message saying what to fix, when the tree and `course.toml` disagree.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

pub mod consistency;

/// The name of the metadata file, which also marks the workspace root.
pub const COURSE_FILE: &str = "course.toml";

/// The whole course: its exercises, in the order a learner meets them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Course {
    /// Every `[[exercise]]` table of `course.toml`, in file order.
    #[serde(rename = "exercise", default)]
    pub exercises: Vec<Exercise>,
}

/// One `[[exercise]]` entry of `course.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exercise {
    /// `exercise-N`, N counting from 1 in file order (checked by [`consistency`]).
    pub id: String,
    /// Short name, used for the package names: `exercise-<slug>`, `solution-<slug>`.
    pub slug: String,
    /// One line for humans.
    pub title: String,
    /// Folder name under `exercises/`, `solutions/` and (with `.rs`) `checks/`: `NN-slug`.
    pub dir: String,
    /// File name of the chapter under `book/src/`.
    pub chapter: String,
    /// Do its checks need real root (not just a user namespace)?
    #[serde(default)]
    pub needs_root: bool,
    /// What `cargo xtask hint` prints.
    pub hint: String,
}

impl Course {
    /// Parse the text of a `course.toml`.
    pub fn parse(text: &str) -> Result<Course> {
        let course: Course = toml::from_str(text).context("course.toml is not valid")?;
        Ok(course)
    }

    /// Read and parse `<root>/course.toml`.
    pub fn load(root: &Path) -> Result<Course> {
        let path = root.join(COURSE_FILE);
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        Course::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// Find the workspace root (see [`workspace_root`]) and load its `course.toml`.
    pub fn discover() -> Result<(PathBuf, Course)> {
        let root = workspace_root()?;
        let course = Course::load(&root)?;
        Ok((root, course))
    }

    /// Resolve what a learner typed into an exercise.
    ///
    /// Accepted spellings, for the third exercise `03-udp-proxy`: `exercise-3`, `3`, `03`,
    /// `udp-proxy` (its slug), `03-udp-proxy` (its folder), and the package names
    /// `exercise-udp-proxy` / `solution-udp-proxy`. Anything else is an error that lists
    /// the valid names, so a typo is one glance away from its fix.
    pub fn find(&self, name: &str) -> Result<&Exercise> {
        let wanted = name.trim();
        let by_number = wanted.parse::<u32>().ok();
        let found = self.exercises.iter().enumerate().find(|(_, ex)| {
            (by_number.is_some() && by_number == ex.number())
                || ex.id == wanted
                || ex.slug == wanted
                || ex.dir == wanted
                || ex.exercise_package() == wanted
                || ex.solution_package() == wanted
        });
        match found {
            Some((_, exercise)) => Ok(exercise),
            None => bail!(
                "there is no exercise called `{wanted}`. Valid names:\n{}",
                self.name_table()
            ),
        }
    }

    /// One line per exercise: `  exercise-3 | 3 | udp-proxy   Docker's NAT and …`.
    pub fn name_table(&self) -> String {
        self.exercises
            .iter()
            .map(|ex| {
                let number = ex.number().map_or("?".to_string(), |n| n.to_string());
                format!("  {} | {number} | {}   {}", ex.id, ex.slug, ex.title)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Exercise {
    /// N of `exercise-N` (ids may skip numbers; the number is what learners type).
    pub fn number(&self) -> Option<u32> {
        self.id.strip_prefix("exercise-")?.parse().ok()
    }

    /// The learner's package: `exercise-<slug>`.
    pub fn exercise_package(&self) -> String {
        format!("exercise-{}", self.slug)
    }

    /// The reference answer's package: `solution-<slug>`.
    pub fn solution_package(&self) -> String {
        format!("solution-{}", self.slug)
    }

    /// `<root>/exercises/<dir>`.
    pub fn exercise_dir(&self, root: &Path) -> PathBuf {
        root.join("exercises").join(&self.dir)
    }

    /// `<root>/solutions/<dir>`.
    pub fn solution_dir(&self, root: &Path) -> PathBuf {
        root.join("solutions").join(&self.dir)
    }

    /// `<root>/checks/<dir>.rs`: the one copy of the exercise's checks.
    pub fn check_file(&self, root: &Path) -> PathBuf {
        root.join("checks").join(format!("{}.rs", self.dir))
    }

    /// `<root>/book/src/<chapter>`.
    pub fn chapter_path(&self, root: &Path) -> PathBuf {
        root.join("book").join("src").join(&self.chapter)
    }
}

impl fmt::Display for Exercise {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.id, self.slug)
    }
}

/// Find the workspace root: the nearest directory holding `course.toml`.
///
/// Tried in order: the runtime `CARGO_MANIFEST_DIR` (set by `cargo run` and `cargo
/// test`), the current directory, and the directory this crate was compiled in. Each
/// is walked upwards.
pub fn workspace_root() -> Result<PathBuf> {
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Some(dir) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(PathBuf::from(dir));
    }
    if let Ok(dir) = std::env::current_dir() {
        starts.push(dir);
    }
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    starts
        .iter()
        .find_map(|start| find_root_from(start))
        .with_context(|| {
            format!(
                "cannot find {COURSE_FILE} in the current directory or any parent: \
                 run this from inside the course's repository (started from {})",
                starts
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
}

/// Walk up from `start` to the first directory that holds `course.toml`.
pub fn find_root_from(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|dir| dir.join(COURSE_FILE).is_file())
        .map(Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::{fixture, rstest};

    const SAMPLE: &str = r#"
[[exercise]]
id = "exercise-1"
slug = "udp-echo"
title = "A UDP echo server and client"
dir = "01-udp-echo"
chapter = "ch01-udp-echo.md"
needs_root = false
hint = "bind"

[[exercise]]
id = "exercise-2"
slug = "world"
title = "The world"
dir = "02-world"
chapter = "ch02-world.md"
hint = "draw it"

[[exercise]]
id = "exercise-3"
slug = "udp-proxy"
title = "Docker's NAT"
dir = "03-udp-proxy"
chapter = "ch03-udp-proxy.md"
needs_root = true
hint = "send_to"
"#;

    #[fixture]
    fn course() -> Course {
        Course::parse(SAMPLE).unwrap()
    }

    #[rstest]
    #[case::id("exercise-3")]
    #[case::number("3")]
    #[case::zero_padded("03")]
    #[case::slug("udp-proxy")]
    #[case::dir("03-udp-proxy")]
    #[case::exercise_package("exercise-udp-proxy")]
    #[case::solution_package("solution-udp-proxy")]
    #[case::surrounding_spaces(" 3 ")]
    fn find_resolves_every_spelling(course: Course, #[case] name: &str) {
        assert_eq!(course.find(name).unwrap().id, "exercise-3");
    }

    #[rstest]
    #[case::zero("0")]
    #[case::too_big("4")]
    #[case::typo("udp-proxi")]
    #[case::empty("")]
    fn unknown_names_list_the_valid_ones(course: Course, #[case] name: &str) {
        let message = course.find(name).unwrap_err().to_string();
        assert!(message.contains("there is no exercise"), "{message}");
        for valid in ["exercise-1", "udp-echo", "exercise-3", "udp-proxy"] {
            assert!(message.contains(valid), "{valid} missing from: {message}");
        }
    }

    #[rstest]
    fn paths_and_packages_follow_the_convention(course: Course) {
        let ex = course.find("udp-echo").unwrap();
        let root = Path::new("/r");
        assert_eq!(ex.exercise_package(), "exercise-udp-echo");
        assert_eq!(ex.solution_package(), "solution-udp-echo");
        assert_eq!(ex.exercise_dir(root), Path::new("/r/exercises/01-udp-echo"));
        assert_eq!(ex.solution_dir(root), Path::new("/r/solutions/01-udp-echo"));
        assert_eq!(ex.check_file(root), Path::new("/r/checks/01-udp-echo.rs"));
        assert_eq!(
            ex.chapter_path(root),
            Path::new("/r/book/src/ch01-udp-echo.md")
        );
    }

    #[rstest]
    fn needs_root_defaults_to_false(course: Course) {
        let flags: Vec<bool> = course.exercises.iter().map(|e| e.needs_root).collect();
        assert_eq!(flags, [false, false, true]);
    }

    #[test]
    fn numbers_come_from_the_id_even_with_a_gap() {
        let course = Course::parse(&SAMPLE.replace("exercise-3", "exercise-5")).unwrap();
        assert_eq!(course.find("5").unwrap().slug, "udp-proxy");
        assert_eq!(course.find("05").unwrap().slug, "udp-proxy");
        assert!(course.find("4").is_err());
        assert!(course.find("3").is_err());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = SAMPLE.replace("needs_root = true", "need_root = true");
        assert!(Course::parse(&text).is_err());
    }

    #[test]
    fn the_root_is_found_from_a_subdirectory() {
        let root = workspace_root().unwrap();
        assert!(root.join(COURSE_FILE).is_file());
        let deep = root.join("crates").join("course").join("src");
        assert_eq!(find_root_from(&deep).unwrap(), root);
    }

    #[test]
    fn the_real_course_toml_parses() {
        let (_, course) = Course::discover().unwrap();
        assert!(!course.exercises.is_empty());
    }
}
