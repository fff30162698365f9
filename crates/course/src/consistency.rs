//! The course's conventions, as checks that say what to fix.
//!
//! Every function here compares `course.toml` with the tree on disk and returns the list
//! of problems it found — empty when they agree. `tests/consistency.rs` runs them all on
//! the real workspace, so `cargo test -p course` fails the moment someone adds a folder
//! without its metadata, renames a package, forgets a check file or a chapter.
//!
//! Keeping them as plain functions (not only as tests) lets `cargo xtask dev-check`
//! and this module's own unit tests run them on any tree, including small fixtures.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::{Course, Exercise};

/// A list of human-readable problems; empty means "consistent".
pub type Problems = Vec<String>;

/// Every check of this module, by name, in a stable order.
pub fn all(root: &Path, course: &Course) -> Vec<(&'static str, Problems)> {
    vec![
        (
            "ids are exercise-N, increasing, matching their folders",
            ids_in_order(course),
        ),
        ("folders match course.toml", folders_match(root, course)),
        (
            "exercises and solutions mirror each other",
            mirror(root, course),
        ),
        ("one check file per exercise", check_files(root, course)),
        (
            "package names follow the convention",
            package_names(root, course),
        ),
        (
            "tests/check.rs points at checks/<dir>.rs",
            check_entry_points(root, course),
        ),
        (
            "SUMMARY.md links every chapter in order",
            summary(root, course),
        ),
        (
            "one numbering: chapter, sidebar, intro and check command agree",
            numbering(root, course),
        ),
    ]
}

/// Ids are `exercise-N` with N increasing in file order (the story's step number, so a
/// step not written yet leaves a gap); slugs are unique; each `dir` is `NN-<slug>` with NN
/// the id's number on two digits.
pub fn ids_in_order(course: &Course) -> Problems {
    let mut problems = Problems::new();
    let mut slugs = BTreeSet::new();
    let mut previous = 0;
    for ex in &course.exercises {
        let Some(n) = ex
            .id
            .strip_prefix("exercise-")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            problems.push(format!(
                "course.toml has id `{}`; ids are `exercise-N` with N a number",
                ex.id
            ));
            continue;
        };
        if n <= previous {
            problems.push(format!(
                "{} comes after exercise-{previous} in course.toml; ids must increase in file order",
                ex.id
            ));
        }
        previous = n;
        let dir = format!("{n:02}-{}", ex.slug);
        if ex.dir != dir {
            problems.push(format!(
                "{} has dir `{}`; by convention it is `{dir}` (two-digit number, dash, slug)",
                ex.id, ex.dir
            ));
        }
        if !slugs.insert(ex.slug.as_str()) {
            problems.push(format!("slug `{}` is used twice in course.toml", ex.slug));
        }
    }
    problems
}

/// The sub-folders of `exercises/` and `solutions/` are exactly the `dir`s of course.toml.
pub fn folders_match(root: &Path, course: &Course) -> Problems {
    let listed: BTreeSet<String> = course.exercises.iter().map(|e| e.dir.clone()).collect();
    let mut problems = Problems::new();
    for side in ["exercises", "solutions"] {
        let present = subdirectories(&root.join(side));
        for extra in present.difference(&listed) {
            problems.push(format!(
                "{side}/{extra} is not in course.toml: add an [[exercise]] entry with dir = \"{extra}\", or remove the folder"
            ));
        }
        for missing in listed.difference(&present) {
            problems.push(format!(
                "course.toml lists dir = \"{missing}\" but {side}/{missing} does not exist"
            ));
        }
    }
    problems
}

/// `exercises/<dir>` and `solutions/<dir>` hold the same relative file list (ignoring
/// `target/`): the learner edits the very files the solution answers.
pub fn mirror(root: &Path, course: &Course) -> Problems {
    let mut problems = Problems::new();
    for ex in &course.exercises {
        let (exercise, solution) = (ex.exercise_dir(root), ex.solution_dir(root));
        if !exercise.is_dir() || !solution.is_dir() {
            continue; // reported by folders_match
        }
        let left = relative_files(&exercise);
        let right = relative_files(&solution);
        for only in left.difference(&right) {
            problems.push(format!(
                "exercises/{dir}/{only} has no counterpart solutions/{dir}/{only}",
                dir = ex.dir
            ));
        }
        for only in right.difference(&left) {
            problems.push(format!(
                "solutions/{dir}/{only} has no counterpart exercises/{dir}/{only}",
                dir = ex.dir
            ));
        }
    }
    problems
}

