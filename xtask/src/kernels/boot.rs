//! Booting a kernel in QEMU with the host's userspace, and nothing of the host writable.
//!
//! - A tiny initramfs of our own: busybox (static) and the modules needed to mount a 9p
//!   share and an overlay (their dependencies from `modules.dep`, decompressed here, since
//!   busybox's `insmod` reads plain `.ko` files only). Its `/init` mounts the host's `/`
//!   read-only over 9p, puts an overlay with a tmpfs upper layer on top (the guest may write;
//!   nothing reaches the host), mounts the kernel's own modules on `/usr/lib/modules` and a
//!   read-write results directory on `/kernels-results`, then `switch_root`s to the guest
//!   script there.
//! - QEMU with TCG (`-accel tcg,thread=multi -cpu max`; KVM does not work on every machine,
//!   e.g. nested virtual machines) and NO network device: the host's network is never touched.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::fetch::Fetched;
use crate::proc;

/// Where the guest sees the results share.
pub const RESULTS_IN_GUEST: &str = "/kernels-results";

/// The modules that mount the shares (those built in are skipped): 9p over virtio, overlay.
const SHARE_MODULES: &[&str] = &["virtio_pci", "9pnet_virtio", "9p", "overlay"];

/// `modules.dep`: module name → (its file, the modules it needs).
fn module_index(dir: &Path) -> Result<BTreeMap<String, (String, Vec<String>)>> {
    let dep = std::fs::read_to_string(dir.join("modules.dep"))
        .with_context(|| format!("no modules.dep in {}", dir.display()))?;
    let name = |path: &str| -> String {
        let file = path.rsplit('/').next().unwrap_or(path);
        let stem = file.split(".ko").next().unwrap_or(file);
        stem.replace('-', "_")
    };
    let mut index = BTreeMap::new();
    for line in dep.lines() {
        let Some((module, deps)) = line.split_once(':') else {
            continue;
        };
        let deps = deps.split_whitespace().map(name).collect();
        index.insert(name(module), (module.to_string(), deps));
    }
    Ok(index)
}

/// `wanted` and everything they need, dependencies first.
pub fn load_order(index: &BTreeMap<String, (String, Vec<String>)>, wanted: &[&str]) -> Vec<String> {
    fn visit(
        m: &str,
        index: &BTreeMap<String, (String, Vec<String>)>,
        seen: &mut HashSet<String>,
        out: &mut Vec<String>,
    ) {
        if !seen.insert(m.to_string()) {
            return;
        }
        let Some((_, deps)) = index.get(m) else {
            return; // built in (or absent): nothing to load
        };
        for d in deps {
            visit(d, index, seen, out);
        }
        out.push(m.to_string());
    }
    let (mut seen, mut out) = (HashSet::new(), Vec::new());
    for m in wanted {
        visit(&m.replace('-', "_"), index, &mut seen, &mut out);
    }
    out
}

/// The initramfs's `/init` (busybox sh).
fn init_script(modules: &[String]) -> String {
    let insmods: String = modules
        .iter()
        .map(|m| format!("insmod /modules/{m}.ko || echo \"init: insmod {m} failed\"\n"))
        .collect();
    format!(
        r#"#!/bin/sh
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
{insmods}
mkdir -p /lower /rw /newroot
opts=trans=virtio,version=9p2000.L,msize=512000
mount -t 9p -o ro,$opts root /lower || {{ echo "init: cannot mount the host's / over 9p"; poweroff -f; }}
mount -t tmpfs -o size=1536m tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot || {{ echo "init: overlay failed"; poweroff -f; }}
mkdir -p /newroot/usr/lib/modules
mount -t 9p -o ro,$opts modules /newroot/usr/lib/modules
mkdir -p /newroot{RESULTS_IN_GUEST}
mount -t 9p -o $opts results /newroot{RESULTS_IN_GUEST}
umount /proc /sys
mount --move /dev /newroot/dev 2>/dev/null || umount /dev
exec switch_root /newroot /bin/sh {RESULTS_IN_GUEST}/guest-init.sh
"#
    )
}

