//! The benchmark (`tracer bench`): to be written.
use std::time::Duration;

/// Runs the benchmark and writes a report.
pub fn run(_per_measurement: Duration, _out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
