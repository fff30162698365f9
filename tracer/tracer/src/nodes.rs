//! Naming network namespaces: "netns 4026532417" becomes "dind2".
//!
//! The kernel only knows a namespace by its inode number. The course's lab registers each running
//! world with the lab registry (the `lab-registry` crate): a JSON file
//! `$XDG_RUNTIME_DIR/packet-drop-lab/<pid>.json`, or `${TMPDIR:-/tmp}/packet-drop-lab-<uid>/<pid>.json`
//! without a private `XDG_RUNTIME_DIR`:
//!
//! ```json
//! {"pid": 1234, "start_time": 81234567, "nodes": {"host": 4026532417, "dind2": 4026532588}, ...}
//! ```
//!
//! Only registrations nobody else could have written are used: files of yours (under `sudo`, also
//! of the user who ran sudo), in a directory nobody else can write to, opened without following
//! symbolic links, whose lab is still running (the same process: pid *and* start time). Stale
//! files are ignored, and removed from your own directory. The same format can be given
//! explicitly with `--netns-names FILE` (always used, whatever its pid).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use lab_registry::Location;

pub use lab_registry::Registration;

/// Your lab registry directory (see the module's documentation).
pub fn registry_dir() -> PathBuf {
    Location::own().path
}

/// Parses one registration file's text.
pub fn parse_registration(text: &str) -> Result<Registration> {
    Registration::parse(text)
}

/// Namespace inode → node name, from the lab's registrations and an optional explicit file.
#[derive(Debug, Default)]
pub struct NodeNames {
    registry: Vec<Location>,
    explicit: HashMap<u32, String>,
    names: HashMap<u32, String>,
    inodes: HashMap<String, u32>,
    last_scan: Option<Instant>,
}

impl NodeNames {
    /// Names from the lab registry in `dir` and, if given, the explicit file. `dir` is usually
    /// [`registry_dir`], which also brings in, under `sudo`, the registry of the user who ran
    /// sudo; any other directory must be yours.
    pub fn new(dir: Option<PathBuf>, explicit_file: Option<&Path>) -> Result<NodeNames> {
        let mut explicit = HashMap::new();
        if let Some(file) = explicit_file {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read --netns-names file {}", file.display()))?;
            let reg = parse_registration(&text)
                .with_context(|| format!("bad --netns-names file {}", file.display()))?;
            for (name, ino) in reg.nodes {
                let ino = u32::try_from(ino).with_context(|| {
                    format!(
                        "bad --netns-names file {}: inode {ino} of {name} is too large for a netns",
                        file.display()
                    )
                })?;
                explicit.insert(ino, name);
            }
        }
        let registry = match dir {
            None => Vec::new(),
            Some(dir) if dir == registry_dir() => Location::all_to_read(),
            Some(dir) => vec![Location::own_at(dir)],
        };
        let mut n = NodeNames {
            registry,
            explicit,
            ..Default::default()
        };
        for note in n.rescan() {
            eprintln!("tracer: {note}");
        }
        Ok(n)
    }

    /// Re-reads the lab registry: the running labs' nodes, newest lab first for a name two labs
    /// share, the explicit file before all. Returns what was ignored or removed, and why.
    pub fn rescan(&mut self) -> Vec<String> {
        self.last_scan = Some(Instant::now());
        let scan = lab_registry::scan(&self.registry);
        let mut names = HashMap::new();
        let mut inodes = HashMap::new();
        // Oldest first: a newer lab's node of the same name replaces an older one's.
        let registered = scan.labs.into_iter().flat_map(|lab| lab.registration.nodes);
        for (name, ino) in
            registered.filter_map(|(name, ino)| Some((name, u32::try_from(ino).ok()?)))
        {
            names.insert(ino, name.clone());
            inodes.insert(name, ino);
        }
        for (ino, name) in &self.explicit {
            names.insert(*ino, name.clone());
            inodes.insert(name.clone(), *ino);
        }
        self.names = names;
        self.inodes = inodes;
        scan.notes
    }

    /// The namespace inode of a node name (`--node dind2`), if a live lab or the explicit file
    /// has it.
    pub fn inode_of(&self, name: &str) -> Option<u32> {
        self.inodes.get(name).copied()
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
            let _ = self.rescan();
        }
        self.names.get(&netns).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

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
    fn live_trusted_registrations_only() {
        let dir = std::env::temp_dir().join(format!("tracer-nodes-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let me = std::process::id();
        let mut live = Registration::of_this_process(false, []).unwrap();
        live.nodes.insert("dind2".into(), 111);
        std::fs::write(dir.join(format!("{me}.json")), live.to_json()).unwrap();
        // pid 0 is never a live process: a stale registration.
        std::fs::write(dir.join("0.json"), r#"{"pid": 0, "nodes": {"ghost": 222}}"#).unwrap();
        std::fs::write(dir.join("junk.json"), "not json").unwrap();
        // A file anybody could have written is not trusted, though its process (init) lives.
        let mut init = Registration::of_this_process(false, []).unwrap();
        init.pid = 1;
        init.start_time = lab_registry::start_time_of(1).ok();
        init.nodes.insert("forged".into(), 444);
        let forged = dir.join("1.json");
        std::fs::write(&forged, init.to_json()).unwrap();
        std::fs::set_permissions(&forged, std::fs::Permissions::from_mode(0o666)).unwrap();
        let explicit = dir.join("explicit.names");
        std::fs::write(&explicit, r#"{"pid": 0, "nodes": {"host": 333}}"#).unwrap();

        let mut names = NodeNames::new(Some(dir.clone()), Some(&explicit)).unwrap();
        assert_eq!(names.name(111), Some("dind2"));
        assert_eq!(names.inode_of("dind2"), Some(111));
        assert_eq!(names.name(222), None);
        assert_eq!(names.name(444), None, "a file others can write is ignored");
        assert_eq!(
            names.name(333),
            Some("host"),
            "an explicit file is used whatever its pid"
        );
        assert!(!dir.join("0.json").exists(), "the stale file was removed");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
