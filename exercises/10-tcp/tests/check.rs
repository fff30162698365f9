//! Runs the course's checks for exercise 10 against the code of this package.
//! The checks themselves live, in one copy, in `checks/10-tcp.rs`.
use exercise_tcp as under_test;
#[path = "../../../checks/10-tcp.rs"]
mod check;
