//! `tracer kernel`: what the running kernel offers the tracer, one `key: value` line each —
//! what `cargo xtask doctor` shows the learner (and the kernel matrix records).
//!
//! Every answer comes from the running kernel (BTF, an attach attempt), never from a version
//! number: distributions backport features, and configure kernels differently.

use std::time::Instant;

use anyhow::Result;
use nix::unistd::Uid;

use crate::btf::{self, Btf, VMLINUX_BTF};
use crate::collection::{KernelInfo, Tracer};

/// One capability: its key, and either what was found or why it is missing; `untested` when
/// only root could tell.
pub struct Capability {
    pub key: &'static str,
    pub found: Result<String, String>,
    pub untested: bool,
}

impl Capability {
    fn new(key: &'static str, found: Result<String, String>) -> Capability {
        Capability {
            key,
            found,
            untested: false,
        }
    }
}

/// Examines the kernel. With `try_attach` and as root, loads and attaches the `kfree_skb`
/// program for a moment (and detaches it): the only proof that `tp_btf` is allowed.
pub fn examine(try_attach: bool) -> Vec<Capability> {
    let mut out = Vec::new();
    let btf = match Btf::from_file(VMLINUX_BTF) {
        Ok(btf) => {
            out.push(Capability::new("btf", Ok(VMLINUX_BTF.to_string())));
            btf
        }
        Err(e) => {
            out.push(Capability::new("btf", Err(format!("{e:#}"))));
            return out;
        }
    };
    out.push(Capability::new(
        "kfree_skb",
        btf::kfree_skb_prototype(&btf).map_err(|e| format!("{e:#}")),
    ));
    out.push(Capability::new(
        "drop_reason",
        match (btf::kfree_skb_tracepoint(&btf), btf::drop_reasons(&btf)) {
            (Ok(tp), Ok(reasons)) => Ok(format!(
                "argument {} of kfree_skb; {} reasons in enum skb_drop_reason",
                tp.slot.reason_arg,
                reasons.len()
            )),
            (Err(e), _) | (_, Err(e)) => Err(format!("{e:#}")),
        },
    ));
    if Uid::effective().is_root() && try_attach {
        out.push(Capability::new("tp_btf", attach()));
    } else {
        out.push(Capability {
            untested: true,
            ..Capability::new("tp_btf", Err("needs root to test".into()))
        });
    }
    out
}

/// Loads and attaches `tp_btf/kfree_skb`, then detaches it.
fn attach() -> Result<String, String> {
    let started = Instant::now();
    let attached = KernelInfo::load().and_then(|kernel| {
        let kfree = btf::kfree_skb_tracepoint(&kernel.btf)?;
        let tracer = Tracer::load(&kernel, &[kfree], Default::default(), false)?;
        Ok(tracer.attached())
    });
    match attached {
        Ok(n) if n > 0 => Ok(format!(
            "attached tp_btf/kfree_skb in {} ms",
            started.elapsed().as_millis()
        )),
        Ok(_) => Err("tp_btf/kfree_skb was not attached".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// Prints [`examine`]'s answer: `key: ok: …`, `key: untested: …` or `key: missing: …`. True
/// if nothing is missing.
pub fn print(try_attach: bool) -> Result<bool> {
    let mut all = true;
    for c in examine(try_attach) {
        match &c.found {
            Ok(v) => println!("{}: ok: {v}", c.key),
            Err(why) if c.untested => println!("{}: untested: {why}", c.key),
            Err(why) => {
                all = false;
                println!("{}: missing: {}", c.key, why.replace('\n', " "))
            }
        }
    }
    Ok(all)
}
