//! # netlab — the course's network lab
//!
//! Everything the course builds lives in network namespaces that this crate creates,
//! inside a private sandbox, and that vanish with the process:
//!
//! - [`sandbox`]: move the process out of the machine's root network namespace before it
//!   does anything (`netlab::sandbox!();`), becoming root in a user namespace if needed;
//! - [`Netns`]: one anonymous network namespace, held by a file descriptor;
//! - [`Topology`]: the world as data (nodes, bridges, cables, addresses, routes);
//! - [`World`]: a topology brought up, with services and programs running inside;
//! - [`conntrack`]: a namespace's conntrack table, from `/proc` or the `conntrack` tool.
//!
//! ```no_run
//! netlab::sandbox!();
//! # fn main() -> anyhow::Result<()> {
//! let mut plan = netlab::Topology::new();
//! plan.node("a").address("eth0", "10.0.0.1/24");
//! plan.node("b").address("eth0", "10.0.0.2/24");
//! plan.veth(("a", "eth0"), ("b", "eth0"));
//! let world = netlab::World::up(&plan)?;
//! let reply = world.node("a")?.run(|| std::net::UdpSocket::bind("10.0.0.1:0"));
//! # Ok(()) }
//! ```

pub mod conntrack;
pub mod netlink;
pub mod netns;
pub mod programs;
pub mod sandbox;
pub mod svg;
pub mod topology;
pub mod watchdog;
pub mod world;

pub use netns::Netns;
pub use topology::{Cidr, NodeSpec, Topology};
pub use world::{Node, Service, World};

/// Skip a check, with the reason and what to do about it.
///
/// A skip is never a pass: the check stops with a panic whose message starts with
/// `SKIPPED: `, so plain `cargo test` shows it as failed (with the reason), and
/// `cargo xtask check` shows it as SKIP. In CI a skip is a failure.
#[macro_export]
macro_rules! skip {
    ($($reason:tt)+) => {{
        let reason = format!($($reason)+);
        println!("SKIPPED: {reason}");
        panic!("SKIPPED: {reason}");
    }};
}

/// The environment variable that gives every check more time: a number, e.g. `3` for three
/// times as long (a slow laptop, a busy lab server, or a kernel emulated in QEMU, where
/// `cargo xtask kernels` sets it).
pub const TIME_SCALE_VAR: &str = "COURSE_TIME_SCALE";

/// A check's time limit: `seconds`, times [`TIME_SCALE_VAR`] when it is set to a number ≥ 1
/// (anything else is ignored). Used as `#[timeout(netlab::time_limit(30))]`.
pub fn time_limit(seconds: u64) -> std::time::Duration {
    let scale = std::env::var(TIME_SCALE_VAR)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 1.0)
        .unwrap_or(1.0);
    std::time::Duration::from_secs_f64(seconds as f64 * scale)
}

/// The sandbox of this process, or skip the check with the reason it could not be
/// entered (user namespaces blocked, …).
pub fn require_sandbox() -> &'static sandbox::Sandbox {
    match sandbox::current() {
        Ok(sandbox) => sandbox,
        Err(why) => skip!("{why}"),
    }
}

/// Skip the check unless the process is real root (eBPF needs it). `what` is plural:
/// "the eBPF checks" (they need root).
pub fn require_root(what: &str) {
    if !nix::unistd::geteuid().is_root() || require_sandbox().user_namespace {
        skip!("{what} need root: run `cargo xtask check <exercise> --sudo` (it builds as you, then runs only the built checks with sudo -E; never `sudo cargo`)");
    }
}
