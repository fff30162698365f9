//! # The story, assembled
//!
//! The world of exercise 2, Docker's NAT and proxy of exercise 3, the echo server and
//! client of exercise 1 — put together the way the article's author had them. Built
//! from the reference solutions, with the part a check is about left open: a check for
//! exercise 3 hands in *your* NAT rules and *your* proxy; `cargo xtask repro` hands in
//! the reference ones.
//!
//! | node   | address                          | runs                             |
//! |--------|----------------------------------|----------------------------------|
//! | host   | 192.168.0.239, br-dind 172.18.0.1 | the userland proxy on 0.0.0.0:4000 |
//! | dind1  | 172.18.0.2, docker0 172.17.0.1   | NAT: 4000 → server               |
//! | dind2  | 172.18.0.3, docker0 172.17.0.1   | NAT: masquerade only             |
//! | server | 172.17.0.2 (in dind1)            | the UDP echo server on 4000      |
//! | client | 172.17.0.2 (in dind2)            | the client, from port 34320      |
//! | peer   | 192.168.0.10 (host's LAN)        | —                                |

pub mod timestamps;

use std::future::Future;
use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use netlab::World;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::unistd::{dup2_raw, pipe2};

mod homework;
pub mod proc_net;
pub use homework::Accepted;

pub use solution_udp_echo::Outcome;
pub use solution_world::story_world;

/// The host's LAN address: what the client sends to.
pub const HOST_LAN: &str = "192.168.0.239";
/// The docker network's bridge on the host, and its address.
pub const HOST_BRIDGE: &str = "br-dind";
pub const HOST_BRIDGE_ADDRESS: &str = "172.18.0.1";
pub const DIND1: &str = "172.18.0.2";
pub const DIND2: &str = "172.18.0.3";
/// The published port, on every level.
pub const PORT: u16 = 4000;
/// The client's fixed source port.
pub const CLIENT_PORT: u16 = 34_320;

/// The `iptables-restore` rulesets of the three docker hosts of the story.
#[derive(Debug, Clone)]
pub struct NatRules {
    pub host: String,
    pub dind1: String,
    pub dind2: String,
}

impl NatRules {
    /// The three rulesets, each made by `rules(network)` for one of [`docker_networks`].
    pub fn from_fn(rules: impl Fn(&DockerNetwork) -> String) -> NatRules {
        let [host, dind1, dind2] = docker_networks().map(|network| rules(&network));
        NatRules { host, dind1, dind2 }
    }
}

/// Docker's rules as the course's answer to exercise 3 writes them, for the three
/// docker networks of the story.
pub fn reference_nat_rules() -> NatRules {
    use solution_udp_proxy::{docker_nat_rules, Publish};
    NatRules::from_fn(|network| {
        let published: Vec<Publish> = network
            .published
            .iter()
            .map(|&(protocol, host_port, container)| Publish {
                protocol,
                host_port,
                container,
            })
            .collect();
        docker_nat_rules(network.bridge, network.subnet, &published)
    })
}

/// What a docker network publishes, in plain values (each exercise has its own types).
pub struct DockerNetwork {
    pub bridge: &'static str,
    pub subnet: &'static str,
    /// `(protocol, host port, container address)`
    pub published: Vec<(&'static str, u16, SocketAddrV4)>,
}

/// The three docker networks of the story: the host's (publishing dind1's port 4000),
/// dind1's (publishing the server's port 4000), dind2's (publishing nothing).
pub fn docker_networks() -> [DockerNetwork; 3] {
    let publish = |to: &str| {
        let to = SocketAddrV4::new(to.parse().expect("an IPv4 address"), PORT);
        vec![("udp", PORT, to), ("tcp", PORT, to)]
    };
    [
        DockerNetwork {
            bridge: HOST_BRIDGE,
            subnet: "172.18.0.0/16",
            published: publish(DIND1),
        },
        DockerNetwork {
            bridge: "docker0",
            subnet: "172.17.0.0/16",
            published: publish("172.17.0.2"),
        },
        DockerNetwork {
            bridge: "docker0",
            subnet: "172.17.0.0/16",
            published: vec![],
        },
    ]
}

/// The story's world, running: NAT loaded, the echo server listening in `server`.
pub struct Story {
    pub world: World,
    server_log: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

impl Story {
    /// Build the world, load `nat`, start the echo server. With `print_log`, the server
    /// also prints each datagram it receives, like the article's server did.
    pub fn up(nat: &NatRules, print_log: bool) -> Result<Story> {
        let mut world = World::up(&story_world())?;
        world
            .iptables_restore_all(&[
                ("host", &nat.host),
                ("dind1", &nat.dind1),
                ("dind2", &nat.dind2),
            ])
            .context("loading the NAT rules")?;
        let (log_tx, server_log) = mpsc::channel();
        world.spawn_service("server", "echo-server", move || {
            let socket = solution_udp_echo::bind(SocketAddr::from(([0, 0, 0, 0], PORT)));
            async move {
                solution_udp_echo::run_echo_server(socket?, move |source, payload| {
                    if print_log {
                        println!(
                            "  [server] {} bytes from {source}: {:?} — echoing",
                            payload.len(),
                            String::from_utf8_lossy(payload)
                        );
                    }
                    let _ = log_tx.send((source, payload.to_vec()));
                })
                .await
            }
        })?;
        Ok(Story { world, server_log })
    }

