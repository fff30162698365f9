//! A network described as data: nodes, bridges, veth cables, addresses, routes.
//!
//! A [`Topology`] is only a plan. [`crate::World::up`] turns it into real namespaces and
//! interfaces; [`Topology::to_shell`] prints the same plan as the `ip` commands you would
//! type to build it by hand; [`Topology::picture`] draws it.
//!
//! ```
//! use netlab::Topology;
//! let mut t = Topology::new();
//! t.node("a").address("eth0", "10.0.0.1/24");
//! t.node("b").address("eth0", "10.0.0.2/24");
//! t.veth(("a", "eth0"), ("b", "eth0"));
//! assert!(t.to_shell().contains("ip -n a addr add 10.0.0.1/24 dev eth0"));
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use anyhow::{bail, Context, Result};

/// An IPv4 address with its prefix length, like `172.18.0.1/16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub address: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    /// Does `addr` belong to this address's subnet?
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        };
        u32::from(self.address) & mask == u32::from(addr) & mask
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(text: &str) -> Result<Cidr> {
        let (address, prefix) = text
            .split_once('/')
            .with_context(|| format!("`{text}` is not an address/prefix like 172.18.0.1/16"))?;
        let address = address
            .parse()
            .with_context(|| format!("`{address}` is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).with_context(|| {
                format!("`/{prefix}` is not a prefix length (0 to 32) in `{text}`")
            })?;
        Ok(Cidr { address, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A route: traffic for `destination` (`None` = default) goes to the gateway `via`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Option<String>,
    pub via: String,
}

/// One machine of the world: a network namespace with its interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSpec {
    pub name: String,
    /// Bridges created in this node (a bridge is a virtual switch).
    pub bridges: Vec<String>,
    /// `(port, bridge)`: interfaces plugged into a bridge of this node.
    pub bridge_ports: Vec<(String, String)>,
    /// `(interface, address)`.
    pub addresses: Vec<(String, String)>,
    pub routes: Vec<Route>,
    /// Does this node route packets between its interfaces (`net.ipv4.ip_forward=1`)?
    pub forwarding: bool,
}

impl NodeSpec {
    /// Create a bridge (a virtual switch) named `name` in this node.
    pub fn bridge(&mut self, name: &str) -> &mut Self {
        self.bridges.push(name.to_string());
        self
    }

    /// Plug interface `port` of this node into its bridge `bridge`.
    pub fn bridge_port(&mut self, port: &str, bridge: &str) -> &mut Self {
        self.bridge_ports
            .push((port.to_string(), bridge.to_string()));
        self
    }

    /// Give `interface` the address `cidr` (e.g. `"172.18.0.2/16"`).
    pub fn address(&mut self, interface: &str, cidr: &str) -> &mut Self {
        self.addresses
            .push((interface.to_string(), cidr.to_string()));
        self
    }

    /// Send everything without a more specific route to the gateway `via`.
    pub fn default_route(&mut self, via: &str) -> &mut Self {
        self.routes.push(Route {
            destination: None,
            via: via.to_string(),
        });
        self
    }

    /// Send traffic for `destination` (`"10.1.0.0/16"`) to the gateway `via`.
    pub fn route(&mut self, destination: &str, via: &str) -> &mut Self {
        self.routes.push(Route {
            destination: Some(destination.to_string()),
            via: via.to_string(),
        });
        self
    }

    /// Let this node route packets from one interface to another, as routers and
    /// Docker hosts do.
    pub fn forwarding(&mut self) -> &mut Self {
        self.forwarding = true;
        self
    }
}

/// One end of a veth cable: `(node, interface name)`.
pub type End = (String, String);

/// A veth pair: a virtual cable whose two ends live in (usually) two nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Veth {
    pub a: End,
    pub b: End,
}

/// The whole plan. Build it with [`Topology::node`] and [`Topology::veth`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Topology {
    pub nodes: Vec<NodeSpec>,
    pub veths: Vec<Veth>,
}

