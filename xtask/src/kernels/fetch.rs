//! Getting Debian's kernels without touching the machine's apt configuration.
//!
//! apt is pointed at a private source list, lists directory and cache under
//! `.course/kernels/apt/<suite>/` ([`crate::debian::PrivateApt`]): `/etc/apt` and
//! `/var/lib/apt` are never written.
//! `apt-get download` fetches the packages (verified against Debian's archive key), `dpkg-deb
//! -x` unpacks them into a directory of our own, and `depmod -b` indexes the modules there.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::debian::{self, PrivateApt};
use crate::proc;

/// One of the course's kernels: which Debian suite ships it and under which package names.
#[derive(Debug, Clone, Copy)]
pub struct KernelSpec {
    /// What `--kernel` takes: `6.1`, `6.12`, `7.2`.
    pub name: &'static str,
    pub suite: &'static str,
    /// The package with the `vmlinuz` (and, except on sid, the modules): `prefix<N>suffix`,
    /// e.g. `linux-image-6.1.0-` + `28` + `-amd64-unsigned`; the highest N wins.
    pub prefix: &'static str,
    pub suffix: &'static str,
    /// Packages with the same N that complete it (sid splits the image in three).
    pub companions: &'static [(&'static str, &'static str)],
}

/// Debian 12's, 13's and sid's kernels — what learners run (plus rolling distributions').
pub const KERNELS: [KernelSpec; 3] = [
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        prefix: "linux-image-6.1.0-",
        suffix: "-amd64-unsigned",
        companions: &[],
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
        prefix: "linux-image-6.12.",
        suffix: "+deb13-amd64-unsigned",
        companions: &[],
    },
    KernelSpec {
        name: "7.2",
        suite: "sid",
        prefix: "linux-binary-7.2.",
        suffix: "-amd64",
        companions: &[
            ("linux-modules-7.2.", "-amd64"),
            ("linux-base-7.2.", "-amd64"),
        ],
    },
];

/// A kernel ready to boot: its image and its modules tree (`<modules>/<release>/`).
#[derive(Debug, Clone)]
pub struct Fetched {
    /// `uname -r` of the kernel, e.g. `6.1.0-28-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// The directory that holds `<release>/modules.dep` — mounted on /usr/lib/modules.
    pub modules: PathBuf,
}

/// The middle of `name` between `prefix` and `suffix`, if it is a version (digits, `.`, `+`,
/// `-` and `deb`): `28` in `linux-image-6.1.0-28-amd64-unsigned`, never `13+deb14-cloud`.
pub fn version_part<'a>(name: &'a str, prefix: &str, suffix: &str) -> Option<&'a str> {
    let middle = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    let plain = middle.replace("deb", "");
    (!middle.is_empty()
        && plain
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | '-')))
    .then_some(middle)
}

/// The numbers in a version, to compare `9` < `28` (as text `9` > `28`).
fn numeric_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect()
}

/// The newest version of `spec`'s image among `names` (apt's package names).
pub fn newest<'a>(spec: &KernelSpec, names: impl Iterator<Item = &'a str>) -> Option<String> {
    names
        .filter_map(|n| version_part(n, spec.prefix, spec.suffix))
        .max_by_key(|v| numeric_key(v))
        .map(str::to_string)
}

/// A private apt configuration for `suite` under `cache/apt/<suite>`, updated.
fn private_apt(cache: &Path, suite: &str) -> Result<PrivateApt> {
    let apt_dir = cache.join("apt").join(suite);
    let apt = PrivateApt::new(&apt_dir, suite)?;
    eprintln!(
        "kernels: apt-get update for {suite} (private lists in {})",
        apt_dir.display()
    );
    apt.update()?;
    Ok(apt)
}

/// pwru, the article's own tool, from Debian trixie (`pwru` 1.0.x), unpacked under
/// `cache/tools/pwru` (never installed). It runs with the host's libc and libpcap. Returns
/// the binary and the package's version (Debian's pwru says `pwru version unknown`).
pub fn fetch_pwru(cache: &Path) -> Result<(PathBuf, String)> {
    let dir = cache.join("tools/pwru");
    let binary = dir.join("usr/bin/pwru");
    let debs = cache.join("tools/debs");
    if !binary.is_file() {
        let apt = private_apt(cache, "trixie")?;
        for deb in apt.download(&debs, &["pwru"])? {
            debian::extract(&deb, &dir)?;
        }
        if !binary.is_file() {
            bail!("the pwru package has no usr/bin/pwru");
        }
    }
    let version = debian::debs_in(&debs)
        .unwrap_or_default()
        .iter()
        .find_map(|deb| debian::version_of(deb).ok())
        .unwrap_or_else(|| "(version unknown)".into());
    Ok((binary, version))
}