/// `checks/` holds exactly one `<dir>.rs` per exercise (sub-folders for shared helpers
/// are allowed).
pub fn check_files(root: &Path, course: &Course) -> Problems {
    let expected: BTreeSet<String> = course
        .exercises
        .iter()
        .map(|e| format!("{}.rs", e.dir))
        .collect();
    let present: BTreeSet<String> = list_dir(&root.join("checks"))
        .into_iter()
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "rs"))
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    let mut problems = Problems::new();
    for missing in expected.difference(&present) {
        problems.push(format!("checks/{missing} is missing"));
    }
    for extra in present.difference(&expected) {
        problems.push(format!(
            "checks/{extra} belongs to no exercise of course.toml"
        ));
    }
    problems
}

/// `exercises/<dir>/Cargo.toml` names package `exercise-<slug>`, and
/// `solutions/<dir>/Cargo.toml` names `solution-<slug>`.
pub fn package_names(root: &Path, course: &Course) -> Problems {
    let mut problems = Problems::new();
    for (dir, expected) in packages(root, course) {
        let manifest = dir.join("Cargo.toml");
        if !dir.is_dir() {
            continue; // reported by folders_match
        }
        match package_name(&manifest) {
            Ok(name) if name == expected => {}
            Ok(name) => problems.push(format!(
                "{} names package `{name}`; the convention says `{expected}`",
                shown(root, &manifest)
            )),
            Err(why) => problems.push(format!("{}: {why}", shown(root, &manifest))),
        }
    }
    problems
}

/// Each package's `tests/check.rs` brings its own crate in as `under_test` and includes
/// the shared `checks/<dir>.rs` through a `#[path]` attribute.
pub fn check_entry_points(root: &Path, course: &Course) -> Problems {
    let mut problems = Problems::new();
    for ex in &course.exercises {
        let wanted = ex.check_file(root);
        for (dir, package) in [
            (ex.exercise_dir(root), ex.exercise_package()),
            (ex.solution_dir(root), ex.solution_package()),
        ] {
            if !dir.is_dir() {
                continue; // reported by folders_match
            }
            let entry = dir.join("tests").join("check.rs");
            let Ok(text) = fs::read_to_string(&entry) else {
                problems.push(format!(
                    "{} is missing: it must be `use {} as under_test;` plus a #[path] module pointing at {}",
                    shown(root, &entry),
                    package.replace('-', "_"),
                    shown(root, &wanted)
                ));
                continue;
            };
            let crate_name = package.replace('-', "_");
            if !text.contains(&format!("{crate_name} as under_test")) {
                problems.push(format!(
                    "{} must bring its own crate in as `use {crate_name} as under_test;`",
                    shown(root, &entry)
                ));
            }
            let targets: Vec<PathBuf> = path_attributes(&text)
                .into_iter()
                .map(|p| entry.parent().unwrap_or(&dir).join(p))
                .collect();
            let points_at_check = targets.iter().any(|t| same_file(t, &wanted));
            if !points_at_check {
                problems.push(format!(
                    "{} must include {} with #[path = \"../../../checks/{}.rs\"] (found #[path]s: {:?})",
                    shown(root, &entry),
                    shown(root, &wanted),
                    ex.dir,
                    path_attributes(&text)
                ));
            }
        }
    }
    problems
}