/// One step of building a topology, as an `ip` (or `sysctl`) command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// `ip link add …` for a veth pair, run from outside both nodes.
    Cable { veth: Veth },
    /// An `ip` command run inside `node` (without the leading `ip`).
    Ip { node: String, args: String },
    /// A sysctl of `node`.
    Sysctl {
        node: String,
        key: String,
        value: String,
    },
}

impl Topology {
    pub fn new() -> Topology {
        Topology::default()
    }

    /// The node called `name`, created on first use. Nodes keep the order of creation.
    pub fn node(&mut self, name: &str) -> &mut NodeSpec {
        if let Some(index) = self.nodes.iter().position(|n| n.name == name) {
            return &mut self.nodes[index];
        }
        self.nodes.push(NodeSpec {
            name: name.to_string(),
            ..NodeSpec::default()
        });
        self.nodes.last_mut().expect("just pushed")
    }

    /// Lay a veth cable between interface `a.1` of node `a.0` and interface `b.1` of
    /// node `b.0`. Nodes are created if needed.
    pub fn veth(&mut self, a: (&str, &str), b: (&str, &str)) -> &mut Self {
        self.node(a.0);
        self.node(b.0);
        self.veths.push(Veth {
            a: (a.0.to_string(), a.1.to_string()),
            b: (b.0.to_string(), b.1.to_string()),
        });
        self
    }

    /// Look a node up by name.
    pub fn find(&self, name: &str) -> Option<&NodeSpec> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The interfaces a node will have: `lo`, its bridges and its veth ends.
    pub fn interfaces(&self, node: &str) -> Vec<String> {
        let mut names = vec!["lo".to_string()];
        if let Some(spec) = self.find(node) {
            names.extend(spec.bridges.iter().cloned());
        }
        for veth in &self.veths {
            for (n, ifname) in [&veth.a, &veth.b] {
                if n == node {
                    names.push(ifname.clone());
                }
            }
        }
        names
    }

    /// Check the plan before building anything, with messages that say what to fix.
    pub fn validate(&self) -> Result<()> {
        if self.nodes.is_empty() {
            bail!("the topology has no nodes: add some with `topology.node(\"name\")`");
        }
        let mut seen = BTreeSet::new();
        for veth in &self.veths {
            for (node, ifname) in [&veth.a, &veth.b] {
                check_ifname(node, ifname)?;
                if !seen.insert((node.clone(), ifname.clone())) {
                    bail!("{node} has two interfaces called {ifname}: interface names must be unique within a node");
                }
            }
        }
        for node in &self.nodes {
            let interfaces = self.interfaces(&node.name);
            for bridge in &node.bridges {
                check_ifname(&node.name, bridge)?;
                if !seen.insert((node.name.clone(), bridge.clone())) {
                    bail!(
                        "{}: the bridge {bridge} has the name of another interface of that node",
                        node.name
                    );
                }
            }
            let has = |ifname: &str| interfaces.iter().any(|i| i == ifname);
            for (port, bridge) in &node.bridge_ports {
                if !node.bridges.contains(bridge) {
                    bail!("{}: cannot plug {port} into {bridge}: {} has no bridge called {bridge} (add it with .bridge(\"{bridge}\"))", node.name, node.name);
                }
                if !has(port) {
                    bail!("{}: cannot plug {port} into {bridge}: {} has no interface called {port} (lay a veth cable to it first)", node.name, node.name);
                }
            }
            let mut subnets = Vec::new();
            for (ifname, cidr) in &node.addresses {
                let parsed: Cidr = cidr
                    .parse()
                    .with_context(|| format!("{}: address of {ifname}", node.name))?;
                if !has(ifname) {
                    bail!("{}: address {cidr} is for interface {ifname}, but {} has no interface called {ifname} (it has: {})", node.name, node.name, interfaces.join(", "));
                }
                subnets.push(parsed);
            }
            for route in &node.routes {
                let via: Ipv4Addr = route.via.parse().with_context(|| {
                    format!(
                        "{}: gateway `{}` is not an IPv4 address",
                        node.name, route.via
                    )
                })?;
                if let Some(destination) = &route.destination {
                    destination
                        .parse::<Cidr>()
                        .with_context(|| format!("{}: route destination", node.name))?;
                }
                if !subnets.iter().any(|s| s.contains(via)) {
                    bail!("{}: the gateway {via} is not on any subnet of {} (its addresses: {}); a gateway must be a direct neighbour", node.name, node.name,
                        node.addresses.iter().map(|(i, c)| format!("{c} on {i}")).collect::<Vec<_>>().join(", "));
                }
            }
        }
        Ok(())
    }

