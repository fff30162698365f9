//! Runs the course's checks for exercise 8 against the code of this package.
//! The checks themselves live, in one copy, in `checks/08-fix.rs`.
use exercise_fix as under_test;
#[path = "../../../checks/08-fix.rs"]
mod check;
