//! The world as an SVG picture: the book's figure of the topology, drawn from the same
//! [`Topology`] the checks build, so it cannot drift from the code.
//!
//! Each node is a box with its name, its addresses, its routes and whether it forwards.
//! The tree starts at the first node (the host); a cable (veth pair) joins a node to
//! the one below it, labelled with the interface at each end. A node with nodes
//! behind it (a docker-in-docker container and its own container) is framed with
//! them: namespaces nested the way the story nests containers.

use std::collections::BTreeSet;
use std::fmt::Write;

use crate::topology::Topology;

const CHAR_W: f64 = 7.2; // monospace 12px
const LINE_H: f64 = 16.0;
const PAD: f64 = 10.0;
const GAP_X: f64 = 24.0;
const GAP_Y: f64 = 64.0;
const FRAME: f64 = 8.0;

struct Laid {
    name: String,
    lines: Vec<String>,
    /// Cable from the parent: (interface in the parent, interface here).
    cable: Option<(String, String)>,
    children: Vec<Laid>,
    width: f64,
    box_w: f64,
    box_h: f64,
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Topology {
    /// The world as a standalone SVG document (see the module's documentation).
    pub fn to_svg(&self) -> String {
        let Some(root) = self.nodes.first() else {
            return "<svg xmlns=\"http://www.w3.org/2000/svg\"/>\n".to_string();
        };
        let mut drawn = BTreeSet::from([root.name.clone()]);
        let tree = self.lay_out(&root.name, None, &mut drawn);
        let depth = tree_depth(&tree);
        let mut row_h = vec![0.0f64; depth];
        row_heights(&tree, 0, &mut row_h);
        let mut body = String::new();
        let top = FRAME * 2.0;
        draw(&tree, FRAME * 2.0, top, 0, &row_h, None, &mut body);
        let height = top + row_h.iter().sum::<f64>() + GAP_Y * (depth as f64 - 1.0) + FRAME * 4.0;
        let width = tree.width + FRAME * 4.0;
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
             width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"monospace\" font-size=\"12\" \
             role=\"img\" aria-label=\"The world: nodes, cables and addresses\">\n\
             <style>.node{{fill:#f5f7ff;stroke:#3451b2;stroke-width:1.5}}\
             .frame{{fill:none;stroke:#888;stroke-dasharray:6 4}}\
             .cable{{stroke:#444;stroke-width:2}}.name{{font-weight:bold;fill:#1a237e}}\
             .if{{fill:#555;font-size:11px}}</style>\n{body}</svg>\n"
        )
    }

    fn lay_out(
        &self,
        node: &str,
        cable: Option<(String, String)>,
        drawn: &mut BTreeSet<String>,
    ) -> Laid {
        let spec = self.find(node);
        let mut lines = Vec::new();
        if let Some(spec) = spec {
            for (interface, cidr) in &spec.addresses {
                lines.push(format!("{interface} {cidr}"));
            }
            for bridge in &spec.bridges {
                if !spec.addresses.iter().any(|(i, _)| i == bridge) {
                    lines.push(format!("{bridge} (bridge)"));
                }
            }
            for route in &spec.routes {
                match &route.destination {
                    None => lines.push(format!("default via {}", route.via)),
                    Some(dest) => lines.push(format!("{dest} via {}", route.via)),
                }
            }
            if spec.forwarding {
                lines.push("forwarding".to_string());
            }
        }
        let mut next = Vec::new();
        for veth in &self.veths {
            let (near, far) = if veth.a.0 == node {
                (&veth.a, &veth.b)
            } else if veth.b.0 == node {
                (&veth.b, &veth.a)
            } else {
                continue;
            };
            if drawn.insert(far.0.clone()) {
                let port = spec
                    .and_then(|s| s.bridge_ports.iter().find(|(p, _)| p == &near.1))
                    .map(|(p, b)| format!("{p} → {b}"))
                    .unwrap_or_else(|| near.1.clone());
                next.push((far.0.clone(), (port, far.1.clone())));
            }
        }
        let children: Vec<Laid> = next
            .into_iter()
            .map(|(far, cable)| self.lay_out(&far, Some(cable), drawn))
            .collect();
        let longest = lines
            .iter()
            .map(|l| l.chars().count())
            .chain([node.chars().count()])
            .max()
            .unwrap_or(0);
        let box_w = longest as f64 * CHAR_W + 2.0 * PAD;
        let box_h = (lines.len() as f64 + 1.0) * LINE_H + PAD;
        let children_w: f64 = children.iter().map(|c| c.width).sum::<f64>()
            + GAP_X * (children.len().max(1) as f64 - 1.0);
        let width = box_w.max(children_w)
            + if children.is_empty() {
                0.0
            } else {
                2.0 * FRAME
            };
        Laid {
            name: node.to_string(),
            lines,
            cable,
            children,
            width,
            box_w,
            box_h,
        }
    }
}

