//! Runs the course's checks for exercise 9 against the code of this package.
//! The checks themselves live, in one copy, in `checks/09-lan-peers.rs`.
use exercise_lan_peers as under_test;
#[path = "../../../checks/09-lan-peers.rs"]
mod check;
