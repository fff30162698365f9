//! The lab registry: how a running world tells other programs where its namespaces are.
//!
//! `lab up` keeps the story's world running. Its network namespaces have no name in the
//! file system (each is held by a file descriptor, see `netlab::Netns`), so other programs
//! find them through one small JSON file per running lab: `lab exec` joins a node through
//! it, and the tracer names namespace inodes with it (`--node dind2`, `4026532588(dind2)`).
//!
//! ```json
//! {"pid": 1234, "start_time": 81234567, "user_namespace": false,
//!  "nodes": {"dind2": 4026532588, ...}, "fds": {"dind2": 7, ...}}
//! ```
//!
//! **Where.** `$XDG_RUNTIME_DIR/packet-drop-lab/PID.json` when `XDG_RUNTIME_DIR` is a
//! directory of yours with mode 0700 (a desktop session has one); otherwise
//! `${TMPDIR:-/tmp}/packet-drop-lab-UID/PID.json`, one directory per user
//! ([`Location::own`]).
//!
//! **Why so careful.** `/tmp` is shared by every user. A program running as root that
//! writes `/tmp/packet-drop-lab/1234.json` with `create_dir_all` + `fs::write` follows
//! whatever another user prepared there: create the directory first, plant
//! `1234.json -> /etc/shadow`, and root overwrites `/etc/shadow`. (This is what an
//! earlier version of the lab did.) So:
//!
//! - the writer creates its directory with mode 0700 and checks it through an open
//!   descriptor: a directory, not a symbolic link, owned by you, writable by nobody else
//!   ([`RegistryDir::create`]); it then writes a *new* file (`O_CREAT|O_EXCL|O_NOFOLLOW`)
//!   and renames it into place ([`RegistryDir::publish`]): no path it opens can lead
//!   outside the directory;
//! - readers trust a directory and a file only if they belong to the user who runs the
//!   lab (you; under `sudo`, also the user who ran sudo), open files with `O_NOFOLLOW`
//!   and check with `fstat` that they are regular files nobody else can write
//!   ([`running_labs`]);
//! - a registration names its process by pid *and start time*: pids are reused, the pair
//!   is not. A file whose process is gone, or is some other process now, is stale: it is
//!   removed ([`Registration::stale_because`]).

mod dir;
mod location;
mod registration;

pub use dir::{running_labs, scan, Lab, Published, RegistryDir, Scan};
pub use location::Location;
pub use registration::{start_time_of, Registration};
