//! The lab registry under attack and after crashes (issue 8): `lab up` must never write
//! through a path another user prepared, and `lab exec` must find the real lab among
//! stale registrations.

mod support;

use std::os::unix::fs::{chown, DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use support::{netns_inode, Scratch};

/// The uid of an unprivileged stranger (`nobody`).
const STRANGER: u32 = 65534;

fn require_root(what: &str) {
    if !nix::unistd::Uid::effective().is_root() {
        netlab::skip!(
            "{what} needs root (to give a directory to another user); CI runs it as root"
        );
    }
}

/// A directory prepared the way an attacker would: world-writable, and with
/// `PID.json -> victim` for the pid the lab will have (`$$` in the starting shell).
fn plant(dir: &Path, victim: &Path) -> String {
    std::fs::DirBuilder::new().mode(0o777).create(dir).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    format!("ln -s '{}' '{}'/$$.json", victim.display(), dir.display())
}

/// A file the attacker wants overwritten.
fn victim(scratch: &Scratch) -> PathBuf {
    let victim = scratch.path.join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    victim
}

/// The reproduction of issue 8: another user created the shared directory and planted a
/// link named after the lab's pid. Root's lab now registers elsewhere, in its own
/// directory, and the victim file is untouched.
#[test]
fn root_lab_ignores_a_shared_directory_another_user_prepared() {
    require_root("planting another user's directory");
    let scratch = Scratch::new("shared-dir");
    let victim = victim(&scratch);
    let plant_link = plant(&scratch.old_registry(), &victim);
    chown(scratch.old_registry(), Some(STRANGER), Some(STRANGER)).unwrap();

    let lab = scratch.start_lab_after(&plant_link);
    let registration = lab.registration(&scratch.registry());
    let status = lab.stop(Signal::SIGINT);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let registration = registration.expect("registered in its own directory");
    assert!(registration["nodes"]["dind2"].is_u64());
    assert_eq!(status.code(), Some(130));
}

/// Same attack on the directory the lab uses now: `lab up` refuses to start and says
/// which path is wrong and how to fix it.
#[test]
fn root_lab_refuses_its_directory_when_another_user_owns_it() {
    require_root("planting another user's directory");
    let scratch = Scratch::new("hostile-dir");
    let victim = victim(&scratch);
    let mut before = plant(&scratch.old_registry(), &victim);
    before.push('\n');
    before.push_str(&plant(&scratch.registry(), &victim));
    for dir in [scratch.old_registry(), scratch.registry()] {
        chown(dir, Some(STRANGER), Some(STRANGER)).unwrap();
    }

    let started = scratch.try_start_lab_after(&before);
    let stderr = started.as_ref().err().cloned();
    drop(started);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    let stderr = stderr.unwrap_or_else(|| {
        panic!("lab up ran with its registry directory owned by uid {STRANGER}")
    });
    let path = scratch.registry().display().to_string();
    assert!(
        stderr.contains(&path),
        "the message names {path}:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!("belongs to uid {STRANGER}")) && stderr.contains("rm -r"),
        "the message says whose it is and the fix:\n{stderr}"
    );
}

/// A link planted in the user's own directories (old and new) is replaced, not followed.
#[test]
fn a_planted_link_in_the_registry_is_replaced_not_followed() {
    let scratch = Scratch::new("own-dir-link");
    let victim = victim(&scratch);
    let mut before = plant(&scratch.old_registry(), &victim);
    before.push('\n');
    before.push_str(&plant(&scratch.registry(), &victim));
    // The new directory must be the user's alone; the planted link stays in it.
    std::fs::set_permissions(scratch.registry(), std::fs::Permissions::from_mode(0o700)).unwrap();

    let lab = scratch.start_lab_after(&before);
    let file = scratch.registry().join(format!("{}.json", lab.pid));
    let entry = std::fs::symlink_metadata(&file);
    let status = lab.stop(Signal::SIGTERM);

    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        entry.unwrap().is_file(),
        "{} is a regular file, not the link",
        file.display()
    );
    assert!(
        !file.exists(),
        "the registration is removed when the lab stops"
    );
    assert_eq!(status.code(), Some(143));
}

