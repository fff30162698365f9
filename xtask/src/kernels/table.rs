//! The kernel × suite table.

use std::fmt::Write as _;

use super::suites::Plan;
use super::KernelRun;

/// `12/12 41 s`, `11/12 ✗ 40 s`, `-` for a suite that did not run.
pub fn render(rows: &[KernelRun], plan: &Plan) -> String {
    let mut out = String::new();
    let mut header = format!("{:<8} {:<22} {:>6}", "kernel", "release", "boot");
    for s in &plan.suites {
        let _ = write!(header, " {:>22}", s.name);
    }
    let _ = write!(header, " {:>8}", "total");
    out.push_str(&header);
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{:<8} {:<22} {:>5.1}s",
            r.kernel,
            r.release,
            r.boot.as_secs_f64()
        );
        for s in &plan.suites {
            let cell = match r.outcomes.iter().find(|o| o.name == s.name) {
                Some(o) => {
                    let total = o.passed + o.failed;
                    let mark = if o.failed == 0 { "ok" } else { "FAIL" };
                    let skip = if o.skipped > 0 {
                        format!(" +{}skip", o.skipped)
                    } else {
                        String::new()
                    };
                    format!("{}/{total}{skip} {mark} {:.0}s", o.passed, o.seconds)
                }
                None => "-".into(),
            };
            let _ = write!(out, " {cell:>20}");
        }
        let _ = writeln!(out, " {:>7.0}s", r.total.as_secs_f64());
    }
    out
}

/// What failed on one kernel, before the table.
pub fn print_failures(row: &KernelRun) {
    if let Some(e) = &row.error {
        eprintln!("kernels: {}: {e}", row.kernel);
    }
    for o in &row.outcomes {
        for f in &o.failures {
            eprintln!("kernels: {} {}: {f}", row.kernel, o.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::suites::{Outcome, Plan, Suite};
    use super::*;

    #[test]
    fn a_failure_and_a_missing_suite_show_in_the_table() {
        let plan = Plan {
            skips_fail: true,
            timeout: 60,
            suites: ["tracer", "checks"]
                .map(|name| Suite {
                    name: name.into(),
                    runs: vec![],
                })
                .to_vec(),
        };
        let row = KernelRun {
            kernel: "7.2".into(),
            release: "7.2.13+deb14-amd64".into(),
            boot: Duration::from_millis(5900),
            total: Duration::from_secs(81),
            outcomes: vec![Outcome {
                name: "tracer".into(),
                passed: 11,
                failed: 1,
                skipped: 0,
                seconds: 70.2,
                failures: vec!["root x: boom".into()],
            }],
            error: None,
            capabilities: String::new(),
            pwru: None,
        };
        let table = render(&[row], &plan);
        let line = table.lines().nth(1).unwrap();
        assert!(line.contains("11/12 FAIL 70s"), "{table}");
        assert!(line.trim_end().ends_with("81s"), "{table}");
        assert!(line.contains(" - "), "checks did not run: {table}");
    }
}
