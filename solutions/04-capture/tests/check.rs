//! Runs the course's checks for exercise 4 against the code of this package.
//! The checks themselves live, in one copy, in `checks/04-capture.rs`.
use solution_capture as under_test;
#[path = "../../../checks/04-capture.rs"]
mod check;