fn tree_depth(node: &Laid) -> usize {
    1 + node.children.iter().map(tree_depth).max().unwrap_or(0)
}

fn row_heights(node: &Laid, depth: usize, rows: &mut [f64]) {
    rows[depth] = rows[depth].max(node.box_h);
    for child in &node.children {
        row_heights(child, depth + 1, rows);
    }
}

/// Draw `node`'s subtree in the column starting at `x`, its box's top at `y`;
/// `parent` is the point its cable starts from. Both ends' names are written just
/// above the box, where columns never overlap: the far (parent's) end, then this one.
fn draw(
    node: &Laid,
    x: f64,
    y: f64,
    depth: usize,
    rows: &[f64],
    parent: Option<(f64, f64)>,
    out: &mut String,
) {
    let center = x + node.width / 2.0;
    let bx = center - node.box_w / 2.0;
    if let (Some((px, py)), Some((near, far))) = (parent, &node.cable) {
        let _ = writeln!(
            out,
            "<line class=\"cable\" x1=\"{px:.1}\" y1=\"{py:.1}\" x2=\"{center:.1}\" y2=\"{y:.1}\"/>\n\
             <text class=\"if\" x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\n\
             <text class=\"if\" x=\"{center:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            y - 27.0,
            escape(near),
            y - 13.0,
            escape(far)
        );
    }
    if !node.children.is_empty() && depth > 0 {
        // The frame: this node and every node behind it.
        let _ = writeln!(
            out,
            "<rect class=\"frame\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"10\"/>",
            x,
            y - FRAME,
            node.width,
            subtree_height(node, depth, rows) + 2.0 * FRAME
        );
    }
    let _ = writeln!(
        out,
        "<g><rect class=\"node\" x=\"{bx:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" rx=\"6\"/>\n\
         <text class=\"name\" x=\"{:.1}\" y=\"{:.1}\">{}</text>",
        node.box_w,
        node.box_h,
        bx + PAD,
        y + LINE_H,
        escape(&node.name)
    );
    for (i, line) in node.lines.iter().enumerate() {
        let _ = writeln!(
            out,
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            bx + PAD,
            y + LINE_H * (i as f64 + 2.0),
            escape(line)
        );
    }
    out.push_str("</g>\n");
    let children_w: f64 = node.children.iter().map(|c| c.width).sum::<f64>()
        + GAP_X * (node.children.len().max(1) as f64 - 1.0);
    let mut cx = center - children_w / 2.0;
    let cy = y + rows[depth] + GAP_Y;
    for child in &node.children {
        draw(
            child,
            cx,
            cy,
            depth + 1,
            rows,
            Some((center, y + node.box_h)),
            out,
        );
        cx += child.width + GAP_X;
    }
}

fn subtree_height(node: &Laid, depth: usize, rows: &[f64]) -> f64 {
    let n = tree_depth(node);
    rows[depth..depth + n].iter().sum::<f64>() + GAP_Y * (n as f64 - 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_node_address_and_cable_is_drawn() {
        let mut world = Topology::new();
        world
            .node("host")
            .bridge("br0")
            .address("br0", "10.0.0.1/24")
            .forwarding();
        world
            .node("a")
            .address("eth0", "10.0.0.2/24")
            .default_route("10.0.0.1");
        world.node("b").address("eth0", "10.0.1.2/24");
        world.veth(("host", "veth-a"), ("a", "eth0"));
        world.node("host").bridge_port("veth-a", "br0");
        world.veth(("a", "veth-b"), ("b", "eth0"));
        let svg = world.to_svg();
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        for text in [
            "host",
            ">a<",
            ">b<",
            "br0 10.0.0.1/24",
            "eth0 10.0.0.2/24",
            "default via 10.0.0.1",
            "veth-a → br0",
            "forwarding",
        ] {
            assert!(svg.contains(text), "{text} missing from\n{svg}");
        }
        assert_eq!(svg.matches("class=\"cable\"").count(), 2);
        // a has a node behind it: framed with it.
        assert_eq!(svg.matches("class=\"frame\"").count(), 1);
    }
}
