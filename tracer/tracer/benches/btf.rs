//! How long reading the running kernel's BTF takes: `cargo bench -p tracer --bench btf`.
//!
//! The tracer reads `/sys/kernel/btf/vmlinux` twice when it starts: btfparse, behind
//! `tracer::btf`, answers the course's questions (offsets, drop reasons, tracepoints), and aya
//! parses it again to load the programs. This prints the time of each step, a few rounds each,
//! so that a change of BTF reader can be weighed (tracer/README.md, "Benchmark", has the numbers
//! that decided for btfparse). No root needed: the file is world-readable.

use std::time::{Duration, Instant};

use tracer::btf::{self, Btf};

const ROUNDS: usize = 5;

fn millis(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    if !std::path::Path::new(btf::VMLINUX_BTF).exists() {
        println!(
            "no {}: this kernel has no BTF, nothing to measure",
            btf::VMLINUX_BTF
        );
        return Ok(());
    }
    println!("| round | read file | btfparse: parse | offsets + reasons + tracepoints | drop | aya: parse |");
    println!("|---|---|---|---|---|---|");
    for round in 1..=ROUNDS {
        let started = Instant::now();
        let bytes = std::fs::read(btf::VMLINUX_BTF)?;
        let read = started.elapsed();

        let started = Instant::now();
        let kernel = Btf::parse(&bytes)?;
        let parse = started.elapsed();

        let started = Instant::now();
        btf::skb_offsets(&kernel)?;
        btf::drop_reasons(&kernel)?;
        let tracepoints = btf::skb_tracepoints(&kernel)?;
        let questions = started.elapsed();

        let started = Instant::now();
        drop(kernel);
        let dropped = started.elapsed();

        let started = Instant::now();
        aya::Btf::from_sys_fs()?;
        let aya = started.elapsed();

        println!(
            "| {round} | {} | {} | {} ({} tracepoints) | {} | {} |",
            millis(read),
            millis(parse),
            millis(questions),
            tracepoints.len(),
            millis(dropped),
            millis(aya)
        );
    }
    Ok(())
}
