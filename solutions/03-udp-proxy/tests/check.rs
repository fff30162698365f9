//! Runs the course's checks for exercise 3 against the code of this package.
//! The checks themselves live, in one copy, in `checks/03-udp-proxy.rs`.
use solution_udp_proxy as under_test;
#[path = "../../../checks/03-udp-proxy.rs"]
mod check;
