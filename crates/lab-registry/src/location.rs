//! Where a user's labs register, and whose directory that must be.

use std::path::PathBuf;

use nix::sys::stat::{lstat, FileStat, SFlag};
use nix::unistd::Uid;

/// A registry directory and the user it must belong to.
///
/// Uids here are the *machine's* (the parent user namespace's): without root, `lab up`
/// runs inside a user namespace where it is uid 0, but its files belong to you, and the
/// directory is named after your uid, not after 0 (see [`to_machine`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    pub owner: u32,
}

impl Location {
    /// Where your labs register: `$XDG_RUNTIME_DIR/packet-drop-lab` if `XDG_RUNTIME_DIR`
    /// is a directory of yours with mode 0700, else `${TMPDIR:-/tmp}/packet-drop-lab-UID`.
    pub fn own() -> Location {
        Location::of_user(machine_euid())
    }

    /// A directory of yours at `path` (for a registry kept somewhere else, and tests).
    pub fn own_at(path: impl Into<PathBuf>) -> Location {
        Location {
            path: path.into(),
            owner: machine_euid(),
        }
    }

    fn of_user(uid: u32) -> Location {
        let path = match runtime_dir_of(uid) {
            Some(runtime_dir) => runtime_dir.join("packet-drop-lab"),
            None => std::env::temp_dir().join(format!("packet-drop-lab-{uid}")),
        };
        Location { path, owner: uid }
    }

    /// Where to look for running labs: your own location and, when you are root through
    /// `sudo`, the location of the user who ran sudo (a learner runs `cargo xtask lab up`,
    /// then `sudo -E tracer path --node dind2`).
    pub fn all_to_read() -> Vec<Location> {
        let mut all = vec![Location::own()];
        if let Some(sudo_user) = sudo_uid().filter(|_| machine_euid() == 0) {
            let theirs = Location::of_user(sudo_user);
            if !all.contains(&theirs) {
                all.push(theirs);
            }
        }
        all
    }

    /// Is this the caller's own location (where it may remove stale files)?
    pub fn is_own(&self) -> bool {
        self.owner == machine_euid()
    }
}

/// `$XDG_RUNTIME_DIR`, if it is a directory that belongs to `uid` and to nobody else
/// (mode 0700, as the XDG specification requires). `su` and `sudo -E` keep the variable
/// of the user they came from: that directory is then not the current user's, and the
/// registry falls back to the per-user directory in `/tmp`.
fn runtime_dir_of(uid: u32) -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty())?);
    let stat = lstat(&dir).ok()?;
    let only_theirs =
        is_directory(&stat) && to_machine(stat.st_uid) == Some(uid) && stat.st_mode & 0o077 == 0;
    (dir.is_absolute() && only_theirs).then_some(dir)
}

/// The user who ran `sudo` (sudo sets `SUDO_UID`).
fn sudo_uid() -> Option<u32> {
    std::env::var("SUDO_UID").ok()?.parse().ok()
}

pub(crate) fn is_directory(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

pub(crate) fn is_symlink(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK
}

pub(crate) fn is_regular_file(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// Our effective uid as the machine sees it.
pub(crate) fn machine_euid() -> u32 {
    let uid = Uid::effective().as_raw();
    to_machine(uid).unwrap_or(uid)
}

/// A uid of our user namespace (what `geteuid` and `stat` return here) as the parent
/// namespace sees it, through `/proc/self/uid_map` (lines `INSIDE OUTSIDE COUNT`). In the
/// machine's own namespace the map is the identity (`0 0 4294967295`); in the sandbox of
/// an unprivileged lab it is `0 1000 1`: root inside is uid 1000 outside. `None`: the uid
/// has no identity outside (the kernel shows it as the overflow uid, 65534).
pub(crate) fn to_machine(uid: u32) -> Option<u32> {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => through_map(&map, uid),
        Err(_) => Some(uid),
    }
}

/// `uid` through the text of a `uid_map`.
fn through_map(map: &str, uid: u32) -> Option<u32> {
    map.lines().find_map(|line| {
        let mut numbers = line.split_whitespace().map(|n| n.parse::<u64>().ok());
        let (inside, outside, count) = (numbers.next()??, numbers.next()??, numbers.next()??);
        let uid = u64::from(uid);
        (inside..inside + count)
            .contains(&uid)
            .then(|| u32::try_from(outside + (uid - inside)).ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_go_through_the_map() {
        let machine = "         0          0 4294967295\n";
        assert_eq!(through_map(machine, 1000), Some(1000));
        let sandbox = "         0       1000          1\n";
        assert_eq!(through_map(sandbox, 0), Some(1000));
        assert_eq!(through_map(sandbox, 1), None, "unmapped: the overflow uid");
        let two = "0 1000 1\n1 100000 65536\n";
        assert_eq!(through_map(two, 5), Some(100004));
    }

    #[test]
    fn own_location_is_named_after_the_user() {
        let own = Location::own();
        assert_eq!(own.owner, machine_euid());
        assert!(own.is_own());
        let name = own.path.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name == "packet-drop-lab" || name == format!("packet-drop-lab-{}", own.owner),
            "{}",
            own.path.display()
        );
    }
}
