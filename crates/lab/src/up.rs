//! `lab up` — the world with the story's programs running, until Ctrl-C.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use lab_registry::{Location, Registration, RegistryDir};
use nix::sys::signal::{SigSet, Signal};
use story::Story;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::style::{bold, dim};

/// The story's world as `lab up` and `lab run` show it: the reference answers, plus homework
/// 2's TCP half — a TCP relay in `host` (docker-proxy for `-p 4000:4000/tcp`) and a TCP echo
/// server in `server`.
pub(crate) fn story_with_tcp() -> Result<Story> {
    let mut story = Story::reference(true).context("building the world")?;
    // The relay reports each accepted connection on a channel nobody here reads: dropping
    // its receiver is fine (the relay ignores a failed send).
    story.start_reference_tcp_relay(true)?;
    story.world.spawn_service("server", "tcp-echo-server", || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", story::PORT))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        async move { run_tcp_echo(listener?).await }
    })?;
    Ok(story)
}

/// Runs until Ctrl-C (or SIGTERM, SIGHUP) and returns the exit code a shell gives a
/// program that signal stopped: 128 + its number (130 for Ctrl-C, 143 for SIGTERM), so
/// that a script running `lab up` sees it was interrupted, not that it finished.
pub fn run() -> Result<i32> {
    // Ctrl-C and SIGTERM are received by `SigSet::wait` below. Blocking them now, before
    // any thread exists, means every thread inherits the block and none of them is killed
    // half-way: we tear the world down ourselves, then exit.
    let signals = stop_signals();
    signals
        .thread_block()
        .context("cannot block Ctrl-C and SIGTERM")?;
    // Checked before the world is built, so that a registry directory another user
    // controls is reported at once, with the fix.
    let registry = RegistryDir::create(&Location::own())?;

    let story = story_with_tcp()?;
    let registration = Registration::of_this_process(
        netlab::sandbox::current()
            .map(|sandbox| sandbox.user_namespace)
            .unwrap_or(false),
        story
            .world
            .nodes()
            .iter()
            .map(|node| (node.name.clone(), node.inode(), node.raw_fd())),
    )?;
    // Removed when `registered` is dropped, before the world goes.
    let registered = registry.publish(&registration)?;

    println!("{}\n", bold("The story's world is up."));
    for line in story::story_world().picture().lines() {
        println!("  {line}");
    }
    println!("\n  {}", bold("node     netns inode"));
    for node in story.world.nodes() {
        println!("  {:<8} {}", node.name, node.inode());
    }
    println!(
        "\n  running: UDP and TCP echo servers on 0.0.0.0:4000 in server; the userland UDP proxy and a TCP relay on 0.0.0.0:4000 in host\n\
         \n  Explore from another terminal, for example:\n\
         \x20   cargo xtask lab exec client -- python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((\"\", 34320)); s.settimeout(2); s.sendto(b\"hi\", (\"192.168.0.239\", 4000)); print(s.recvfrom(100))'\n\
         \x20   cargo xtask lab exec dind2 -- cat /proc/net/nf_conntrack\n\
         \x20   cargo xtask lab exec host -- ip route get 172.18.0.3\n\
         \x20   cargo xtask lab exec host -- tcpdump -ni br-dind udp port 4000\n\
         \n  {}\n",
        dim(&format!("(registered in {}; Ctrl-C tears everything down)", registered.path().display()))
    );
    let signal = signals.wait().context("waiting for Ctrl-C")?;
    drop(registered);
    drop(story);
    println!(
        "\n{} — the world is torn down: every namespace, interface and program is gone.",
        signal_name(signal)
    );
    Ok(128 + signal as i32)
}

/// A TCP echo server (homework 2 compares TCP with UDP).
pub(crate) async fn run_tcp_echo(listener: tokio::net::TcpListener) -> std::io::Result<()> {
    loop {
        let (mut stream, peer): (tokio::net::TcpStream, SocketAddr) = listener.accept().await?;
        println!("  [server] TCP connection from {peer}");
        tokio::spawn(async move {
            let mut buffer = vec![0u8; 4096];
            while let Ok(len) = stream.read(&mut buffer).await {
                if len == 0 || stream.write_all(&buffer[..len]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// The signals that stop `lab up`: Ctrl-C, `kill`, and the terminal closing.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(signal);
    }
    set
}

fn signal_name(signal: Signal) -> &'static str {
    match signal {
        Signal::SIGINT => "Ctrl-C",
        Signal::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    }
}
