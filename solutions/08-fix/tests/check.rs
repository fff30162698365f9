//! Runs the course's checks for exercise 8 against the reference solution.
//! The checks themselves live, in one copy, in `checks/08-fix.rs`.
use solution_fix as under_test;
#[path = "../../../checks/08-fix.rs"]
mod check;
