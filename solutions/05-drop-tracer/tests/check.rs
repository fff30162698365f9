//! Runs the course's checks for exercise 5 against the code of this package.
//! The checks themselves live, in one copy, in `checks/05-drop-tracer.rs`.
use solution_drop_tracer as under_test;
#[path = "../../../checks/05-drop-tracer.rs"]
mod check;
