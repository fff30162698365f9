use which::which;

/// Building this crate has an undeclared dependency on the `bpf-linker` binary. This would be
/// better expressed by [artifact-dependencies][bindeps] but issues such as
/// <https://github.com/rust-lang/cargo/issues/12385> make their use impractical for the time being.
///
/// This file implements an imperfect solution: it causes cargo to rebuild the crate whenever the
/// mtime of `which bpf-linker` changes. (Same as aya-template.)
///
/// [bindeps]: https://doc.rust-lang.org/nightly/cargo/reference/unstable.html#artifact-dependencies
fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(_) => println!(
            "cargo:warning=bpf-linker not found: install it with `cargo install bpf-linker` (see tracer/README.md)"
        ),
    }
}
