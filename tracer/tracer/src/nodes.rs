//! Naming network namespaces: "netns 4026532417" becomes "dind2".
//!
//! The kernel only knows a namespace by its inode number. The course's lab registers each running
//! world as a JSON file `${XDG_RUNTIME_DIR:-/tmp}/packet-drop-lab/<pid>.json`:
//!
//! ```json
//! {"pid": 1234, "nodes": {"host": 4026532417, "dind1": 4026532501, "dind2": 4026532588}}
//! ```
//!
//! A file whose `pid` is no longer alive is stale (its world is gone) and ignored. The same format
//! can be given explicitly with `--netns-names FILE` (always used, whatever its pid).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use serde::Deserialize;

/// One registration file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Registration {
    pub pid: u32,
    pub nodes: BTreeMap<String, u32>,
}

/// The directory where running labs register: `$XDG_RUNTIME_DIR/packet-drop-lab` or
/// `/tmp/packet-drop-lab`.
pub fn registry_dir() -> PathBuf {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    base.join("packet-drop-lab")
}

/// Parses one registration file's text.
pub fn parse_registration(text: &str) -> Result<Registration> {
    serde_json::from_str(text)
        .context(r#"expected {"pid": 1234, "nodes": {"NAME": NETNS_INODE, ...}}"#)
}

fn pid_alive(pid: u32) -> bool {
    pid != 0 && Path::new(&format!("/proc/{pid}")).exists()
}

/// Namespace inode → node name, from the lab's registrations and an optional explicit file.
#[derive(Debug, Default)]
pub struct NodeNames {
    dir: Option<PathBuf>,
    explicit: HashMap<u32, String>,
    names: HashMap<u32, String>,
    last_scan: Option<Instant>,
}

impl NodeNames {
    /// Names from `dir` (usually [`registry_dir`]) and, if given, the explicit file.
    pub fn new(dir: Option<PathBuf>, explicit_file: Option<&Path>) -> Result<NodeNames> {
        let mut explicit = HashMap::new();
        if let Some(file) = explicit_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --netns-names file {}", file.display()))?;
            let reg = parse_registration(&text)
                .with_context(|| format!("bad --netns-names file {}", file.display()))?;
            for (name, ino) in reg.nodes {
                explicit.insert(ino, name);
            }
        }
        let mut n = NodeNames {
            dir,
            explicit,
            ..Default::default()
        };
        n.rescan();
        Ok(n)
    }

    /// Re-reads the registration directory (files of dead processes are skipped).
    pub fn rescan(&mut self) {
        self.last_scan = Some(Instant::now());
        self.names = self.explicit.clone();
        let Some(dir) = &self.dir else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            let Ok(reg) = parse_registration(&text) else {
                continue;
            };
            if !pid_alive(reg.pid) {
                continue;
            }
            for (name, ino) in reg.nodes {
                self.names.entry(ino).or_insert(name);
            }
        }
    }

    /// The namespace inode of a node name (`--node dind2`), if a live lab or the explicit file
    /// has it.
    pub fn inode_of(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| n.as_str() == name)
            .map(|(ino, _)| *ino)
    }

    /// Every known node name, sorted (for error messages).
    pub fn known_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.names.values().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The node name of a namespace inode, if known. An unknown inode triggers a re-scan at most
    /// once a second (a lab may have started after the tracer).
    pub fn name(&mut self, netns: u32) -> Option<&str> {
        if !self.names.contains_key(&netns)
            && self
                .last_scan
                .is_none_or(|t| t.elapsed() > Duration::from_secs(1))
        {
            self.rescan();
        }
        self.names.get(&netns).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lab_format() {
        let r = parse_registration(
            r#"{"pid": 1234, "nodes": {"host": 4026532417, "dind1": 4026532501}}"#,
        )
        .unwrap();
        assert_eq!(r.pid, 1234);
        assert_eq!(r.nodes["dind1"], 4026532501);
        assert!(parse_registration(r#"{"nodes": {}}"#).is_err());
    }

    #[test]
    fn live_registrations_only() {
        let dir = std::env::temp_dir().join(format!("tracer-nodes-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        std::fs::write(
            dir.join(format!("{me}.json")),
            format!(r#"{{"pid": {me}, "nodes": {{"dind2": 111}}}}"#),
        )
        .unwrap();
        // pid 0 is never a live process: a stale registration.
        std::fs::write(dir.join("0.json"), r#"{"pid": 0, "nodes": {"ghost": 222}}"#).unwrap();
        std::fs::write(dir.join("junk.json"), "not json").unwrap();
        let explicit = dir.join("explicit.names");
        std::fs::write(&explicit, r#"{"pid": 0, "nodes": {"host": 333}}"#).unwrap();

        let mut names = NodeNames::new(Some(dir.clone()), Some(&explicit)).unwrap();
        assert_eq!(names.name(111), Some("dind2"));
        assert_eq!(names.name(222), None);
        assert_eq!(
            names.name(333),
            Some("host"),
            "an explicit file is used whatever its pid"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