/// `book/src/SUMMARY.md` links every chapter of course.toml, in course order, and every
/// file it links exists.
pub fn summary(root: &Path, course: &Course) -> Problems {
    let src = root.join("book").join("src");
    let summary_path = src.join("SUMMARY.md");
    let Ok(text) = fs::read_to_string(&summary_path) else {
        return vec![format!("{} is missing", shown(root, &summary_path))];
    };
    let links = markdown_links(&text);
    let mut problems = Problems::new();
    for link in &links {
        if !src.join(link).is_file() {
            problems.push(format!(
                "book/src/SUMMARY.md links {link}, which does not exist under book/src/"
            ));
        }
    }
    let chapters: Vec<&str> = course
        .exercises
        .iter()
        .map(|e| e.chapter.as_str())
        .collect();
    for chapter in &chapters {
        if !links.iter().any(|l| l == chapter) {
            problems.push(format!("book/src/SUMMARY.md does not link {chapter}"));
        }
    }
    let linked_in_order: Vec<&str> = links
        .iter()
        .map(String::as_str)
        .filter(|l| chapters.contains(l))
        .collect();
    let mut deduped = linked_in_order.clone();
    deduped.dedup();
    if problems.is_empty() && deduped != chapters {
        problems.push(format!(
            "book/src/SUMMARY.md links the chapters in the order {deduped:?}; course.toml's order is {chapters:?}"
        ));
    }
    problems
}

/// One numbering everywhere: exercise N's chapter is titled `# N. <title>`, the sidebar
/// (SUMMARY.md, with mdBook's own section numbers off: `no-section-label = true`) lists
/// it as `N. <title>`, the introduction's list links it as item `N.`, and every
/// `cargo xtask check X` in the chapter names exercise N.
pub fn numbering(root: &Path, course: &Course) -> Problems {
    let book = root.join("book");
    let src = book.join("src");
    let mut problems = Problems::new();
    let book_toml = fs::read_to_string(book.join("book.toml")).unwrap_or_default();
    if !book_toml
        .lines()
        .any(|l| l.replace(' ', "") == "no-section-label=true")
    {
        problems.push(
            "book/book.toml must set `no-section-label = true` under [output.html]: the \
             chapters carry their exercise's number themselves, mdBook's would disagree"
                .to_string(),
        );
    }
    let summary = fs::read_to_string(src.join("SUMMARY.md")).unwrap_or_default();
    let intro = fs::read_to_string(src.join("introduction.md")).unwrap_or_default();
    for ex in &course.exercises {
        let Some(n) = ex.number() else { continue };
        let wanted = format!("{n}. {}", ex.title);
        let sidebar = format!("[{wanted}]({})", ex.chapter);
        if !summary.contains(&sidebar) {
            problems.push(format!("book/src/SUMMARY.md should list `{sidebar}`"));
        }
        let in_intro = intro.lines().any(|line| {
            line.trim_start().starts_with(&format!("{n}. "))
                && line.contains(&format!("]({})", ex.chapter))
        });
        if !in_intro {
            problems.push(format!(
                "book/src/introduction.md's list should have item `{n}. ` linking {}",
                ex.chapter
            ));
        }
        let Ok(chapter) = fs::read_to_string(src.join(&ex.chapter)) else {
            continue;
        };
        if !chapter.contains("## Predict before you run") || !chapter.contains("<details>") {
            problems.push(format!(
                "book/src/{} needs a `## Predict before you run` question with its answer \
                 folded away in <details>",
                ex.chapter
            ));
        }
        let heading = format!("# {wanted}");
        if chapter.lines().next().map(str::trim) != Some(heading.as_str()) {
            problems.push(format!(
                "book/src/{} should start with `{heading}`",
                ex.chapter
            ));
        }
        let mut rest = chapter.as_str();
        while let Some(at) = rest.find("cargo xtask check ") {
            rest = &rest[at + "cargo xtask check ".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if name.is_empty() {
                continue;
            }
            match course.find(&name) {
                Ok(named) if named.id == ex.id => {}
                _ => problems.push(format!(
                    "book/src/{} says `cargo xtask check {name}`, which is not {}",
                    ex.chapter, ex.id
                )),
            }
        }
    }
    problems
}

// ---------------------------------------------------------------- small helpers

/// Every (package folder, expected package name) of the course.
fn packages(root: &Path, course: &Course) -> Vec<(PathBuf, String)> {
    course
        .exercises
        .iter()
        .flat_map(|ex: &Exercise| {
            [
                (ex.exercise_dir(root), ex.exercise_package()),
                (ex.solution_dir(root), ex.solution_package()),
            ]
        })
        .collect()
}

fn package_name(manifest: &Path) -> Result<String, String> {
    let text = fs::read_to_string(manifest).map_err(|e| format!("cannot read it: {e}"))?;
    let table: toml::Table = text.parse().map_err(|e| format!("not valid TOML: {e}"))?;
    table
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| "has no [package] name".to_string())
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    paths
}

