//! The course's conventions, checked on the real workspace.
//!
//! Each test runs one rule of [`course::consistency`] and fails with the list of
//! problems it found, each saying what to fix.

use course::consistency::{self, Problems};
use course::Course;

fn run(rule: fn(&std::path::Path, &Course) -> Problems) {
    let (root, course) = Course::discover().expect("course.toml must load");
    let problems = rule(&root, &course);
    assert!(
        problems.is_empty(),
        "the tree and course.toml disagree:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn ids_are_exercise_1_to_n_in_order() {
    run(|_, course| consistency::ids_in_order(course));
}

#[test]
fn every_folder_is_in_course_toml_and_vice_versa() {
    run(consistency::folders_match);
}

#[test]
fn exercises_and_solutions_mirror_each_other() {
    run(consistency::mirror);
}

#[test]
fn every_exercise_has_exactly_one_check_file() {
    run(consistency::check_files);
}

#[test]
fn package_names_follow_the_convention() {
    run(consistency::package_names);
}

#[test]
fn each_tests_check_rs_points_at_its_check_file() {
    run(consistency::check_entry_points);
}

#[test]
fn summary_md_links_every_chapter_in_order() {
    run(consistency::summary);
}

#[test]
fn one_numbering_for_chapters_sidebar_intro_and_checks() {
    run(consistency::numbering);
}
