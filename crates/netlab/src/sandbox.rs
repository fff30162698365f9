//! The sandbox every lab process lives in.
//!
//! Before a process builds anything, it moves itself into a **private network namespace**
//! of its own. From then on, the machine's root network namespace is simply out of reach:
//! every interface, address, route and firewall rule the lab creates lives in namespaces
//! that are children of the sandbox, and they all vanish with the process.
//!
//! Without root, the process first creates a **user namespace** in which it is root
//! (`unshare --user --map-root-user`): that grants the capabilities needed to build
//! networks *inside* it, and nothing outside it.
//!
//! Creating a user namespace is only allowed while the process has a single thread, so
//! this has to happen before `main` (and before the test harness starts its threads):
//! [`crate::sandbox!`] registers [`enter`] as a constructor in the `.init_array` section,
//! which the dynamic loader runs before `main`.

use std::fs;
use std::io;
use std::sync::OnceLock;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{getegid, geteuid};

/// What [`enter`] achieved, recorded once per process.
#[derive(Debug, Clone)]
pub struct Sandbox {
    /// Were we real root (uid 0 in the machine's user namespace)?
    pub real_root: bool,
    /// Did we create a user namespace to become root inside it?
    pub user_namespace: bool,
    /// Inode of the network namespace the process started in (the machine's, usually).
    pub original_netns: u64,
    /// Inode of the sandbox's own network namespace.
    pub sandbox_netns: u64,
}

static STATE: OnceLock<Result<Sandbox, String>> = OnceLock::new();

/// Move this process into its sandbox. Call it before any thread exists — in practice
/// through [`crate::sandbox!`]. Calling it again does nothing.
pub fn enter() {
    STATE.get_or_init(try_enter);
}

/// The sandbox this process lives in, or why it could not be entered (with what to do).
pub fn current() -> Result<&'static Sandbox, String> {
    match STATE.get() {
        Some(Ok(sandbox)) => Ok(sandbox),
        Some(Err(why)) => Err(why.clone()),
        None => Err(
            "this process never entered the lab sandbox: add `netlab::sandbox!();` \
                     at the top of the test file or binary (it must run before any thread starts)"
                .to_string(),
        ),
    }
}

fn try_enter() -> Result<Sandbox, String> {
    let original_netns = netns_inode_of("/proc/self/ns/net").map_err(|e| e.to_string())?;
    let (uid, gid) = (geteuid(), getegid());
    let real_root = uid.is_root();

    let mut user_namespace = false;
    // As root, a new network namespace is enough. Root without CAP_SYS_ADMIN (some
    // containers) falls through to the user-namespace path like everybody else.
    if !(real_root && unshare(CloneFlags::CLONE_NEWNET).is_ok()) {
        unshare(CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNET)
            .map_err(|errno| explain_userns_failure(errno.into()))?;
        user_namespace = true;
        // Map ourselves to root inside the new user namespace, like `unshare --map-root-user`.
        fs::write("/proc/self/setgroups", "deny").map_err(|e| format!("setgroups: {e}"))?;
        fs::write("/proc/self/uid_map", format!("0 {uid} 1"))
            .map_err(|e| format!("uid_map: {e}"))?;
        fs::write("/proc/self/gid_map", format!("0 {gid} 1"))
            .map_err(|e| format!("gid_map: {e}"))?;
    }
    let sandbox_netns = netns_inode_of("/proc/self/ns/net").map_err(|e| e.to_string())?;
    Ok(Sandbox {
        real_root,
        user_namespace,
        original_netns,
        sandbox_netns,
    })
}

fn explain_userns_failure(error: io::Error) -> String {
    let mut why =
        format!("cannot create a user namespace to build the lab without root ({error}). ");
    let read = |path: &str| fs::read_to_string(path).ok().map(|s| s.trim().to_string());
    if read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1") {
        why.push_str(
            "AppArmor blocks unprivileged user namespaces on this machine (Ubuntu 23.10+). \
             Allow them with `sudo sysctl kernel.apparmor_restrict_unprivileged_userns=0`, \
             or run the checks as root. ",
        );
    } else if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push_str(
            "Enable them with `sudo sysctl kernel.unprivileged_userns_clone=1`, or run as root. ",
        );
    } else if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push_str(
            "Enable them with `sudo sysctl user.max_user_namespaces=10000`, or run as root. ",
        );
    } else {
        why.push_str("Run the checks as root, or ask `cargo xtask doctor` what is missing. ");
    }
    why
}

/// The inode number that identifies a namespace (what `ls -l /proc/self/ns/net` shows).
pub fn netns_inode_of(path: &str) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    Ok(fs::metadata(path)?.ino())
}

/// Install [`enter`] as a constructor that runs before `main` (and before a test harness
/// starts any thread). Put `netlab::sandbox!();` once at the top of a test file or binary.
#[macro_export]
macro_rules! sandbox {
    () => {
        // SAFETY: the dynamic loader calls every function in `.init_array` before `main`,
        // with no arguments, on the only thread. That is sound here because `enter` needs
        // nothing that `main` sets up: it makes system calls, writes three `/proc` files
        // and fills a `OnceLock`, and it reports failures through `current()` instead of
        // panicking (a panic cannot unwind out of an `extern "C" fn`: it would abort).
        #[used]
        #[unsafe(link_section = ".init_array")]
        static __NETLAB_ENTER_SANDBOX: extern "C" fn() = {
            extern "C" fn enter_sandbox() {
                $crate::sandbox::enter();
            }
            enter_sandbox
        };
    };
}
