//! `cargo xtask watch`: check the current exercise, then again on every save.
//!
//! "Current" is the first exercise that is not done. Changes are noticed by polling
//! the modification times of the exercise folder's files every 500 ms — simple,
//! portable, and no dependency. When an exercise passes, watch moves on to the next.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use course::Course;

use crate::check_runner::{self, Options};
use crate::progress::{Progress, State};
use crate::style;

/// Path → modification time of every file of a folder (ignoring `target/`).
fn snapshot(dir: &Path) -> BTreeMap<String, Option<SystemTime>> {
    course::consistency::relative_files(dir)
        .into_iter()
        .map(|rel| {
            let mtime = dir.join(&rel).metadata().and_then(|m| m.modified()).ok();
            (rel, mtime)
        })
        .collect()
}

pub fn watch(root: &Path, course: &Course, timeout: Duration) -> Result<ExitCode> {
    let opts = Options {
        sudo: false,
        solution: false,
        timeout,
        skips_fail: check_runner::in_ci(),
        verbose: true,
    };
    loop {
        let states = Progress::load(root).states(root, course);
        let Some(index) = states.iter().position(|s| *s != State::Done) else {
            println!("{}", crate::progress_line(&states));
            println!(
                "{}",
                style::green("Every exercise is done. Congratulations!")
            );
            return Ok(ExitCode::SUCCESS);
        };
        let ex = &course.exercises[index];
        let dir = ex.exercise_dir(root);
        loop {
            println!(
                "{} {} — {}   {}",
                style::bold("watching"),
                ex.id,
                ex.title,
                style::dim("(Ctrl-C to quit)")
            );
            let tally = crate::check_exercises(root, course, &[ex], opts)?;
            println!("{}", tally.summary_line());
            let done =
                Progress::load(root).state(ex, &crate::progress::hash_dir(&dir)) == State::Done;
            if done {
                println!(
                    "{}",
                    style::green(&format!("{} is done — on to the next one!", ex.id))
                );
                println!();
                break;
            }
            println!(
                "{}",
                style::dim(&format!(
                    "edit the files in exercises/{}/ and save: the checks run again",
                    ex.dir
                ))
            );
            let before = snapshot(&dir);
            while snapshot(&dir) == before {
                std::thread::sleep(Duration::from_millis(500));
            }
            println!();
        }
    }
}
