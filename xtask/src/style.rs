//! Colours, only when a person is watching.
//!
//! Escape codes are used when stdout is a terminal and `NO_COLOR` is unset (see
//! <https://no-color.org>); anything else — a pipe, a CI log, a file — gets plain text.

use std::io::IsTerminal;
use std::sync::OnceLock;

/// Should we print colours?
pub fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED
        .get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
}

/// Is stdout a terminal (for progress lines that rewrite themselves)?
pub fn interactive() -> bool {
    std::io::stdout().is_terminal()
}

fn paint(code: &str, text: &str) -> String {
    if enabled() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn green(text: &str) -> String {
    paint("32", text)
}
pub fn red(text: &str) -> String {
    paint("31", text)
}
pub fn yellow(text: &str) -> String {
    paint("33", text)
}
pub fn bold(text: &str) -> String {
    paint("1", text)
}
pub fn dim(text: &str) -> String {
    paint("2", text)
}
