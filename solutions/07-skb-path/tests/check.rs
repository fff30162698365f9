//! Runs the course's checks for exercise 7 against the code of this package.
//! The checks themselves live, in one copy, in `checks/07-skb-path.rs`.
use solution_skb_path as under_test;
#[path = "../../../checks/07-skb-path.rs"]
mod check;
