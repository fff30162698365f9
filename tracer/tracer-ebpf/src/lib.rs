//! Empty on purpose: this library target only lets `tracer/build.rs` declare a build-dependency
//! on this crate, so that cargo rebuilds the userspace side when the eBPF code changes (as in
//! aya-template). The programs themselves are in `main.rs`.
#![no_std]
