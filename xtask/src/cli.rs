//! The command line, declared with clap's derive API: one enum variant per subcommand,
//! one field per flag. `--help` output is generated from these doc comments.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// The course's CLI. Start with `cargo xtask doctor`, then `cargo xtask watch`.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every exercise with its state (not started / failing / done) and your progress.
    List,
    /// Build an exercise's checks and run each one against your code.
    Check(CheckArgs),
    /// Print an exercise's hint and the chapter that explains it.
    Hint {
        /// exercise-3, 3, 03 or udp-proxy
        name: String,
    },
    /// Check the current exercise, then again on every save; Ctrl-C to quit.
    Watch(TimeoutArg),
    /// Put an exercise back as it was in git (your changes to it are lost).
    Reset {
        /// exercise-3, 3, 03 or udp-proxy
        name: String,
    },
    /// Is this machine ready for the course? One line per requirement.
    Doctor,
    /// Install what the course needs (as root), or print the commands to do it.
    Setup(SetupArgs),
    /// Reproduce the story end to end with the reference solutions.
    Repro {
        /// Passed on to `cargo run -p lab -- repro`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Run the story's world: `lab up`, `lab exec dind2 -- cat /proc/net/nf_conntrack`.
    Lab {
        /// Passed on to `cargo run -p lab --`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// For course authors: every check fails untouched and passes on the solution; lints.
    DevCheck(TimeoutArg),
    /// What CI runs: lints, unit tests, dev-check, rootless proof, book, host untouched.
    Test(TimeoutArg),
    /// Time the world's up+down and a full `check --all --solution`.
    Bench(TimeoutArg),
    /// Build the book with the pinned mdBook (installed when missing); --serve, --refresh, --check.
    Book(BookArgs),
    /// For course authors (root, slow): every suite on Debian's 6.1, 6.12 and 7.2 kernels in QEMU.
    Kernels(crate::kernels::KernelsArgs),
    /// (Internal, run by `check --sudo` as root.) Run PROGRAM in its own process group
    /// and kill the group when standard input closes (the runner finished or died).
    #[command(hide = true)]
    Lifeline {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        program: Vec<String>,
    },
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// exercise-3, 3, 03 or udp-proxy (none: your current exercise, the first not done)
    #[arg(conflicts_with = "all")]
    pub name: Option<String>,
    /// Check every exercise, in order.
    #[arg(long)]
    pub all: bool,
    /// Run the checks against the reference solution instead of your code.
    #[arg(long)]
    pub solution: bool,
    /// Count a SKIP as a failure (always so when CI=true).
    #[arg(long)]
    pub no_skip: bool,
    /// Build as you, then run only the built checks as root with `sudo -E` (the eBPF
    /// exercises need root; never `sudo cargo`, which leaves root-owned files in target/).
    #[arg(long)]
    pub sudo: bool,
    #[command(flatten)]
    pub timeout: TimeoutArg,
}

#[derive(Debug, Args, Clone, Copy)]
pub struct TimeoutArg {
    /// Time limit for each test, in seconds.
    #[arg(long = "timeout", value_name = "SECONDS", default_value_t = 120)]
    pub seconds: u64,
}

impl TimeoutArg {
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.seconds)
    }
}

#[derive(Debug, Args, Clone)]
pub struct BookArgs {
    /// With --refresh or --check: only these outputs of book/outputs.toml (by name).
    pub only: Vec<String>,
    /// Serve it on http://localhost:3000 and rebuild on every save.
    #[arg(long, group = "book_mode")]
    pub serve: bool,
    /// Run every command of book/outputs.toml again and rewrite its output file.
    #[arg(long, group = "book_mode")]
    pub refresh: bool,
    /// Fail when a captured output no longer matches what the code prints (CI).
    #[arg(long, group = "book_mode")]
    pub check: bool,
    /// Build, then open every page in headless Chromium (console errors, links and
    /// anchors, figures, overflow at 1280 px, search); screenshots in target/book-screenshots/.
    #[arg(long, group = "book_mode")]
    pub browser: bool,
}

#[derive(Debug, Args, Clone, Copy, Default)]
pub struct SetupArgs {
    /// Only what the exercises need: skip the eBPF tracer's toolchain (nightly, bpf-linker, LLVM).
    #[arg(long)]
    pub only_course: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn check_takes_a_name_all_or_nothing() {
        let cli = Cli::try_parse_from(["xtask", "check", "3", "--timeout", "5"]).unwrap();
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!(args.name.as_deref(), Some("3"));
        assert_eq!(args.timeout.seconds, 5);
        // No name: the current exercise, as rustlings does.
        let cli = Cli::try_parse_from(["xtask", "check"]).unwrap();
        let Command::Check(args) = cli.command else {
            panic!("not check")
        };
        assert_eq!((args.name, args.all), (None, false));
        assert!(Cli::try_parse_from(["xtask", "check", "--all", "--solution"]).is_ok());
        assert!(Cli::try_parse_from(["xtask", "check", "3", "--all"]).is_err());
    }

    #[test]
    fn lab_forwards_everything() {
        let cli =
            Cli::try_parse_from(["xtask", "lab", "exec", "dind2", "--", "cat", "-n"]).unwrap();
        let Command::Lab { args } = cli.command else {
            panic!("not lab")
        };
        assert_eq!(args, ["exec", "dind2", "--", "cat", "-n"]);
    }
}
