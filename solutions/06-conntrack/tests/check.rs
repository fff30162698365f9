//! Runs the course's checks for exercise 6 against the code of this package.
//! The checks themselves live, in one copy, in `checks/06-conntrack.rs`.
use solution_conntrack as under_test;
#[path = "../../../checks/06-conntrack.rs"]
mod check;
