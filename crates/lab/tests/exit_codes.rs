//! Exit codes follow the shell's conventions (issue 8): a program killed by signal N
//! exits with 128 + N, so scripts can tell an interrupted lab from one that finished.

mod support;

use nix::sys::signal::Signal;
use support::Scratch;

#[test]
fn exec_passes_the_exit_code_on_and_reports_a_signal_as_128_plus_n() {
    let scratch = Scratch::new("exec-codes");
    let lab = scratch.start_lab();
    let killed = scratch.run_lab(&["exec", "dind2", "--", "sh", "-c", "kill -TERM $$"]);
    let exited = scratch.run_lab(&["exec", "dind2", "--", "sh", "-c", "exit 7"]);
    drop(lab);
    assert_eq!(killed.status.code(), Some(128 + 15), "{}", killed.stderr);
    assert_eq!(exited.status.code(), Some(7), "{}", exited.stderr);
}

#[test]
fn up_stopped_by_ctrl_c_exits_130() {
    let scratch = Scratch::new("up-sigint");
    let status = scratch.start_lab().stop(Signal::SIGINT);
    assert_eq!(status.code(), Some(130));
}

#[test]
fn up_stopped_by_sigterm_exits_143() {
    let scratch = Scratch::new("up-sigterm");
    let status = scratch.start_lab().stop(Signal::SIGTERM);
    assert_eq!(status.code(), Some(143));
}
