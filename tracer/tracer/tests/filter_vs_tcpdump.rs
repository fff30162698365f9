//! Differential test of the filter language, without root: every expression of
//! `common/filter_cases.rs` is compiled by `tracer::filter::parse`, run by the very evaluator the
//! eBPF program runs (`tracer_common::program::eval`) on every frame of a crafted capture, and
//! each decision is compared with `tcpdump -r capture.pcap EXPR`'s.
//!
//! tcpdump is the reference: if it is missing, the test fails and says how to install it.

#[path = "common/filter_cases.rs"]
mod filter_cases;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use pcap_file::pcap::{PcapPacket, PcapWriter};

/// Writes the frames with timestamps 1, 2, 3… seconds, so that tcpdump's `-tt` output names
/// each matching packet by its number.
fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::new(file).unwrap();
    for (i, f) in frames.iter().enumerate() {
        let ts = Duration::from_secs(i as u64 + 1);
        w.write_packet(&PcapPacket::new(ts, f.len() as u32, f))
            .unwrap();
    }
}

/// The numbers (1-based) of the packets tcpdump's filter accepts.
pub fn tcpdump_matches(pcap: &Path, expr: &str) -> BTreeSet<usize> {
    let out = Command::new("tcpdump")
        .args(["-n", "-tt", "-r"])
        .arg(pcap)
        .arg(expr)
        .output()
        .unwrap_or_else(|e| panic!("cannot run tcpdump ({e}): apt-get install tcpdump"));
    assert!(
        out.status.success(),
        "tcpdump refused {expr:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let secs = l.split('.').next().unwrap_or_default();
            secs.parse()
                .unwrap_or_else(|_| panic!("unexpected tcpdump line {l:?}"))
        })
        .collect()
}

#[test]
fn every_expression_decides_like_tcpdump_on_every_packet() {
    let frames = filter_cases::frames();
    let dir = std::env::temp_dir().join(format!("tracer-filter-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("varied.pcap");
    write_pcap(&pcap, &frames);

    let mut disagreements = Vec::new();
    let mut decisions = 0;
    let mut vacuous = Vec::new();
    for &(expr, tcpdump_expr) in filter_cases::EXPRESSIONS {
        let tcpdump_expr = if tcpdump_expr.is_empty() {
            expr
        } else {
            tcpdump_expr
        };
        let filter = tracer::filter::parse(expr).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
        let want = tcpdump_matches(&pcap, tcpdump_expr);
        let got: BTreeSet<usize> = frames
            .iter()
            .enumerate()
            .filter(|(_, f)| tracer::filter::matches_frame(&filter, f))
            .map(|(i, _)| i + 1)
            .collect();
        decisions += frames.len();
        if got != want {
            disagreements.push(format!(
                "{expr:?}: tcpdump only {:?}, tracer only {:?}\n{}",
                want.difference(&got).collect::<Vec<_>>(),
                got.difference(&want).collect::<Vec<_>>(),
                tracer::filter::disassemble(&filter)
            ));
        }
        // Not vacuous: each expression must accept some packets and refuse others.
        if want.is_empty() || want.len() == frames.len() {
            vacuous.push(expr);
        }
    }
    assert!(
        vacuous.is_empty(),
        "these expressions match nothing or everything in the capture: {vacuous:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        disagreements.is_empty(),
        "{} of {} expressions disagree with tcpdump:\n{}",
        disagreements.len(),
        filter_cases::EXPRESSIONS.len(),
        disagreements.join("\n")
    );
    assert!(filter_cases::EXPRESSIONS.len() >= 40);
    eprintln!(
        "{} expressions x {} packets = {decisions} decisions, all equal to tcpdump's",
        filter_cases::EXPRESSIONS.len(),
        frames.len()
    );
}
