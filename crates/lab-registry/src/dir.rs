//! A registry directory opened and checked once, then used only through its descriptor.
//!
//! Every file operation below is relative to the directory's descriptor (`openat`,
//! `renameat`, `unlinkat`), never to a path: once the directory is checked, nothing
//! another user does to the path (replacing it, or a parent, with a symbolic link) can
//! redirect what we read or write.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{open, openat, renameat, OFlag};
use nix::sys::stat::{fstat, lstat, FileStat, Mode};
use nix::unistd::{mkdir, unlinkat, UnlinkatFlags};

use crate::location::{
    is_directory, is_regular_file, is_symlink, machine_euid, to_machine, Location,
};
use crate::Registration;

/// A registration is a few hundred bytes; anything much larger is not one.
const MAX_FILE_SIZE: i64 = 64 * 1024;

/// A checked registry directory: a real directory (not a symbolic link), owned by the
/// location's user, that nobody else can write to.
#[derive(Debug)]
pub struct RegistryDir {
    location: Location,
    fd: OwnedFd,
}

impl RegistryDir {
    /// Your own registry directory, created (mode 0700) if it does not exist yet: where
    /// `lab up` registers. Fails, naming the path and what to do, when the path is
    /// something another user could control.
    pub fn create(location: &Location) -> Result<RegistryDir> {
        match mkdir(&location.path, Mode::S_IRWXU) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => bail!(
                "cannot create the lab registry directory {}: {}. Set XDG_RUNTIME_DIR to a \
                 directory of yours with mode 0700, or TMPDIR to one you can write to.",
                location.path.display(),
                errno.desc()
            ),
        }
        RegistryDir::open(location)?.ok_or_else(|| {
            anyhow!(
                "the lab registry directory {} vanished while it was being created: \
                 someone is removing it; try again",
                location.path.display()
            )
        })
    }

    /// Open and check an existing registry directory (`None`: there is none).
    pub fn open(location: &Location) -> Result<Option<RegistryDir>> {
        let path = &location.path;
        // lstat only makes the message precise; the checks that count are on the
        // descriptor, below.
        match lstat(path) {
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno) => bail!("cannot look at {}: {}", path.display(), errno.desc()),
            Ok(stat) if is_symlink(&stat) => {
                let target = std::fs::read_link(path).unwrap_or_default();
                return Err(refuse(
                    location,
                    &format!("is a symbolic link (to {})", target.display()),
                    &format!("remove the link (`rm {}`)", path.display()),
                ));
            }
            Ok(_) => {}
        }
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match open(path, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(errno @ (Errno::ENOTDIR | Errno::ELOOP)) => {
                return Err(refuse(
                    location,
                    &format!("is not a directory ({})", errno.desc()),
                    &format!("remove it (`rm {}`)", path.display()),
                ))
            }
            Err(errno) => bail!("cannot open {}: {}", path.display(), errno.desc()),
        };
        let stat = fstat(&fd).with_context(|| format!("cannot stat {}", path.display()))?;
        check_directory(location, &stat)?;
        Ok(Some(RegistryDir {
            location: location.clone(),
            fd,
        }))
    }

    pub fn path(&self) -> &Path {
        &self.location.path
    }

    /// Write `registration` as `PID.json`, removed again when the returned value is
    /// dropped.
    ///
    /// The text goes to a new hidden file first (`O_CREAT|O_EXCL|O_NOFOLLOW`: the call
    /// fails rather than open anything that already exists, a symbolic link included),
    /// which is then renamed over `PID.json`. A rename replaces the directory entry
    /// itself, never what an old entry pointed at; and readers see the old file or the
    /// whole new one, never half of it.
    pub fn publish(self, registration: &Registration) -> Result<Published> {
        let name = format!("{}.json", registration.pid);
        let temporary = format!(".{name}.new");
        let path = self.path().join(&name);
        // A leftover of an earlier lab that had our pid and died while writing.
        let _ = unlinkat(&self.fd, temporary.as_str(), UnlinkatFlags::NoRemoveDir);
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mode = Mode::S_IRUSR | Mode::S_IWUSR;
        let fd = openat(&self.fd, temporary.as_str(), flags, mode)
            .with_context(|| format!("cannot create {}", self.path().join(&temporary).display()))?;
        File::from(fd)
            .write_all(registration.to_json().as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        renameat(&self.fd, temporary.as_str(), &self.fd, name.as_str())
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Published { dir: self, name })
    }

    /// The registrations in this directory that describe a running lab, into `scan`.
    /// Stale ones are removed if this is the caller's own directory; files that are not
    /// registrations we can trust are left alone. Each is named in `scan.notes`.
    fn scan_into(&self, scan: &mut Scan) {
        let directory = self.path().display();
        let names = match self.file_names() {
            Ok(names) => names,
            Err(error) => {
                scan.notes
                    .push(format!("cannot list {directory}: {error:#}"));
                return;
            }
        };
        for name in names {
            let file = self.path().join(&name);
            let Some(pid) = name
                .strip_suffix(".json")
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            let registration = match self.read_trusted(&name) {
                Ok(registration) if registration.pid == pid => registration,
                Ok(registration) => {
                    scan.notes.push(format!(
                        "ignored {}: it names pid {}, not {pid}",
                        file.display(),
                        registration.pid
                    ));
                    continue;
                }
                Err(error) => {
                    scan.notes
                        .push(format!("ignored {}: {error:#}", file.display()));
                    continue;
                }
            };
            match registration.stale_because() {
                None => scan.labs.push(Lab { file, registration }),
                Some(why) if self.location.is_own() => {
                    let _ = unlinkat(&self.fd, name.as_str(), UnlinkatFlags::NoRemoveDir);
                    scan.notes.push(format!(
                        "removed the stale registration {}: {why}",
                        file.display()
                    ));
                }
                Some(why) => scan.notes.push(format!(
                    "ignored the stale registration {}: {why}",
                    file.display()
                )),
            }
        }
    }

    fn file_names(&self) -> Result<Vec<String>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let mut dir = Dir::openat(&self.fd, ".", flags, Mode::empty())?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            if let Ok(name) = entry?.file_name().to_str() {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Read one file, if it is a regular file of the directory's user that nobody else
    /// can write (`O_NOFOLLOW`: a symbolic link is refused, not followed; `O_NONBLOCK`: a
    /// named pipe cannot make us wait).
    fn read_trusted(&self, name: &str) -> Result<Registration> {
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => bail!("it is a symbolic link"),
            Err(errno) => bail!("cannot open it: {}", errno.desc()),
        };
        let stat = fstat(&fd)?;
        if !is_regular_file(&stat) {
            bail!("it is not a regular file");
        }
        if to_machine(stat.st_uid) != Some(self.location.owner) {
            bail!(
                "it belongs to uid {}, not to uid {}",
                stat.st_uid,
                self.location.owner
            );
        }
        if stat.st_mode & 0o022 != 0 {
            bail!(
                "other users can write to it (mode {:o})",
                stat.st_mode & 0o7777
            );
        }
        if stat.st_size > MAX_FILE_SIZE {
            bail!("it is {} bytes, too large for a registration", stat.st_size);
        }
        let mut text = String::new();
        File::from(fd).read_to_string(&mut text)?;
        Registration::parse(&text)
    }
}

