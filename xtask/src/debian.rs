//! Debian packages without installing them, and without touching the machine's apt setup.
//!
//! Three parts of the course need a Debian package's files but must not install it: Docker
//! 20.10's and Docker 28's `docker-proxy` (setup), Debian's kernels and trixie's `pwru` (the
//! kernel matrix). They all go the same way:
//!
//! 1. [`PrivateApt`]: apt reads a source list of our own and keeps its package lists and
//!    cache in a directory of our own (`-o Dir::Etc::sourcelist=… -o Dir::Etc::sourceparts=-
//!    -o Dir::State::Lists=… -o Dir::Cache=…`), so `/etc/apt` and `/var/lib/apt` are never
//!    written, and another suite (trixie, sid) can be read on a bookworm machine. Packages are
//!    verified against Debian's archive key, as a normal `apt-get` does.
//! 2. `apt-get download` fetches the `.deb` into a directory (no dependency, no install).
//! 3. [`extract`] (`dpkg-deb -x`) unpacks it into a directory of our own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::proc;

/// Debian's archive key (package `debian-archive-keyring`): what the private source lists
/// trust, and only that.
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// An apt configuration of our own for one Debian suite, in `dir`: `sources.list`, `lists/`
/// and `cache/`.
#[derive(Debug, Clone)]
pub struct PrivateApt {
    dir: PathBuf,
}

impl PrivateApt {
    /// Lays out `dir` and writes its source list (`deb … <suite> main`). Nothing is
    /// downloaded yet: call [`PrivateApt::update`].
    pub fn new(dir: &Path, suite: &str) -> Result<PrivateApt> {
        for tool in ["apt-get", "dpkg-deb"] {
            if proc::which(tool).is_none() {
                bail!("{tool} is missing: fetching Debian packages needs apt (Debian/Ubuntu)");
            }
        }
        if !Path::new(KEYRING).is_file() {
            bail!("{KEYRING} is missing: install the `debian-archive-keyring` package, then run this again");
        }
        for sub in ["lists/partial", "cache/archives/partial"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
        }
        std::fs::write(
            dir.join("sources.list"),
            format!("deb [signed-by={KEYRING}] http://deb.debian.org/debian {suite} main\n"),
        )?;
        Ok(PrivateApt {
            dir: dir.to_path_buf(),
        })
    }

    /// `program` (`apt-get`, `apt-cache`) with the private options. Besides the directories:
    /// no translations and no DEP-11 metadata (only package lists are needed), no locks (the
    /// private directories are ours alone, and the machine's own apt may be busy), and, as
    /// root, downloads as root (apt's `_apt` user cannot write into our directories).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.arg("-o")
            .arg(format!(
                "Dir::Etc::sourcelist={}",
                self.dir.join("sources.list").display()
            ))
            .args(["-o", "Dir::Etc::sourceparts=-"])
            .arg("-o")
            .arg(format!(
                "Dir::State::Lists={}",
                self.dir.join("lists").display()
            ))
            .arg("-o")
            .arg(format!("Dir::Cache={}", self.dir.join("cache").display()))
            .args(["-o", "Acquire::Languages=none"])
            .args([
                "-o",
                "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false",
            ])
            .args(["-o", "APT::Sandbox::User=root"])
            .args(["-o", "Debug::NoLocking=1", "-q"]);
        cmd
    }

    /// `apt-get update` of the private lists (a few seconds; needs deb.debian.org).
    pub fn update(&self) -> Result<()> {
        let mut update = self.command("apt-get");
        update.arg("update");
        run(update, "apt-get update (private source list)")
            .context("is deb.debian.org reachable?")?;
        Ok(())
    }

    /// The package names that start with `prefix` (`apt-cache pkgnames`).
    pub fn package_names(&self, prefix: &str) -> Result<Vec<String>> {
        let mut names = self.command("apt-cache");
        names.args(["pkgnames", prefix]);
        Ok(run(names, "apt-cache pkgnames")?
            .lines()
            .map(str::to_string)
            .collect())
    }

    /// `apt-get download` of `packages` into `into`; returns the `.deb` files there.
    pub fn download(&self, into: &Path, packages: &[&str]) -> Result<Vec<PathBuf>> {
        download_with(self.command("apt-get"), into, packages)
    }
}

/// `apt-get download` with the machine's own apt configuration (its own suite, e.g. Docker
/// 20.10's `docker.io` on bookworm); returns the `.deb` files in `into`.
pub fn download_from_system_apt(into: &Path, packages: &[&str]) -> Result<Vec<PathBuf>> {
    download_with(Command::new("apt-get"), into, packages)
        .context("as root, `apt-get update` first may help")
}

fn download_with(mut apt_get: Command, into: &Path, packages: &[&str]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(into)?;
    apt_get.current_dir(into).arg("download").args(packages);
    run(apt_get, &format!("apt-get download {}", packages.join(" ")))?;
    let debs = debs_in(into)?;
    if debs.is_empty() {
        bail!("apt-get download left no .deb file in {}", into.display());
    }
    Ok(debs)
}

/// The `.deb` files in `dir`, sorted.
pub fn debs_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// `dpkg-deb -x DEB INTO`: the package's files under `into`, nothing installed.
pub fn extract(deb: &Path, into: &Path) -> Result<()> {
    std::fs::create_dir_all(into)?;
    let mut x = Command::new("dpkg-deb");
    x.arg("-x").arg(deb).arg(into);
    run(x, &format!("dpkg-deb -x {}", deb.display()))?;
    Ok(())
}

/// The package's version (`dpkg-deb -f DEB Version`), e.g. `1.0.5-1`.
pub fn version_of(deb: &Path) -> Result<String> {
    let mut f = Command::new("dpkg-deb");
    f.arg("-f").arg(deb).arg("Version");
    Ok(run(f, &format!("dpkg-deb -f {}", deb.display()))?
        .trim()
        .to_string())
}

/// `docker.io`'s `usr/sbin/docker-proxy` from `deb`, copied to `target` (unpacked in `work`).
pub fn copy_docker_proxy(deb: &Path, work: &Path, target: &Path) -> Result<()> {
    let unpacked = work.join("x");
    extract(deb, &unpacked)?;
    let proxy = unpacked.join("usr/sbin/docker-proxy");
    if !proxy.is_file() {
        bail!("{} has no usr/sbin/docker-proxy", deb.display());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::copy(&proxy, target)
        .with_context(|| format!("cannot copy docker-proxy to {}", target.display()))?;
    Ok(())
}

/// Runs `cmd` quietly; its stdout, or an error with everything it printed.
pub fn run(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_private_configuration_points_apt_at_our_directory_only() {
        if proc::which("apt-get").is_none() || !Path::new(KEYRING).is_file() {
            return; // Not a Debian machine: nothing to configure.
        }
        let dir = std::env::temp_dir().join(format!("xtask-debian-test-{}", std::process::id()));
        let apt = PrivateApt::new(&dir, "trixie").unwrap();
        let sources = std::fs::read_to_string(dir.join("sources.list")).unwrap();
        assert!(sources.contains(" trixie main"), "{sources}");
        assert!(sources.contains(KEYRING), "{sources}");
        let args: Vec<String> = apt
            .command("apt-get")
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for key in ["Dir::Etc::sourcelist=", "Dir::State::Lists=", "Dir::Cache="] {
            let value = args.iter().find(|a| a.starts_with(key)).unwrap();
            assert!(value.contains(&*dir.to_string_lossy()), "{value}");
        }
        assert!(args.iter().any(|a| a == "Dir::Etc::sourceparts=-"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