/// `XDG_RUNTIME_DIR` that other users can write to (or that belongs to another user, as
/// after `su`) is not used: the lab registers in its per-user directory instead.
#[test]
fn an_xdg_runtime_dir_others_can_write_is_not_used() {
    let mut scratch = Scratch::new("xdg");
    let xdg = scratch.path.join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o777)).unwrap();
    scratch.xdg_runtime_dir = Some(xdg.clone());

    let lab = scratch.start_lab();
    let registered = scratch
        .registry()
        .join(format!("{}.json", lab.pid))
        .exists();
    let in_xdg = xdg.join("packet-drop-lab").exists();
    drop(lab);
    assert!(!in_xdg, "nothing written under the open XDG_RUNTIME_DIR");
    assert!(registered, "registered in {}", scratch.registry().display());

    // A private XDG_RUNTIME_DIR is used.
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let lab = scratch.start_lab();
    let file = xdg
        .join("packet-drop-lab")
        .join(format!("{}.json", lab.pid));
    assert!(file.exists(), "registered in {}", file.display());
}

/// After a lab was SIGKILLed its file stays; its pid may then belong to another process.
/// `lab exec` ignores (and removes) such files and joins the real lab, even though the
/// stale files are newer.
#[test]
fn exec_finds_the_real_lab_among_stale_registrations() {
    let scratch = Scratch::new("stale");
    let lab = scratch.start_lab();
    let dind2 = lab.inode_of("dind2");

    // A lab that died: its pid is free.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    // A lab that died, whose pid now belongs to an ordinary process.
    let mut reused = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    // Written now, so newer than the real lab's. (Also where labs registered before
    // issue 8: what an older lab left there.)
    let mut planted = Vec::new();
    for pid in [dead, reused.id()] {
        let stale = format!(
            r#"{{"pid": {pid}, "start_time": 1, "user_namespace": false,
                "nodes": {{"dind2": 1}}, "fds": {{"dind2": 0}}}}"#
        );
        for dir in [scratch.registry(), scratch.old_registry()] {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("{pid}.json")), &stale).unwrap();
        }
        planted.push(scratch.registry().join(format!("{pid}.json")));
    }

    let out = scratch.run_lab(&["exec", "dind2", "--", "readlink", "/proc/self/ns/net"]);
    let _ = reused.kill();
    let _ = reused.wait();
    drop(lab);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(
        netns_inode(&out.stdout),
        dind2,
        "joined the real lab's dind2"
    );
    for file in &planted {
        assert!(!file.exists(), "{} was removed", file.display());
        let name = file.display().to_string();
        assert!(
            out.stderr.contains(&name),
            "the note names {name}:\n{}",
            out.stderr
        );
    }
}

/// Two labs at once: `lab exec` says which one it joined, and `--lab PID` chooses.
#[test]
fn exec_says_which_of_two_labs_it_joined_and_lab_chooses() {
    let scratch = Scratch::new("two");
    let first = scratch.start_lab();
    let second = scratch.start_lab();
    let (first_dind2, second_dind2) = (first.inode_of("dind2"), second.inode_of("dind2"));
    let readlink = ["dind2", "--", "readlink", "/proc/self/ns/net"];

    let newest = scratch.run_lab(&[&["exec"], &readlink[..]].concat());
    let pid = first.pid.to_string();
    let chosen = scratch.run_lab(&[&["exec", "--lab", &pid], &readlink[..]].concat());
    let missing = scratch.run_lab(&[&["exec", "--lab", "1"], &readlink[..]].concat());
    let second_pid = second.pid;
    drop((first, second));

    assert!(newest.status.success(), "{}", newest.stderr);
    assert_eq!(netns_inode(&newest.stdout), second_dind2);
    assert!(
        newest
            .stderr
            .contains(&format!("joined the newest, pid {}", second_pid))
            && newest.stderr.contains("--lab PID"),
        "{}",
        newest.stderr
    );
    assert!(chosen.status.success(), "{}", chosen.stderr);
    assert_eq!(netns_inode(&chosen.stdout), first_dind2);
    assert!(!missing.status.success());
    assert!(
        missing.stderr.contains("no running lab has pid 1"),
        "{}",
        missing.stderr
    );
}
