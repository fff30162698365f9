//! Finding the system programs the lab runs (`ip`, `iptables-restore`, `conntrack`, …).
//!
//! A non-root user's `PATH` often lacks `/usr/sbin`, where these live; look there too,
//! and say what to install when a program is missing.

use std::path::PathBuf;

const EXTRA_DIRS: &[&str] = &["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// The full path of `program`, or the bare name (so that the spawn error names it).
pub fn find(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(EXTRA_DIRS.iter().copied())
        .filter(|dir| !dir.is_empty())
        .map(|dir| PathBuf::from(dir).join(program))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| PathBuf::from(program))
}

/// The Debian/Ubuntu package that provides a program, for error messages.
pub fn package_of(program: &str) -> &'static str {
    match program {
        "ip" | "bridge" => "iproute2",
        p if p.starts_with("iptables") => "iptables",
        "nft" => "nftables",
        "conntrack" => "conntrack",
        "tcpdump" => "tcpdump",
        "tshark" => "tshark",
        _ => "the package that provides it",
    }
}
