//! Reading a namespace's conntrack table, whatever the kernel offers.
//!
//! The table is printed by the kernel in `/proc/net/nf_conntrack` — one flow per line,
//! the format exercise 6 parses. That file exists only in kernels built with
//! `CONFIG_NF_CONNTRACK_PROCFS` (some distributions turn it off). The same table is
//! always available over netlink (`NFNL_SUBSYS_CTNETLINK`), which is what the
//! `conntrack` tool of conntrack-tools reads; `conntrack -L -o extended` prints it in
//! the `/proc` format, except that `zone=` appears only when it is not 0 and `use=`
//! counts one reference less (the file holds one while it prints).
//!
//! [`read`] takes the table from one [`Source`]; [`read_any`] takes the `/proc` file when
//! the kernel has it and falls back to netlink ([`netlink::dump`], the course's own
//! small ctnetlink reader, which prints the `/proc` format). Set
//! `NETLAB_CONNTRACK_SOURCE=netlink` (or `conntrack`, for conntrack-tools) to force a
//! fallback — to try the course's tooling as it runs on such kernels.

use std::io::ErrorKind;
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;

pub mod netlink;

/// Where a conntrack table is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/proc/net/nf_conntrack`, as the namespace sees it (`/proc/thread-self/net/…`).
    ProcFs,
    /// A ctnetlink dump by the course's own reader ([`netlink::dump`]), inside the namespace.
    Netlink,
    /// `conntrack -L -o extended` (conntrack-tools, over netlink), run inside the namespace.
    ConntrackTool,
}

/// The environment variable that forces a [`Source`] in [`read_any`]:
/// `proc`, `netlink` or `conntrack`.
pub const SOURCE_VARIABLE: &str = "NETLAB_CONNTRACK_SOURCE";

/// The namespace's table from `source`, one entry per line in the `/proc` format.
pub fn read(netns: &Netns, source: Source) -> Result<String> {
    match source {
        Source::ProcFs => netns
            .read_proc_net("nf_conntrack")
            .map_err(|error| proc_error(error.kind()))
            .map_err(anyhow::Error::msg),
        Source::Netlink => netns
            .run(netlink::dump)
            .context("reading conntrack over netlink (NETLINK_NETFILTER)"),
        Source::ConntrackTool => {
            let mut command = netns.command("conntrack");
            command.args(["-L", "-o", "extended"]);
            run_conntrack_tool(command)
        }
    }
}

/// The table from `/proc` when this kernel has it, otherwise over netlink.
/// Says which source it used.
pub fn read_any(netns: &Netns) -> Result<(String, Source)> {
    if let Some(source) = forced_source()? {
        return Ok((read(netns, source)?, source));
    }
    match netns.read_proc_net("nf_conntrack") {
        Ok(table) => Ok((table, Source::ProcFs)),
        // No such file (CONFIG_NF_CONNTRACK_PROCFS off), or not readable here: the same
        // table is behind netlink.
        Err(error) => match read(netns, Source::Netlink) {
            Ok(table) => Ok((table, Source::Netlink)),
            Err(netlink) => bail!(
                "{}; and over netlink: {netlink:#}",
                proc_error(error.kind())
            ),
        },
    }
}

/// The source [`SOURCE_VARIABLE`] asks for, if it is set.
pub fn forced_source() -> Result<Option<Source>> {
    match std::env::var(SOURCE_VARIABLE).ok().as_deref() {
        None | Some("") => Ok(None),
        Some("proc") => Ok(Some(Source::ProcFs)),
        Some("netlink") => Ok(Some(Source::Netlink)),
        Some("conntrack") => Ok(Some(Source::ConntrackTool)),
        Some(other) => bail!(
            "{SOURCE_VARIABLE}={other:?}: say `proc`, `netlink` or `conntrack` (or leave it unset)"
        ),
    }
}

/// Does this kernel print conntrack tables in `/proc` at all? Answered from the
/// kernel's build configuration when it is published, otherwise from the root
/// namespace's `/proc/net/nf_conntrack` (which only exists once conntrack is loaded).
/// `None`: cannot tell.
pub fn kernel_has_procfs_table() -> Option<bool> {
    if std::path::Path::new("/proc/net/nf_conntrack").exists() {
        return Some(true);
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let config = std::fs::read_to_string(format!("/boot/config-{}", release.trim())).ok()?;
    Some(config.lines().any(|l| l == "CONFIG_NF_CONNTRACK_PROCFS=y"))
}

fn proc_error(kind: ErrorKind) -> String {
    match kind {
        ErrorKind::NotFound => "this kernel has no /proc/net/nf_conntrack (built without CONFIG_NF_CONNTRACK_PROCFS): read the table over netlink instead (`conntrack -L -o extended`)".to_string(),
        ErrorKind::PermissionDenied => "/proc/net/nf_conntrack is not readable here (in a user namespace, only namespaces created inside it are; the first one, made by unshare itself, is owned by nobody)".to_string(),
        other => format!("cannot read /proc/net/nf_conntrack: {other}"),
    }
}

fn run_conntrack_tool(mut command: std::process::Command) -> Result<String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .context("cannot run `conntrack`: install the `conntrack` package (conntrack-tools)")?;
    // conntrack prints a summary ("N flow entries have been shown") on stderr.
    if !output.status.success() {
        bail!(
            "`conntrack -L -o extended` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    String::from_utf8(output.stdout).context("conntrack printed something that is not UTF-8")
}