    /// The story exactly as the article's author had it, built from the course's
    /// reference answers: NAT rules and the buggy userland proxy included.
    pub fn reference(print_log: bool) -> Result<Story> {
        let mut story = Story::up(&reference_nat_rules(), print_log)?;
        story.start_proxy(solution_udp_proxy::run_udp_proxy)?;
        Ok(story)
    }

    /// Start a userland proxy in `host`: `proxy(listener, backend)` gets a socket bound
    /// to 0.0.0.0:4000 in `host`, and dind1's address as backend.
    pub fn start_proxy<F, Fut>(&mut self, proxy: F) -> Result<()>
    where
        F: FnOnce(tokio::net::UdpSocket, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        let backend = SocketAddr::new(DIND1.parse()?, PORT);
        self.world.spawn_service("host", "udp-proxy", move || {
            let listener = std::net::UdpSocket::bind(("0.0.0.0", PORT))
                .and_then(|s| s.set_nonblocking(true).map(|()| s))
                .and_then(tokio::net::UdpSocket::from_std);
            async move { proxy(listener?, backend).await }
        })
    }

    /// Start Docker 20.10's own `docker-proxy` in `host`, as dockerd would, and wait
    /// until it says it is ready (it writes `0` to its descriptor 3).
    pub fn start_docker_proxy(&mut self, program: &std::path::Path) -> Result<u32> {
        let (ready_read, ready_write) = pipe2(OFlag::O_CLOEXEC)?;
        let mut command = self.world.node("host")?.command(&program.to_string_lossy());
        command.args([
            "-proto",
            "udp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "4000",
            "-container-ip",
            DIND1,
            "-container-port",
            "4000",
        ]);
        // docker-proxy reports on descriptor 3: put the pipe's write end there in the child.
        // (std's `Command` can redirect stdin/stdout/stderr only, hence `pre_exec`.)
        const READY_FD: i32 = 3;
        // SAFETY: `pre_exec` runs the closure in the child between fork and exec, where only
        // async-signal-safe calls are sound (no allocation, no lock): dup2 and fcntl are single
        // system calls. `dup2_raw` is unsafe because it closes whatever descriptor 3 was; in
        // the child nothing else will use it before exec replaces the program.
        unsafe {
            command.pre_exec(move || {
                if ready_write.as_raw_fd() == READY_FD {
                    // Already descriptor 3: only let it survive exec.
                    fcntl(&ready_write, FcntlArg::F_SETFD(FdFlag::empty()))?;
                } else {
                    // The copy must stay open through exec: never close it here.
                    std::mem::forget(dup2_raw(&ready_write, READY_FD)?);
                }
                Ok(())
            });
        }
        // `start` drops the command once the child runs, and with it our copy of the write
        // end: the reader below then sees end-of-file as soon as docker-proxy closes its own.
        let pid = self.world.start("host", command)?;
        let mut status = String::new();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            let mut text = String::new();
            let _ = std::fs::File::from(ready_read).read_to_string(&mut text);
            text
        });
        for _ in 0..100 {
            if reader.is_finished() {
                status = reader.join().unwrap_or_default();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !status.starts_with('0') {
            bail!("docker-proxy did not report ready (it said {status:?})");
        }
        Ok(pid)
    }

    /// The story's client: send `payload` from 0.0.0.0:34320 in `client` to `to`.
    pub fn client_ask(&self, to: SocketAddr, payload: &[u8], timeout: Duration) -> Result<Outcome> {
        let local = SocketAddr::from(([0, 0, 0, 0], CLIENT_PORT));
        Ok(self
            .world
            .node("client")?
            .block_on(|| solution_udp_echo::ask(local, to, payload, timeout))?)
    }

    /// The next datagram the server logged, if one comes within `timeout`.
    pub fn server_log(&self, timeout: Duration) -> Option<(SocketAddr, Vec<u8>)> {
        self.server_log.recv_timeout(timeout).ok()
    }
}

/// Where the course keeps Docker 20.10's `docker-proxy` (`cargo xtask setup` puts it
/// there): `$DOCKER_PROXY`, or `.course/tools/docker-proxy` in the workspace.
pub fn docker_proxy_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DOCKER_PROXY") {
        return Some(PathBuf::from(path));
    }
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.course/tools/docker-proxy");
    path.is_file().then_some(path)
}

/// Where the course keeps Docker 28's `docker-proxy` — the fixed one (moby/moby#48571),
/// from Debian sid's `docker.io` (`cargo xtask setup` puts it there):
/// `$DOCKER_PROXY_28`, or `.course/tools/docker-proxy-28` in the workspace. It takes
/// the same flags as 20.10's, so [`Story::start_docker_proxy`] starts either.
pub fn docker_proxy_28_path() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("DOCKER_PROXY_28") {
        return Some(PathBuf::from(path));
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.course/tools/docker-proxy-28");
    path.is_file().then_some(path)
}