/// The checks on an open registry directory: a directory, the location's user's,
/// writable by nobody else.
fn check_directory(location: &Location, stat: &FileStat) -> Result<()> {
    let path = location.path.display();
    if !is_directory(stat) {
        return Err(refuse(
            location,
            "is not a directory",
            &format!("remove it (`rm {path}`)"),
        ));
    }
    let owner = to_machine(stat.st_uid);
    if owner != Some(location.owner) {
        let owner = owner.map_or("an unknown user".to_string(), |uid| format!("uid {uid}"));
        return Err(refuse(
            location,
            &format!("belongs to {owner}"),
            &format!("remove it (`sudo rm -r {path}`)"),
        ));
    }
    if stat.st_mode & 0o022 != 0 {
        return Err(refuse(
            location,
            &format!(
                "can be written by other users (mode {:o})",
                stat.st_mode & 0o7777
            ),
            &format!("make it yours alone (`chmod 700 {path}`)"),
        ));
    }
    Ok(())
}

/// Why a registry directory is refused, and what to do.
fn refuse(location: &Location, what: &str, fix: &str) -> anyhow::Error {
    let me = machine_euid();
    let whose = if location.owner == me {
        format!("yours (uid {me})")
    } else {
        format!("uid {}'s", location.owner)
    };
    anyhow!(
        "the lab registry directory {} {what}, but it must be {whose} alone: a lab writing \
         there could be made to overwrite any file another user points it at. \
         Fix: {fix}, or set XDG_RUNTIME_DIR to a directory of yours with mode 0700.",
        location.path.display()
    )
}

