//! Runs the course's checks for exercise 2 against the code of this package.
//! The checks themselves live, in one copy, in `checks/02-world.rs`.
use exercise_world as under_test;
#[path = "../../../checks/02-world.rs"]
mod check;