    /// Every step that builds this topology, in order: cables first, then each node's
    /// bridges, ports, links up, addresses, routes, and sysctls.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps: Vec<Step> = self
            .veths
            .iter()
            .map(|veth| Step::Cable { veth: veth.clone() })
            .collect();
        for node in &self.nodes {
            let ip = |args: String| Step::Ip {
                node: node.name.clone(),
                args,
            };
            for bridge in &node.bridges {
                steps.push(ip(format!("link add name {bridge} type bridge")));
            }
            for (port, bridge) in &node.bridge_ports {
                steps.push(ip(format!("link set dev {port} master {bridge}")));
            }
            for ifname in self.interfaces(&node.name) {
                steps.push(ip(format!("link set dev {ifname} up")));
            }
            for (ifname, cidr) in &node.addresses {
                steps.push(ip(format!("addr add {cidr} dev {ifname}")));
            }
            for route in &node.routes {
                let destination = route.destination.as_deref().unwrap_or("default");
                steps.push(ip(format!("route add {destination} via {}", route.via)));
            }
            if node.forwarding {
                steps.push(Step::Sysctl {
                    node: node.name.clone(),
                    key: "net.ipv4.ip_forward".into(),
                    value: "1".into(),
                });
            }
        }
        steps
    }

    /// The plan as a shell script of `ip` commands with named namespaces — what a
    /// learner would type to build the same world by hand (as root, in a VM).
    pub fn to_shell(&self) -> String {
        let mut script = String::from(
            "# Build this world by hand, as root, in a throwaway VM: unlike the course, named\n\
             # namespaces stay until removed (`ip netns del NAME`, one per node).\n",
        );
        for node in &self.nodes {
            script.push_str(&format!("ip netns add {}\n", node.name));
        }
        for step in self.steps() {
            script.push_str(&match step {
                Step::Cable { veth } => format!(
                    "ip link add name {} netns {} type veth peer name {} netns {}\n",
                    veth.a.1, veth.a.0, veth.b.1, veth.b.0
                ),
                Step::Ip { node, args } => format!("ip -n {node} {args}\n"),
                Step::Sysctl { node, key, value } => {
                    format!("ip netns exec {node} sysctl -qw {key}={value}\n")
                }
            });
        }
        script
    }

    /// A picture of the world: each node with its interfaces and addresses, drawn as
    /// a tree from the first node, with the cables between them.
    pub fn picture(&self) -> String {
        let mut out = String::new();
        let Some(root) = self.nodes.first() else {
            return out;
        };
        let mut drawn = BTreeSet::new();
        drawn.insert(root.name.clone());
        out.push_str(&format!("{}{}\n", root.name, self.node_summary(&root.name)));
        self.draw_children(&root.name, "", &mut drawn, &mut out);
        for node in &self.nodes {
            if !drawn.contains(&node.name) {
                out.push_str(&format!(
                    "{}{}  (not connected)\n",
                    node.name,
                    self.node_summary(&node.name)
                ));
            }
        }
        out
    }

    fn draw_children(
        &self,
        node: &str,
        indent: &str,
        drawn: &mut BTreeSet<String>,
        out: &mut String,
    ) {
        let children: Vec<(&End, &End)> = self
            .veths
            .iter()
            .filter_map(|v| {
                if v.a.0 == node {
                    Some((&v.a, &v.b))
                } else if v.b.0 == node {
                    Some((&v.b, &v.a))
                } else {
                    None
                }
            })
            .filter(|(_, far)| !drawn.contains(&far.0))
            .collect();
        for (_, far) in &children {
            drawn.insert(far.0.clone());
        }
        for (index, (near, far)) in children.iter().enumerate() {
            let last = index + 1 == children.len();
            let (branch, next) = if last {
                ("└─", "   ")
            } else {
                ("├─", "│  ")
            };
            let port = self.describe_port(&near.0, &near.1);
            out.push_str(&format!(
                "{indent}{branch}{} ── {}:{}  {}{}\n",
                port,
                far.0,
                far.1,
                far.0,
                self.node_summary(&far.0)
            ));
            self.draw_children(&far.0, &format!("{indent}{next}"), drawn, out);
        }
    }

    /// `veth-dind1 [br-lab]` — an interface and the bridge it is plugged into.
    fn describe_port(&self, node: &str, ifname: &str) -> String {
        let bridge = self
            .find(node)
            .and_then(|n| n.bridge_ports.iter().find(|(p, _)| p == ifname))
            .map(|(_, b)| b.clone());
        match bridge {
            Some(bridge) => format!("{ifname} (port of {bridge})"),
            None => ifname.to_string(),
        }
    }

    /// `  [br-lab 172.18.0.1/16, lan0 192.168.0.239/24] forwarding`
    fn node_summary(&self, node: &str) -> String {
        let Some(spec) = self.find(node) else {
            return String::new();
        };
        let addresses: Vec<String> = spec
            .addresses
            .iter()
            .map(|(i, c)| format!("{i} {c}"))
            .collect();
        let mut summary = format!("  [{}]", addresses.join(", "));
        if let Some(route) = spec.routes.iter().find(|r| r.destination.is_none()) {
            summary.push_str(&format!(" default via {}", route.via));
        }
        if spec.forwarding {
            summary.push_str(" forwarding");
        }
        summary
    }
}