/// Builds `initramfs.cpio` for `kernel` in `work`.
pub fn initramfs(kernel: &Fetched, work: &Path) -> Result<PathBuf> {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .context("no busybox: install busybox-static")?;
    let staging = work.join("initramfs");
    let _ = std::fs::remove_dir_all(&staging);
    for d in ["bin", "modules", "proc", "sys", "dev", "newroot"] {
        std::fs::create_dir_all(staging.join(d))?;
    }
    std::fs::copy(busybox, staging.join("bin/busybox"))?;
    for applet in [
        "sh",
        "mount",
        "umount",
        "insmod",
        "mkdir",
        "switch_root",
        "poweroff",
        "echo",
    ] {
        std::os::unix::fs::symlink("busybox", staging.join("bin").join(applet))?;
    }
    let dir = kernel.modules.join(&kernel.release);
    let index = module_index(&dir)?;
    let order = load_order(&index, SHARE_MODULES);
    for m in &order {
        let file = dir.join(&index[m].0);
        let out = staging.join("modules").join(format!("{m}.ko"));
        let name = file.to_string_lossy();
        let decompress = if name.ends_with(".xz") {
            Some("xz")
        } else if name.ends_with(".zst") {
            Some("zstd")
        } else {
            None
        };
        match decompress {
            Some(tool) => {
                let data = Command::new(tool)
                    .arg("-dc")
                    .arg(&file)
                    .output()
                    .with_context(|| format!("cannot run {tool} (install xz-utils and zstd)"))?;
                if !data.status.success() {
                    bail!("{tool} -dc {} failed", file.display());
                }
                std::fs::write(&out, data.stdout)?;
            }
            None => {
                std::fs::copy(&file, &out)?;
            }
        }
    }
    let init = staging.join("init");
    std::fs::write(&init, init_script(&order))?;
    std::fs::set_permissions(&init, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let cpio = work.join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg("find . | cpio -o -H newc --quiet > \"$0\"")
        .arg(&cpio)
        .current_dir(&staging)
        .status()
        .context("cannot run cpio (install cpio)")?;
    if !status.success() {
        bail!("cpio failed");
    }
    Ok(cpio)
}

/// Boots `kernel` with `initrd`, the results share at `results`; the guest runs
/// `results/guest-init.sh` and powers off. The console goes to `results/console.log`.
pub fn boot(kernel: &Fetched, initrd: &Path, results: &Path, limit: Duration) -> Result<Duration> {
    let qemu = proc::which("qemu-system-x86_64")
        .context("qemu-system-x86_64 is missing: install qemu-system-x86")?;
    let share = |path: &Path, tag: &str, readonly: bool| {
        format!(
            "local,path={},mount_tag={tag},security_model=none,multidevs=remap{}",
            path.display(),
            if readonly { ",readonly=on" } else { "" }
        )
    };
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "2048",
    ])
    .args([
        "-M", "q35", "-nic", "none", "-display", "none", "-monitor", "none",
    ])
    .args(["-no-reboot", "-kernel"])
    .arg(&kernel.vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 panic=-1 loglevel=4"])
    .arg("-virtfs")
    .arg(share(Path::new("/"), "root", true))
    .arg("-virtfs")
    .arg(share(&kernel.modules, "modules", true))
    .arg("-virtfs")
    .arg(share(results, "results", false))
    .arg("-serial")
    .arg(format!("file:{}", results.join("console.log").display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    proc::dies_with_runner(&mut cmd);
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start QEMU")?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                bail!("QEMU failed ({status}): {}", err.trim());
            }
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "the guest did not power off within {} s (its console: {})",
                limit.as_secs(),
                results.join("console.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependencies_load_first_and_built_ins_are_skipped() {
        let mut index = BTreeMap::new();
        let mut add = |m: &str, deps: &[&str]| {
            index.insert(
                m.to_string(),
                (
                    format!("kernel/{m}.ko.xz"),
                    deps.iter().map(|d| d.to_string()).collect(),
                ),
            );
        };
        add("9p", &["9pnet", "netfs"]);
        add("9pnet_virtio", &["9pnet"]);
        add("9pnet", &[]);
        add("netfs", &[]);
        add("overlay", &[]);
        // virtio_pci is built in: not in modules.dep.
        let order = load_order(&index, SHARE_MODULES);
        assert_eq!(order, ["9pnet", "9pnet_virtio", "netfs", "9p", "overlay"]);
    }
}
