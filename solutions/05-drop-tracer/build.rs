//! Builds this exercise's kernel side (`ebpf/`) for the `bpfel-unknown-none` target with the
//! nightly toolchain and bpf-linker, exactly as the course's tracer does (aya-build), and leaves
//! the object in `OUT_DIR/drop-tracer` for `include_bytes_aligned!` in `src/lib.rs`.
//! Cargo reruns this whenever a file under `ebpf/` changes.
use anyhow::{anyhow, Context as _};

fn main() -> anyhow::Result<()> {
    let manifest_dir =
        std::env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR is not set")?;
    let ebpf_dir = std::path::Path::new(&manifest_dir).join("ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    let name = std::env::var("CARGO_PKG_NAME")? + "-ebpf";
    // aya-build runs `cargo build --package <name>` in the current directory: run it in `ebpf/`,
    // which is a workspace of its own (the course's workspace excludes it).
    std::env::set_current_dir(ebpf_dir).with_context(|| format!("cannot enter {ebpf_dir}"))?;
    // The eBPF crate also compiles `tracer-common` (the `Config` and `Event` both sides
    // share), which lives outside it: rebuild the object when that changes too, or the
    // object's `CONFIG` no longer has the size userspace writes into it.
    println!(
        "cargo:rerun-if-changed={}",
        std::path::Path::new(&manifest_dir)
            .join("../../tracer/tracer-common")
            .display()
    );
    aya_build::build_ebpf(
        [aya_build::Package {
            name: &name,
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