fn check_ifname(node: &str, ifname: &str) -> Result<()> {
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ', ':']) {
        bail!("{node}: `{ifname}` is not a valid interface name (1 to 15 characters, no '/', ' ' or ':')");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> Topology {
        let mut t = Topology::new();
        t.node("a").address("eth0", "10.0.0.1/24").forwarding();
        t.node("b")
            .address("eth0", "10.0.0.2/24")
            .default_route("10.0.0.1");
        t.veth(("a", "eth0"), ("b", "eth0"));
        t
    }

    #[test]
    fn a_valid_pair_renders_as_ip_commands() {
        let t = pair();
        t.validate().unwrap();
        let shell = t.to_shell();
        assert!(
            shell.contains("ip link add name eth0 netns a type veth peer name eth0 netns b"),
            "{shell}"
        );
        assert!(
            shell.contains("ip -n b route add default via 10.0.0.1"),
            "{shell}"
        );
        assert!(
            shell.contains("ip netns exec a sysctl -qw net.ipv4.ip_forward=1"),
            "{shell}"
        );
    }

    #[test]
    fn the_picture_shows_both_nodes_and_the_cable() {
        let picture = pair().picture();
        assert!(
            picture.starts_with("a  [eth0 10.0.0.1/24] forwarding\n"),
            "{picture}"
        );
        assert!(
            picture.contains("└─eth0 ── b:eth0  b  [eth0 10.0.0.2/24] default via 10.0.0.1"),
            "{picture}"
        );
    }

    #[test]
    fn an_address_on_a_missing_interface_is_explained() {
        let mut t = pair();
        t.node("a").address("eth9", "10.9.0.1/24");
        let error = t.validate().unwrap_err().to_string();
        assert!(error.contains("a has no interface called eth9"), "{error}");
    }

    #[test]
    fn a_gateway_off_the_subnet_is_explained() {
        let mut t = pair();
        t.node("b").route("10.5.0.0/16", "10.9.9.9");
        let error = t.validate().unwrap_err().to_string();
        assert!(error.contains("must be a direct neighbour"), "{error}");
    }

    #[test]
    fn cidr_parsing_and_membership() {
        let cidr: Cidr = "172.18.0.1/16".parse().unwrap();
        assert!(cidr.contains("172.18.200.3".parse().unwrap()));
        assert!(!cidr.contains("172.17.0.2".parse().unwrap()));
        assert!("172.18.0.1".parse::<Cidr>().is_err());
        assert!("172.18.0.1/33".parse::<Cidr>().is_err());
    }
}
