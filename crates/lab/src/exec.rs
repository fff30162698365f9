//! `lab exec NODE -- CMD…` — run any program inside a node of the world that `lab up`
//! keeps running (found through the file it registered, see `World::publish`).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;

use anyhow::{bail, Context, Result};
use netlab::world::{registry_dir, Registry};

pub fn run(node: &str, command: &[String]) -> Result<i32> {
    let registry = running_world()?;
    let Some(fd) = registry.fds.get(node) else {
        let nodes: Vec<&str> = registry.nodes.keys().map(String::as_str).collect();
        bail!(
            "the running world has no node called `{node}` (its nodes: {})",
            nodes.join(", ")
        );
    };
    let netns = File::open(format!("/proc/{}/fd/{fd}", registry.pid)).with_context(|| {
        format!(
            "cannot reach {node}'s namespace in lab process {}",
            registry.pid
        )
    })?;
    if Some(&netns.metadata()?.ino()) != registry.nodes.get(node) {
        bail!(
            "lab process {} no longer holds {node} (stale registry): restart `cargo xtask lab up`",
            registry.pid
        );
    }
    // Without root, the world lives in the lab's user namespace: join it first.
    let userns = match registry.user_namespace {
        true => Some(File::open(format!("/proc/{}/ns/user", registry.pid))?),
        false => None,
    };
    let (netns_fd, userns_fd) = (netns.as_raw_fd(), userns.as_ref().map(|f| f.as_raw_fd()));
    let mut child = std::process::Command::new(netlab::programs::find(&command[0]));
    child.args(&command[1..]);
    // SAFETY: only setns calls between fork and exec.
    unsafe {
        child.pre_exec(move || {
            if let Some(fd) = userns_fd {
                if libc::setns(fd, libc::CLONE_NEWUSER) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let status = child
        .status()
        .with_context(|| format!("cannot run `{}` in {node}", command[0]))?;
    Ok(status.code().unwrap_or(1))
}

/// The newest registered world whose process is still alive.
fn running_world() -> Result<Registry> {
    let dir = registry_dir();
    let mut worlds: Vec<(std::time::SystemTime, Registry)> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let registry: Registry =
                serde_json::from_str(&std::fs::read_to_string(entry.path()).ok()?).ok()?;
            let alive = std::path::Path::new(&format!("/proc/{}", registry.pid)).exists();
            alive.then(|| Some((entry.metadata().ok()?.modified().ok()?, registry)))?
        })
        .collect();
    worlds.sort_by_key(|(modified, _)| *modified);
    match worlds.pop() {
        Some((_, registry)) => Ok(registry),
        None => bail!("no lab is running: start one with `cargo xtask lab up` in another terminal (looked in {})", dir.display()),
    }
}