/// Downloads and unpacks `spec` under `cache` (once: a `release` file marks it done).
pub fn fetch(cache: &Path, spec: &KernelSpec) -> Result<Fetched> {
    let dir = cache.join(spec.name);
    let tree = dir.join("root");
    let done = dir.join("release");
    if let Ok(release) = std::fs::read_to_string(&done) {
        return located(&tree, release.trim());
    }
    for tool in ["apt-get", "dpkg-deb", "depmod"] {
        if proc::which(tool).is_none() {
            bail!("{tool} is missing: `cargo xtask setup --kernels` installs the kernel matrix's tools (kmod, qemu-system-x86, busybox-static, cpio, xz-utils, zstd)");
        }
    }
    let apt = private_apt(cache, spec.suite)?;
    let names = apt.package_names(spec.prefix)?;
    let version = newest(spec, names.iter().map(String::as_str)).with_context(|| {
        format!(
            "no {}N{} package in Debian {}",
            spec.prefix, spec.suffix, spec.suite
        )
    })?;
    let debs = dir.join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&debs)?;
    std::fs::create_dir_all(&tree)?;
    let mut packages = vec![format!("{}{version}{}", spec.prefix, spec.suffix)];
    packages.extend(
        spec.companions
            .iter()
            .map(|(p, s)| format!("{p}{version}{s}")),
    );
    eprintln!("kernels: downloading {}", packages.join(" "));
    let packages: Vec<&str> = packages.iter().map(String::as_str).collect();
    for deb in apt.download(&debs, &packages)? {
        debian::extract(&deb, &tree)?;
    }
    // Modules under lib/modules (6.1) or usr/lib/modules (6.12+): one place for depmod -b.
    let usr_modules = tree.join("usr/lib/modules");
    if usr_modules.is_dir() {
        std::fs::create_dir_all(tree.join("lib/modules"))?;
        for entry in std::fs::read_dir(&usr_modules)? {
            let entry = entry?;
            std::fs::rename(
                entry.path(),
                tree.join("lib/modules").join(entry.file_name()),
            )?;
        }
    }
    let release = std::fs::read_dir(tree.join("lib/modules"))
        .context("the packages have no modules")?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .context("the packages have no modules directory")?;
    let mut depmod = Command::new("depmod");
    depmod.arg("-b").arg(&tree).arg(&release);
    crate::debian::run(depmod, "depmod")?;
    // The unpacked tree is all we boot from: the .deb files would double the cache's size.
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::write(&done, format!("{release}\n"))?;
    located(&tree, &release)
}

fn located(tree: &Path, release: &str) -> Result<Fetched> {
    // /boot/vmlinuz-<release> (6.1, 6.12) or, in sid's split packages, next to the modules.
    let candidates = [
        tree.join("boot").join(format!("vmlinuz-{release}")),
        tree.join("lib/modules").join(release).join("vmlinuz"),
    ];
    let Some(vmlinuz) = candidates.iter().find(|p| p.is_file()).cloned() else {
        let vmlinuz = &candidates[0];
        bail!(
            "{} is missing: delete {} and run again",
            vmlinuz.display(),
            tree.display()
        );
    };
    Ok(Fetched {
        release: release.to_string(),
        vmlinuz,
        modules: tree.join("lib/modules"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_plain_amd64_image_is_chosen() {
        let names = [
            "linux-image-6.1.0-9-amd64-unsigned",
            "linux-image-6.1.0-28-amd64-unsigned",
            "linux-image-6.1.0-28-cloud-amd64-unsigned",
            "linux-image-6.1.0-28-rt-amd64-unsigned",
            "linux-image-6.1.0-28-amd64-dbg",
        ];
        assert_eq!(
            newest(&KERNELS[0], names.into_iter()).as_deref(),
            Some("28")
        );
        let sid = [
            "linux-binary-7.2.13+deb14-amd64",
            "linux-binary-7.2.13+deb14-cloud-amd64",
            "linux-binary-7.2.9+deb14-rt-amd64",
        ];
        assert_eq!(
            newest(&KERNELS[2], sid.into_iter()).as_deref(),
            Some("13+deb14")
        );
    }
}