fn subdirectories(dir: &Path) -> BTreeSet<String> {
    list_dir(dir)
        .into_iter()
        .filter(|p| p.is_dir())
        .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Files under `dir`, as `/`-separated relative paths, skipping `target/` and dot-files.
pub fn relative_files(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for path in list_dir(&current) {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            if name == "target" || name.starts_with('.') {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    out
}

/// The values of `#[path = "…"]` attributes in a Rust source file.
fn path_attributes(source: &str) -> Vec<String> {
    source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix("#[path")?.trim_start();
            let rest = rest.strip_prefix('=')?.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// The targets of markdown links `[text](target)` that name `.md` files, in order.
fn markdown_links(text: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("](") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find(')') else { break };
        let target = rest[..end].trim();
        let target = target.strip_prefix("./").unwrap_or(target);
        if target.ends_with(".md") && !target.contains("://") {
            links.push(target.to_string());
        }
        rest = &rest[end..];
    }
    links
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A throwaway course tree under the system temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Tree {
            static N: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "course-fixture-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }
        fn write(&self, rel: &str, text: &str) -> &Tree {
            let path = self.0.join(rel);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
            self
        }
        fn remove(&self, rel: &str) {
            fs::remove_file(self.0.join(rel)).unwrap();
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    const COURSE: &str = r#"
[[exercise]]
id = "exercise-1"
slug = "echo"
title = "Echo"
dir = "01-echo"
chapter = "ch01-echo.md"
hint = "h"

[[exercise]]
id = "exercise-2"
slug = "world"
title = "World"
dir = "02-world"
chapter = "ch02-world.md"
hint = "h"
"#;

    fn package(tree: &Tree, side: &str, dir: &str, name: &str) {
        let krate = name.replace('-', "_");
        tree.write(
            &format!("{side}/{dir}/Cargo.toml"),
            &format!("[package]\nname = \"{name}\"\nversion = \"0.1.0\"\n"),
        )
        .write(&format!("{side}/{dir}/src/lib.rs"), "")
        .write(
            &format!("{side}/{dir}/tests/check.rs"),
            &format!(
                "use {krate} as under_test;\n#[path = \"../../../checks/{dir}.rs\"]\nmod checks;\n"
            ),
        );
    }

    /// A complete, consistent two-exercise course.
    fn good_tree() -> (Tree, Course) {
        let tree = Tree::new();
        tree.write("course.toml", COURSE);
        for (dir, slug) in [("01-echo", "echo"), ("02-world", "world")] {
            package(&tree, "exercises", dir, &format!("exercise-{slug}"));
            package(&tree, "solutions", dir, &format!("solution-{slug}"));
            tree.write(&format!("checks/{dir}.rs"), "");
        }
        let predict = "## Predict before you run\n\n<details>\n</details>\n";
        tree.write(
            "book/src/ch01-echo.md",
            &format!("# 1. Echo\n\n`cargo xtask check 1`\n{predict}"),
        )
        .write("book/src/ch02-world.md", &format!("# 2. World\n{predict}"))
            .write(
                "book/src/introduction.md",
                "1. [Echo](ch01-echo.md)\n2. [World](ch02-world.md)\n",
            )
            .write("book/book.toml", "[output.html]\nno-section-label = true\n")
            .write(
                "book/src/SUMMARY.md",
                "# Summary\n\n[Intro](introduction.md)\n\n- [1. Echo](ch01-echo.md)\n- [2. World](ch02-world.md)\n",
            );
        let course = Course::load(&tree.0).unwrap();
        (tree, course)
    }

    fn problems(tree: &Tree, course: &Course) -> Vec<String> {
        all(&tree.0, course)
            .into_iter()
            .flat_map(|(_, p)| p)
            .collect()
    }

    #[test]
    fn a_consistent_tree_has_no_problems() {
        let (tree, course) = good_tree();
        assert_eq!(problems(&tree, &course), Vec::<String>::new());
    }

    #[test]
    fn a_chapter_numbered_differently_is_reported() {
        let (tree, course) = good_tree();
        tree.write(
            "book/src/ch02-world.md",
            "# 3. World\n\n`cargo xtask check 1`\n",
        );
        tree.write("book/book.toml", "[output.html]\n");
        let found = problems(&tree, &course);
        assert!(
            found
                .iter()
                .any(|p| p.contains("should start with `# 2. World`")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.contains("`cargo xtask check 1`, which is not exercise-2")),
            "{found:?}"
        );
        assert!(
            found.iter().any(|p| p.contains("no-section-label")),
            "{found:?}"
        );
    }

    #[test]
    fn an_extra_exercise_folder_is_reported() {
        let (tree, course) = good_tree();
        tree.write("exercises/03-extra/src/lib.rs", "");
        let found = folders_match(&tree.0, &course);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("exercises/03-extra is not in course.toml"));
    }

    #[test]
    fn a_missing_solution_folder_is_reported() {
        let (tree, course) = good_tree();
        fs::remove_dir_all(tree.0.join("solutions/02-world")).unwrap();
        let found = folders_match(&tree.0, &course);
        assert!(
            found[0].contains("solutions/02-world does not exist"),
            "{found:?}"
        );
    }

    #[test]
    fn files_that_do_not_mirror_are_reported_but_target_is_ignored() {
        let (tree, course) = good_tree();
        tree.write("exercises/01-echo/src/extra.rs", "")
            .write("solutions/01-echo/target/debug/junk", "");
        let found = mirror(&tree.0, &course);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("exercises/01-echo/src/extra.rs"));
    }

    #[test]
    fn missing_and_extra_check_files_are_reported() {
        let (tree, course) = good_tree();
        tree.remove("checks/02-world.rs");
        tree.write("checks/99-old.rs", "")
            .write("checks/common/mod.rs", "");
        let found = check_files(&tree.0, &course);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("checks/02-world.rs is missing"));
        assert!(found[1].contains("checks/99-old.rs belongs to no exercise"));
    }

    #[test]
    fn a_wrong_package_name_is_reported() {
        let (tree, course) = good_tree();
        package(&tree, "solutions", "02-world", "solution-wrld");
        let found = package_names(&tree.0, &course);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("`solution-wrld`"));
    }

    #[test]
    fn a_check_rs_pointing_elsewhere_is_reported() {
        let (tree, course) = good_tree();
        tree.write(
            "exercises/01-echo/tests/check.rs",
            "use exercise_echo as under_test;\n#[path = \"../../../checks/02-world.rs\"]\nmod checks;\n",
        );
        let found = check_entry_points(&tree.0, &course);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains("exercises/01-echo/tests/check.rs must include"));
    }

    #[test]
    fn summary_problems_are_reported() {
        let (tree, course) = good_tree();
        tree.write(
            "book/src/SUMMARY.md",
            "- [World](ch02-world.md)\n- [Echo](ch01-echo.md)\n",
        );
        assert!(summary(&tree.0, &course)[0].contains("order"));

        tree.write(
            "book/src/SUMMARY.md",
            "- [Echo](ch01-echo.md)\n- [Gone](gone.md)\n",
        );
        let found = summary(&tree.0, &course);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("gone.md, which does not exist"));
        assert!(found[1].contains("does not link ch02-world.md"));
    }

    #[test]
    fn ids_out_of_order_are_reported() {
        let text = COURSE.replace("exercise-2", "exercise-1");
        let course = Course::parse(&text).unwrap();
        let found = ids_in_order(&course);
        assert!(
            found
                .iter()
                .any(|p| p.contains("ids must increase in file order")),
            "{found:?}"
        );
    }

    #[test]
    fn a_gap_in_the_ids_is_fine_when_the_dir_follows_the_number() {
        let text = COURSE
            .replace("exercise-2", "exercise-4")
            .replace("02-world", "04-world");
        let course = Course::parse(&text).unwrap();
        assert_eq!(ids_in_order(&course), Problems::new());
    }

    #[test]
    fn path_attributes_and_links_are_parsed() {
        let src = "use x as under_test;\n  #[path = \"../../../checks/01-a.rs\"]\nmod checks;";
        assert_eq!(path_attributes(src), ["../../../checks/01-a.rs"]);
        let md = "[a](a.md) [web](https://x.org/y.md) [b](./dir/b.md) ![img](p.png)";
        assert_eq!(markdown_links(md), ["a.md", "dir/b.md"]);
    }
}
