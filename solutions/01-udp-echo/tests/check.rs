//! Runs the course's checks for exercise 1 against the code of this package.
//! The checks themselves live, in one copy, in `checks/01-udp-echo.rs`.
use solution_udp_echo as under_test;
#[path = "../../../checks/01-udp-echo.rs"]
mod check;
