//! `lab exec [--lab PID] NODE -- CMD…` — run any program inside a node of the world that
//! `lab up` keeps running, found through the file it registered (see the `lab-registry`
//! crate).

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};

use anyhow::{bail, Context, Result};
use lab_registry::{running_labs, Lab, Scan};
use nix::sched::{setns, CloneFlags};

use crate::style::dim;

/// Runs `command` in `node` and returns its exit code, as a shell would: the command's
/// own code, or 128 + N when signal N killed it (`kill -TERM` gives 143).
pub fn run(node: &str, command: &[String], lab: Option<u32>) -> Result<i32> {
    let Lab { file, registration } = choose_lab(running_labs(), lab)?;
    let pid = registration.pid;
    let (Some(fd), Some(inode)) = (registration.fds.get(node), registration.nodes.get(node)) else {
        let nodes: Vec<&str> = registration.nodes.keys().map(String::as_str).collect();
        bail!(
            "the running world has no node called `{node}` (its nodes: {}; registered in {})",
            nodes.join(", "),
            file.display()
        );
    };
    let netns = File::open(format!("/proc/{pid}/fd/{fd}")).with_context(|| {
        format!(
            "cannot reach {node}'s namespace in lab process {pid} (registered in {})",
            file.display()
        )
    })?;
    if netns.metadata()?.ino() != *inode {
        bail!(
            "lab process {pid} no longer holds {node} (registered in {}): restart `cargo xtask lab up`",
            file.display()
        );
    }
    // Without root, the world lives in the lab's user namespace: join it first.
    let userns = match registration.user_namespace {
        true => Some(File::open(format!("/proc/{pid}/ns/user")).with_context(|| {
            format!(
                "cannot reach the user namespace of lab process {pid} (registered in {})",
                file.display()
            )
        })?),
        false => None,
    };
    let mut child = std::process::Command::new(netlab::programs::find(&command[0]));
    child.args(&command[1..]);
    // SAFETY: `pre_exec` runs the closure in the forked child, where only
    // async-signal-safe calls are allowed: it makes two `setns` system calls on
    // descriptors opened (with O_CLOEXEC) before the fork, and allocates nothing.
    unsafe {
        child.pre_exec(move || {
            if let Some(userns) = &userns {
                setns(userns, CloneFlags::CLONE_NEWUSER)?;
            }
            setns(&netns, CloneFlags::CLONE_NEWNET)?;
            Ok(())
        });
    }
    let status = child
        .status()
        .with_context(|| format!("cannot run `{}` in {node}", command[0]))?;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    })
}

/// The lab to join: the one `--lab PID` names, else the only one running, else the
/// newest (saying so on stderr, with how to choose another).
fn choose_lab(scan: Scan, wanted: Option<u32>) -> Result<Lab> {
    for note in &scan.notes {
        eprintln!("{}", dim(&format!("note: {note}")));
    }
    let looked_in: Vec<String> = scan
        .looked_in
        .iter()
        .map(|dir| dir.display().to_string())
        .collect();
    let looked_in = looked_in.join(" and ");
    let listing = |labs: &[Lab]| -> String {
        labs.iter()
            .map(|lab| format!("{} ({})", lab.registration.pid, lab.file.display()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut labs = scan.labs;
    if let Some(pid) = wanted {
        return match labs.iter().position(|lab| lab.registration.pid == pid) {
            Some(index) => Ok(labs.swap_remove(index)),
            None if labs.is_empty() => bail!(
                "no lab is running (looked in {looked_in}), so none with pid {pid}: \
                 start one with `cargo xtask lab up` in another terminal"
            ),
            None => bail!("no running lab has pid {pid}; running: {}", listing(&labs)),
        };
    }
    let count = labs.len();
    let Some(newest) = labs.pop() else {
        bail!("no lab is running: start one with `cargo xtask lab up` in another terminal (looked in {looked_in})");
    };
    if count > 1 {
        eprintln!(
            "{count} labs are running; joined the newest, pid {} ({}). \
             Choose another with `--lab PID`: {}",
            newest.registration.pid,
            newest.file.display(),
            listing(&labs)
        );
    }
    Ok(newest)
}
