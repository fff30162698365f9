//! One registration: which process holds which namespaces.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// What a running lab writes: its process, and each node's namespace (inode, and the
/// descriptor that holds it in that process, reachable as `/proc/PID/fd/N`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub pid: u32,
    /// When process `pid` started (field 22 of `/proc/PID/stat`, in clock ticks since
    /// boot). A pid is reused once its process is gone; pid and start time together name
    /// one process for ever. Optional only for hand-written files (the tracer's
    /// `--netns-names`): without it a registration is never taken for a running lab.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    /// Did the lab build its world inside a user namespace (without root)? Then a program
    /// joins that user namespace first.
    #[serde(default)]
    pub user_namespace: bool,
    /// Node name → network namespace inode.
    pub nodes: BTreeMap<String, u64>,
    /// Node name → the descriptor holding that namespace in process `pid`.
    #[serde(default)]
    pub fds: BTreeMap<String, i32>,
}

impl Registration {
    /// The registration of the calling process, for `nodes` given as
    /// (name, namespace inode, descriptor holding it).
    pub fn of_this_process(
        user_namespace: bool,
        nodes: impl IntoIterator<Item = (String, u64, i32)>,
    ) -> Result<Registration> {
        let pid = std::process::id();
        let start_time = start_time_of(pid).context("cannot read this process's start time")?;
        let (mut inodes, mut fds) = (BTreeMap::new(), BTreeMap::new());
        for (name, inode, fd) in nodes {
            inodes.insert(name.clone(), inode);
            fds.insert(name, fd);
        }
        Ok(Registration {
            pid,
            start_time: Some(start_time),
            user_namespace,
            nodes: inodes,
            fds,
        })
    }

    /// Parse a registration's text.
    pub fn parse(text: &str) -> Result<Registration> {
        serde_json::from_str(text)
            .context(r#"expected {"pid": 1234, "nodes": {"NAME": NETNS_INODE, ...}, ...}"#)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a registration is always valid JSON")
    }

    /// Why this registration does not describe a running lab, or `None` if it does: its
    /// process exists, is the very process that registered (same start time), and still
    /// holds each registered namespace (checked where we may look at its descriptors).
    pub fn stale_because(&self) -> Option<String> {
        let pid = self.pid;
        let Some(registered) = self.start_time else {
            return Some(format!(
                "it records no start time for process {pid}, so a later process that got \
                 the same pid cannot be told apart from the lab"
            ));
        };
        match start_time_of(pid) {
            Err(_) => return Some(format!("process {pid} is gone")),
            Ok(now) if now != registered => {
                return Some(format!(
                    "process {pid} is not the lab that registered: it started at tick {now}, \
                     the lab at tick {registered} (the pid was reused)"
                ))
            }
            Ok(_) => {}
        }
        for (node, fd) in &self.fds {
            let registered = self.nodes.get(node).copied();
            let held = match std::fs::metadata(format!("/proc/{pid}/fd/{fd}")) {
                Ok(meta) if Some(meta.ino()) == registered => continue,
                Ok(meta) => format!("its descriptor {fd} is inode {}", meta.ino()),
                // Another user's process (we are not root): we cannot look, which is fine.
                Err(e) if e.kind() == io::ErrorKind::PermissionDenied => continue,
                Err(_) => format!("its descriptor {fd} is closed"),
            };
            return Some(format!(
                "process {pid} no longer holds {node}'s namespace ({held}, registered {})",
                registered.map_or("nothing".to_string(), |inode| format!("inode {inode}"))
            ));
        }
        None
    }
}

/// When process `pid` started, in clock ticks after boot: field 22 of `/proc/PID/stat`.
///
/// The second field is the program's name in parentheses, and a name may itself contain
/// spaces and parentheses: the fields are counted from the *last* `)`.
pub fn start_time_of(pid: u32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("/proc/{pid}/stat: {stat}"),
        )
    };
    let after_name = &stat[stat.rfind(')').ok_or_else(bad)? + 1..];
    // After the name come field 3 (state), 4 (ppid), …: field 22 is the 20th.
    after_name
        .split_whitespace()
        .nth(22 - 3)
        .and_then(|field| field.parse().ok())
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_file_parses_and_a_full_one_round_trips() {
        let r = Registration::parse(r#"{"pid": 1234, "nodes": {"dind1": 4026532501}}"#).unwrap();
        assert_eq!((r.pid, r.start_time), (1234, None));
        assert_eq!(r.nodes["dind1"], 4026532501);
        assert!(Registration::parse(r#"{"nodes": {}}"#).is_err());

        let me = Registration::of_this_process(false, [("host".into(), 7, 3)]).unwrap();
        assert_eq!(Registration::parse(&me.to_json()).unwrap(), me);
    }

    #[test]
    fn start_time_is_read_past_a_name_with_parentheses() {
        // A child whose name holds ") (" shows that the fields are counted from the last `)`.
        // (The name of a process is the file name it was started from.)
        let dir = std::env::temp_dir().join(format!("lab-registry-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let odd_name = dir.join("a) (b c");
        let _ = std::fs::remove_file(&odd_name);
        std::os::unix::fs::symlink("/bin/sleep", &odd_name).unwrap();
        let mut child = std::process::Command::new(&odd_name)
            .arg("30")
            .spawn()
            .unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let pid = child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        assert!(stat.contains("(a) (b c)"), "{stat}");
        let started = start_time_of(pid).unwrap();
        let mine = start_time_of(std::process::id()).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            started >= mine,
            "the child started after us: {started} < {mine}"
        );
        assert!(
            start_time_of(pid).is_err(),
            "a reaped process has no start time"
        );
    }

    #[test]
    fn staleness_needs_the_same_process_not_just_the_same_pid() {
        let me = Registration::of_this_process(false, []).unwrap();
        assert_eq!(me.stale_because(), None);

        let reused = Registration {
            start_time: me.start_time.map(|t| t + 1),
            ..me.clone()
        };
        assert!(reused.stale_because().unwrap().contains("pid was reused"));

        let unknown = Registration {
            start_time: None,
            ..me.clone()
        };
        assert!(unknown.stale_because().is_some());

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = Registration { pid: dead, ..me };
        assert!(gone.stale_because().unwrap().contains("is gone"));
    }

    #[test]
    fn a_namespace_that_is_no_longer_held_makes_it_stale() {
        let file = std::fs::File::open("/proc/self/ns/net").unwrap();
        let inode = file.metadata().unwrap().ino();
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        let holds = Registration::of_this_process(false, [("host".into(), inode, fd)]).unwrap();
        assert_eq!(holds.stale_because(), None);
        drop(file);
        assert!(holds.stale_because().is_some(), "descriptor {fd} is closed");
    }
}