/// A published registration: the file is removed when this is dropped.
#[derive(Debug)]
pub struct Published {
    dir: RegistryDir,
    name: String,
}

impl Published {
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }
}

impl Drop for Published {
    fn drop(&mut self) {
        let _ = unlinkat(&self.dir.fd, self.name.as_str(), UnlinkatFlags::NoRemoveDir);
    }
}

/// A running lab, found in the registry.
#[derive(Clone, Debug)]
pub struct Lab {
    pub file: PathBuf,
    pub registration: Registration,
}

/// What a look at the registry found.
#[derive(Debug, Default)]
pub struct Scan {
    /// The running labs, oldest first.
    pub labs: Vec<Lab>,
    /// Files removed or ignored, and directories refused, each with the reason.
    pub notes: Vec<String>,
    /// The directories looked in.
    pub looked_in: Vec<PathBuf>,
}

/// Every running lab of the registry's [`Location::all_to_read`].
pub fn running_labs() -> Scan {
    scan(&Location::all_to_read())
}

/// Every running lab registered in `locations`.
pub fn scan(locations: &[Location]) -> Scan {
    let mut scan = Scan::default();
    for location in locations {
        scan.looked_in.push(location.path.clone());
        match RegistryDir::open(location) {
            Ok(Some(dir)) => dir.scan_into(&mut scan),
            Ok(None) => {}
            Err(error) => scan.notes.push(format!("{error:#}")),
        }
    }
    scan.labs
        .sort_by_key(|lab| (lab.registration.start_time, lab.registration.pid));
    scan
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};

    use super::*;

    /// A private scratch directory (mode 0700), removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(test: &str) -> Scratch {
            let path = std::env::temp_dir()
                .join(format!("lab-registry-unit-{test}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&path)
                .unwrap();
            Scratch(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn me() -> Registration {
        Registration::of_this_process(false, []).unwrap()
    }

    #[test]
    fn publish_creates_a_private_file_and_drop_removes_it() {
        let scratch = Scratch::new("publish");
        let location = Location::own_at(scratch.0.join("registry"));
        let published = RegistryDir::create(&location)
            .unwrap()
            .publish(&me())
            .unwrap();
        let dir_mode = std::fs::metadata(&location.path)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        let path = published.path();
        assert_eq!(
            path,
            location.path.join(format!("{}.json", std::process::id()))
        );
        let file_mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(file_mode & 0o777, 0o600);

        let found = scan(std::slice::from_ref(&location));
        assert_eq!(found.labs.len(), 1, "{:?}", found.notes);
        assert_eq!(found.labs[0].registration, me());
        drop(published);
        assert!(!path.exists());
    }

    #[test]
    fn a_planted_symlink_is_replaced_not_followed() {
        let scratch = Scratch::new("symlink");
        let victim = scratch.0.join("victim");
        std::fs::write(&victim, "precious").unwrap();
        let location = Location::own_at(scratch.0.join("registry"));
        let dir = RegistryDir::create(&location).unwrap();
        let name = format!("{}.json", std::process::id());
        std::os::unix::fs::symlink(&victim, location.path.join(&name)).unwrap();
        std::os::unix::fs::symlink(&victim, location.path.join(format!(".{name}.new"))).unwrap();

        let published = dir.publish(&me()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let entry = std::fs::symlink_metadata(published.path()).unwrap();
        assert!(entry.is_file(), "the link itself was replaced by a file");
    }

    #[test]
    fn a_registry_path_that_others_could_control_is_refused_with_the_fix() {
        let scratch = Scratch::new("refuse");
        let elsewhere = scratch.0.join("elsewhere");
        std::fs::create_dir(&elsewhere).unwrap();

        let link = Location::own_at(scratch.0.join("link"));
        std::os::unix::fs::symlink(&elsewhere, &link.path).unwrap();
        let error = format!("{:#}", RegistryDir::create(&link).unwrap_err());
        assert!(error.contains(&link.path.display().to_string()), "{error}");
        assert!(
            error.contains("symbolic link") && error.contains("rm "),
            "{error}"
        );

        let open = Location::own_at(scratch.0.join("open"));
        std::fs::DirBuilder::new()
            .mode(0o777)
            .create(&open.path)
            .unwrap();
        std::fs::set_permissions(&open.path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = format!("{:#}", RegistryDir::create(&open).unwrap_err());
        assert!(error.contains("chmod 700"), "{error}");

        let file = Location::own_at(scratch.0.join("file"));
        std::fs::write(&file.path, "").unwrap();
        let error = format!("{:#}", RegistryDir::create(&file).unwrap_err());
        assert!(error.contains("not a directory"), "{error}");

        let theirs = Location {
            owner: machine_euid() + 1,
            ..Location::own_at(scratch.0.join("theirs"))
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&theirs.path)
            .unwrap();
        let error = format!("{:#}", RegistryDir::open(&theirs).unwrap_err());
        assert!(
            error.contains("belongs to uid") && error.contains("rm -r"),
            "{error}"
        );
    }

    #[test]
    fn scan_keeps_live_labs_prunes_stale_ones_and_ignores_untrusted_files() {
        let scratch = Scratch::new("scan");
        let location = Location::own_at(scratch.0.join("registry"));
        let _live = RegistryDir::create(&location)
            .unwrap()
            .publish(&me())
            .unwrap();
        let dir = &location.path;

        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let gone = Registration { pid: dead, ..me() };
        std::fs::write(dir.join(format!("{dead}.json")), gone.to_json()).unwrap();

        // A file other users may write: not trusted, even if its process is alive.
        let writable = dir.join("1.json");
        let init = Registration {
            pid: 1,
            start_time: start_time(1),
            ..me()
        };
        std::fs::write(&writable, init.to_json()).unwrap();
        std::fs::set_permissions(&writable, std::fs::Permissions::from_mode(0o666)).unwrap();
        // A symbolic link, and a file whose name and pid disagree.
        let outside = scratch.0.join("outside.json");
        std::fs::write(&outside, me().to_json()).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("2.json")).unwrap();
        std::fs::write(dir.join("3.json"), me().to_json()).unwrap();
        std::fs::write(dir.join("4.json"), "not json").unwrap();

        let found = scan(std::slice::from_ref(&location));
        let notes = found.notes.join("\n");
        assert_eq!(found.labs.len(), 1, "{notes}");
        assert_eq!(found.labs[0].registration.pid, std::process::id());
        assert!(
            !dir.join(format!("{dead}.json")).exists(),
            "pruned: {notes}"
        );
        assert!(
            notes.contains(&format!("{dead}.json: process {dead} is gone")),
            "{notes}"
        );
        assert!(notes.contains("1.json: other users can write"), "{notes}");
        assert!(notes.contains("2.json: it is a symbolic link"), "{notes}");
        assert!(notes.contains("3.json: it names pid"), "{notes}");
        assert!(notes.contains("4.json: expected"), "{notes}");
        assert!(
            writable.exists() && outside.exists(),
            "untrusted files are left alone"
        );
    }

    fn start_time(pid: u32) -> Option<u64> {
        crate::start_time_of(pid).ok()
    }
}
