//! A [`Topology`] brought to life: one network namespace per node, cables, addresses,
//! routes — and the programs that run inside.
//!
//! Building takes a handful of commands, not hundreds: all cables are laid with one
//! `ip -batch` run from the sandbox, then each node configures itself with one
//! `ip -batch` run inside it. Dropping the [`World`] stops its services and programs and
//! releases its namespaces; the kernel removes every interface with them.

use std::future::Future;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::netns::Netns;
use crate::programs;
use crate::topology::{Step, Topology};

/// One node of a running world.
#[derive(Debug)]
pub struct Node {
    pub name: String,
    pub netns: Netns,
}

impl std::ops::Deref for Node {
    type Target = Netns;
    fn deref(&self) -> &Netns {
        &self.netns
    }
}

/// A running world. Everything in it disappears when it is dropped.
#[derive(Debug)]
pub struct World {
    pub topology: Topology,
    nodes: Vec<Node>,
    services: Vec<Service>,
    programs: Vec<Program>,
}

impl World {
    /// Build `topology` for real. Fails with a message saying what to fix if the plan is
    /// wrong, a tool is missing, or namespaces cannot be created here.
    pub fn up(topology: &Topology) -> Result<World> {
        crate::sandbox::current().map_err(anyhow::Error::msg)?;
        topology.validate()?;
        let mut nodes = Vec::new();
        for spec in &topology.nodes {
            nodes.push(Node {
                name: spec.name.clone(),
                netns: Netns::new()?,
            });
        }
        let world = World {
            topology: topology.clone(),
            nodes,
            services: Vec::new(),
            programs: Vec::new(),
        };
        world.build()?;
        Ok(world)
    }

