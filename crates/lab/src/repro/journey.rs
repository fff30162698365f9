//! The datagram's journey as an SVG sequence diagram: the book's figure of the hop
//! table, drawn from a real run (`LAB_JOURNEY_SVG=FILE lab repro`, as root with the
//! `hop-table` feature), so it cannot drift from what the kernel reports.
//!
//! One vertical line per node, in the order the datagrams first reach them; one row per
//! hop, in time order: a dot on the node where the hop happened, joined to the previous
//! hop's dot, and the hop's tuple on the left — in orange where it differs from the
//! previous hop's (NAT rewrote it, or a new datagram: the relay, the answer), with a red
//! ✗ and the drop reason where the datagram died.

use std::fmt::Write;

/// One hop of the table, as the picture needs it.
pub struct Step {
    /// The node (network namespace) where the hop happened.
    pub node: String,
    /// `src:sport > dst:dport`.
    pub tuple: String,
    /// The drop reason, when the hop ends in a drop.
    pub dropped: Option<String>,
}

const ROW: f64 = 26.0;
const TOP: f64 = 48.0;
const LABEL_W: f64 = 310.0;
const LANE_W: f64 = 88.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The diagram (see the module's documentation).
pub fn svg(steps: &[Step]) -> String {
    let mut lanes: Vec<&str> = Vec::new();
    for step in steps {
        if !lanes.contains(&step.node.as_str()) {
            lanes.push(&step.node);
        }
    }
    let lane_x = |node: &str| {
        let i = lanes.iter().position(|n| *n == node).unwrap_or(0);
        LABEL_W + LANE_W * (i as f64 + 0.5)
    };
    // Wide enough for the lanes and for every drop's label beside its dot.
    let width = steps
        .iter()
        .filter_map(|s| {
            let label = format!("✗ DROPPED: {}", s.dropped.as_ref()?);
            Some(lane_x(&s.node) + 14.0 + label.chars().count() as f64 * 7.2)
        })
        .fold(LABEL_W + LANE_W * lanes.len() as f64, f64::max)
        + 8.0;
    let height = TOP + ROW * (steps.len() as f64 + 0.5);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         width=\"{width:.0}\" height=\"{height:.0}\" font-family=\"monospace\" font-size=\"12\" \
         role=\"img\" aria-label=\"The datagram's journey, hop by hop\">\n\
         <style>.lane{{stroke:#bbb;stroke-dasharray:4 4}}.node{{font-weight:bold;fill:#1a237e}}\
         .path{{stroke:#3451b2;stroke-width:2;fill:none}}.dot{{fill:#3451b2}}\
         .new{{fill:#c25400;font-weight:bold}}.drop{{fill:#c62828;font-weight:bold}}</style>\n"
    );
    let _ = writeln!(
        out,
        "<text x=\"8\" y=\"{:.0}\" class=\"node\">HOP  TUPLE</text>",
        TOP - 24.0
    );
    for node in &lanes {
        let x = lane_x(node);
        let _ = writeln!(
            out,
            "<text class=\"node\" x=\"{x:.1}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>\n\
             <line class=\"lane\" x1=\"{x:.1}\" y1=\"{:.0}\" x2=\"{x:.1}\" y2=\"{height:.0}\"/>",
            TOP - 24.0,
            escape(node),
            TOP - 16.0
        );
    }
    let mut previous: Option<(f64, f64, &str)> = None;
    for (i, step) in steps.iter().enumerate() {
        let y = TOP + ROW * i as f64;
        let x = lane_x(&step.node);
        let changed = previous.is_some_and(|(_, _, tuple)| tuple != step.tuple);
        if let Some((px, py, _)) = previous {
            let _ = writeln!(
                out,
                "<path class=\"path\" d=\"M{px:.1},{py:.1} L{x:.1},{y:.1}\"/>"
            );
        }
        let class = if step.dropped.is_some() {
            " class=\"drop\""
        } else if changed {
            " class=\"new\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<text x=\"8\" y=\"{:.1}\"{class}>{:>3}  {}</text>\n\
             <circle class=\"dot\" cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\"/>",
            y + 4.0,
            i + 1,
            escape(&step.tuple)
        );
        if let Some(reason) = &step.dropped {
            let _ = writeln!(
                out,
                "<text class=\"drop\" x=\"{:.1}\" y=\"{:.1}\">✗ DROPPED: {}</text>",
                x + 10.0,
                y + 4.0,
                escape(reason)
            );
        }
        previous = Some((x, y, &step.tuple));
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_node_and_the_drop_are_drawn() {
        let step = |node: &str, tuple: &str, dropped: Option<&str>| Step {
            node: node.into(),
            tuple: tuple.into(),
            dropped: dropped.map(String::from),
        };
        let svg = svg(&[
            step("client", "10.0.0.2:1 > 10.0.1.1:2", None),
            step("router", "10.0.0.2:1 > 10.0.1.1:2", None),
            step("router", "10.0.1.9:1 > 10.0.1.1:2", None),
            step("server", "10.0.1.9:1 > 10.0.1.1:2", Some("NO_SOCKET")),
        ]);
        assert_eq!(svg.matches("<circle").count(), 4);
        assert_eq!(svg.matches("class=\"lane\"").count(), 3);
        assert_eq!(svg.matches("class=\"path\"").count(), 3);
        // The rewritten tuple is marked, and the drop is named.
        assert_eq!(svg.matches("class=\"new\"").count(), 1, "{svg}");
        assert!(svg.contains("✗ DROPPED: NO_SOCKET"));
        assert!(svg.contains("10.0.1.9:1 &gt; 10.0.1.1:2"));
    }
}
