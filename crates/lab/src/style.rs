//! Colours for a terminal that wants them (not when piped, not with NO_COLOR set).

use std::io::IsTerminal;
use std::sync::OnceLock;

fn enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED
        .get_or_init(|| std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
}

fn paint(code: &str, text: &str) -> String {
    if enabled() {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_string()
    }
}

pub fn bold(text: &str) -> String {
    paint("1", text)
}
pub fn red(text: &str) -> String {
    paint("31;1", text)
}
pub fn green(text: &str) -> String {
    paint("32;1", text)
}
pub fn dim(text: &str) -> String {
    paint("2", text)
}
