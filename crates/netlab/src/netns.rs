//! A network namespace held by a file descriptor.
//!
//! `ip netns add NAME` keeps a namespace alive by bind-mounting it under `/run/netns`:
//! the namespace then outlives the program that made it, and a crash leaves it behind.
//! The lab never does that. A [`Netns`] is *anonymous*: it lives exactly as long as
//! something refers to it — the file descriptor in this value, a socket created inside,
//! or a process running inside. When the lab process exits (even on SIGKILL) the kernel
//! closes the descriptors, kills the helpers (see [`Netns::command`]) and the namespace
//! is gone.
//!
//! Namespaces belong to threads, not processes: [`Netns::run`] runs a closure on a
//! short-lived thread that first moved into the namespace, so sockets it creates live
//! there — while the rest of the program stays where it was.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::Arc;

use anyhow::{Context, Result};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::prctl::set_pdeathsig;
use nix::sys::signal::Signal;

/// An anonymous network namespace. Dropping the last reference destroys it.
#[derive(Debug)]
pub struct Netns {
    /// Shared with the [`Command`]s made by [`Netns::command`], which need it in the child.
    fd: Arc<OwnedFd>,
    inode: u64,
}

impl Netns {
    /// Create a fresh, empty network namespace (only `lo`, and it is down).
    pub fn new() -> Result<Netns> {
        // unshare() moves the *calling thread* into the new namespace; use a throwaway
        // thread so the caller stays where it is.
        std::thread::spawn(|| -> Result<Netns> {
            unshare(CloneFlags::CLONE_NEWNET).context(
                "cannot create a network namespace (needs root, or a user namespace: \
                     is `netlab::sandbox!();` at the top of this program?)",
            )?;
            Netns::open("/proc/thread-self/ns/net")
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Hold the namespace a path points at (`/proc/PID/ns/net`, `/proc/PID/fd/N`, …).
    pub fn open(path: &str) -> Result<Netns> {
        let file = File::open(path).with_context(|| format!("cannot open namespace {path}"))?;
        let inode = file.metadata()?.ino();
        Ok(Netns {
            fd: Arc::new(file.into()),
            inode,
        })
    }

    /// The namespace's identity: the inode `ls -l /proc/PID/ns/net` shows, and what
    /// eBPF programs see as `net->ns.inum`.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// A path other programs can open to reach this namespace while we are alive
    /// (`ip link set … netns PATH`, `nsenter --net=PATH`).
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// The raw descriptor (valid as long as `self`).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Run `f` on a thread that lives inside this namespace, and return its result.
    /// Sockets created by `f` belong to this namespace for their whole life.
    /// A panic in `f` is propagated to the caller.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        std::thread::scope(|scope| {
            let handle = scope.spawn(|| {
                self.enter_current_thread()
                    .expect("cannot enter the namespace");
                f()
            });
            match handle.join() {
                Ok(value) => value,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Run an async job to completion inside this namespace, on a current-thread Tokio
    /// runtime of its own. `make` is called inside the namespace, so every socket the
    /// future creates belongs to it.
    pub fn block_on<F, Fut>(&self, make: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send,
        Fut: Future,
        Fut::Output: Send,
    {
        self.run(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cannot build a Tokio runtime");
            runtime.block_on(make())
        })
    }

    /// Move the calling thread into this namespace (for threads the caller owns).
    pub fn enter_current_thread(&self) -> io::Result<()> {
        Ok(setns(&self.fd, CloneFlags::CLONE_NEWNET)?)
    }

    /// A [`Command`] that runs inside this namespace. The child is killed (SIGKILL) when
    /// the thread that spawned it ends, so a lab's helpers can never outlive it — spawn
    /// long-lived programs from a thread that lives as long as the lab.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(crate::programs::find(program));
        // The command holds the namespace too: it stays alive until the child has joined it.
        let namespace = Arc::clone(&self.fd);
        // SAFETY: `pre_exec` runs the closure in the child, between fork and exec. There only
        // async-signal-safe work is sound: the other threads of the parent did not follow
        // into the child, and locks they held (the allocator's, stdout's) stay locked forever.
        // The closure makes two system calls and nothing else: no allocation, no lock.
        // There is no safe API for "run this in the child before exec".
        unsafe {
            command.pre_exec(move || {
                setns(&namespace, CloneFlags::CLONE_NEWNET)?;
                set_pdeathsig(Signal::SIGKILL)?;
                Ok(())
            });
        }
        // iptables-legacy wants a lock file under /run, which is not ours without root.
        command.env(
            "XTABLES_LOCKFILE",
            std::env::temp_dir().join("netlab-xtables.lock"),
        );
        command
    }

    /// Write a sysctl of this namespace (`net.ipv4.ip_forward` → `/proc/sys/net/ipv4/ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        self.run(|| std::fs::write(&path, value))
            .with_context(|| format!("cannot set {key}={value}"))
    }

    /// Read a file of `/proc/net` *as this namespace sees it* (`/proc/net` itself
    /// follows the main thread's namespace; `/proc/thread-self/net` follows ours).
    pub fn read_proc_net(&self, file: &str) -> io::Result<String> {
        let path = format!("/proc/thread-self/net/{file}");
        self.run(|| std::fs::read_to_string(&path))
    }
}