    fn build(&self) -> Result<()> {
        let steps = self.topology.steps();
        // 1. All cables at once, from the sandbox: each end is created directly in its node.
        let cables: Vec<String> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Cable { veth } => Some(format!(
                    "link add name {} netns {} type veth peer name {} netns {}",
                    veth.a.1,
                    self.node(&veth.a.0).ok()?.path(),
                    veth.b.1,
                    self.node(&veth.b.0).ok()?.path()
                )),
                _ => None,
            })
            .collect();
        if !cables.is_empty() {
            run_ip_batch(Command::new(programs::find("ip")), "the sandbox", &cables)?;
        }
        // 2. Each node configures itself with one batch run inside it — all nodes at
        //    once, as separate processes — then its sysctls.
        let mut batches = Vec::new();
        for node in &self.nodes {
            let commands: Vec<String> = steps
                .iter()
                .filter_map(|step| match step {
                    Step::Ip { node: n, args } if *n == node.name => Some(args.clone()),
                    _ => None,
                })
                .collect();
            let mut command = node.command("ip");
            command.args(["-batch", "-"]);
            let context = format!(
                "building {} failed; its commands were:\n  ip {}",
                node.name,
                commands.join("\n  ip ")
            );
            batches.push((Pending::start(&mut command, &commands.join("\n"))?, context));
        }
        for (pending, context) in batches {
            pending.finish().context(context)?;
        }
        for step in &steps {
            if let Step::Sysctl { node, key, value } = step {
                self.node(node)?.sysctl(key, value)?;
            }
        }
        Ok(())
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&Node> {
        self.nodes.iter().find(|n| n.name == name).with_context(|| {
            let names: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
            format!(
                "this world has no node called `{name}` (its nodes: {})",
                names.join(", ")
            )
        })
    }

    /// The node whose network namespace has this inode — what `ls -l /proc/PID/ns/net`
    /// shows, and what eBPF programs see as `net->ns.inum`.
    pub fn node_by_inode(&self, inode: u64) -> Option<&Node> {
        self.nodes.iter().find(|n| n.inode() == inode)
    }

    /// All nodes, in the topology's order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Load an `iptables-restore` ruleset into a node (its tables are replaced).
    pub fn iptables_restore(&self, node: &str, rules: &str) -> Result<()> {
        self.iptables_restore_all(&[(node, rules)])
    }

    /// Load rulesets into several nodes at once: `(node, rules)` pairs.
    pub fn iptables_restore_all(&self, rulesets: &[(&str, &str)]) -> Result<()> {
        let mut pending = Vec::new();
        for (node, rules) in rulesets {
            let mut command = self.node(node)?.command("iptables-restore");
            pending.push((Pending::start(&mut command, rules)?, node, rules));
        }
        for (pending, node, rules) in pending {
            pending.finish().with_context(|| {
                format!("iptables-restore failed in {node}; the rules were:\n{rules}")
            })?;
        }
        Ok(())
    }

    /// The node's conntrack table, one entry per line, in the format of
    /// `/proc/net/nf_conntrack` — read from that file, or, on kernels built without it,
    /// with `conntrack -L -o extended` (see [`crate::conntrack`]).
    pub fn conntrack(&self, node: &str) -> Result<String> {
        let node = self.node(node)?;
        crate::conntrack::read_any(node)
            .map(|(table, _source)| table)
            .with_context(|| format!("reading the conntrack table of {}", node.name))
    }

    /// Run an async service inside `node` until the world is dropped (or the service
    /// returns). `make` is called inside the node, so its sockets belong there.
    pub fn spawn_service<F, Fut>(&mut self, node: &str, name: &str, make: F) -> Result<()>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        let service = Service::spawn(self.node(node)?, name, make)?;
        self.services.push(service);
        Ok(())
    }

    /// Start a program built with `world.node(name)?.command(program)` (so it runs
    /// inside that node) and keep it until the world is dropped, when it is killed.
    pub fn start(&mut self, node: &str, mut command: Command) -> Result<u32> {
        let program = command.get_program().to_string_lossy().into_owned();
        let child = command.spawn().with_context(|| {
            let name = program.rsplit('/').next().unwrap_or(&program).to_string();
            format!(
                "cannot start `{name}` in {node} (is it installed? package: {})",
                programs::package_of(&name)
            )
        })?;
        let pid = child.id();
        self.programs.push(Program {
            node: node.to_string(),
            child,
        });
        Ok(pid)
    }

    /// Stop every service and report the first one that failed or panicked (a stub's
    /// `todo!()`, for instance). Dropping the world stops them too, silently.
    pub fn stop_services(&mut self) -> Result<()> {
        let mut first_error = None;
        for service in self.services.drain(..) {
            if let Err(error) = service.stop() {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for service in self.services.drain(..) {
            let _ = service.stop();
        }
        for mut program in self.programs.drain(..) {
            let _ = program.child.kill();
            let _ = program.child.wait();
        }
        // The namespaces go when `nodes` is dropped, right after this.
    }
}

#[derive(Debug)]
struct Program {
    #[allow(dead_code)] // kept for debugging output
    node: String,
    child: Child,
}

/// An async task running on its own thread inside a node, until stopped.
#[derive(Debug)]
pub struct Service {
    name: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<std::io::Result<()>>>,
}

impl Service {
    /// Start a service on a new thread inside `netns`, on a current-thread Tokio runtime.
    ///
    /// `make()` is called inside the namespace, within the runtime, *before* this
    /// returns: bind sockets there (not in the future it returns), and the service is
    /// ready to receive as soon as `spawn` returns. A panic in `make` (a `todo!()`, say)
    /// is reported here as an error.
    pub fn spawn<F, Fut>(netns: &Netns, name: &str, make: F) -> Result<Service>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = std::io::Result<()>> + 'static,
    {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<()>>();
        let netns = Netns::open(&netns.path())?;
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let started = netns.enter_current_thread().and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                });
                drop(netns);
                let runtime = match started {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = ready_tx
                            .send(Err(std::io::Error::new(error.kind(), error.to_string())));
                        return Err(error);
                    }
                };
                let future = {
                    let _inside = runtime.enter();
                    make()
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(async move {
                    tokio::select! {
                        result = future => result,
                        _ = stop_rx => Ok(()),
                    }
                })
            })?;
        let mut service = Service {
            name: name.to_string(),
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(service),
            Ok(Err(error)) => bail!("service {name} could not enter its namespace: {error}"),
            // The thread ended without saying it was ready: `make` panicked.
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                service.stop.take();
                match service.thread.take().expect("just spawned").join() {
                    Err(panic) => bail!(
                        "service {name} panicked while starting: {}",
                        panic_message(&panic)
                    ),
                    Ok(result) => bail!("service {name} ended while starting: {result:?}"),
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                bail!("service {name} did not start within 10 s")
            }
        }
    }

    /// Has the service ended on its own (returned an error, or panicked)?
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop the service; report its error or panic if it had one.
    pub fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let thread = self.thread.take().expect("stopped twice");
        match thread.join() {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(error).with_context(|| format!("service {} failed", self.name)),
            Err(panic) => bail!("service {} panicked: {}", self.name, panic_message(&panic)),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The text of a panic payload (`panic!("…")` and `todo!()` carry strings).
pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        text.to_string()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_string()
    }
}

/// Run `ip -batch -` with `commands` on stdin.
fn run_ip_batch(mut command: Command, place: &str, commands: &[String]) -> Result<()> {
    command.args(["-batch", "-"]);
    Pending::start(&mut command, &commands.join("\n"))?
        .finish()
        .with_context(|| {
            format!(
                "building {place} failed; its commands were:\n  ip {}",
                commands.join("\n  ip ")
            )
        })
}

/// A program started with its input written, whose result is collected later — so that
/// several can run at once.
struct Pending {
    program: String,
    child: Child,
}

impl Pending {
    fn start(command: &mut Command, input: &str) -> Result<Pending> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| {
                let name = program.rsplit('/').next().unwrap_or(&program).to_string();
                format!(
                    "cannot run `{name}`: install the `{}` package (see `cargo xtask doctor`)",
                    programs::package_of(&name)
                )
            })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(input.as_bytes())?;
        Ok(Pending { program, child })
    }

    fn finish(self) -> Result<()> {
        let output = self.child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "`{}` failed ({}): {}",
                self.program,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }
}
