//! `lab up` — the world with the story's programs running, until Ctrl-C.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use story::Story;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::style::{bold, dim};

pub fn run() -> Result<()> {
    // Ctrl-C and SIGTERM are received by `wait_for_stop_signal` below. Blocking them now,
    // before any thread exists, means every thread inherits the block and none of them
    // is killed half-way: we tear the world down ourselves, then exit.
    let signals = block_stop_signals();

    let mut story = Story::reference(true).context("building the world")?;
    // Homework 2: a TCP relay in `host`, as docker-proxy for `-p 4000:4000/tcp`.
    let _tcp_accepted = story.start_reference_tcp_relay(true)?;
    story.world.spawn_service("server", "tcp-echo-server", || {
        let listener = std::net::TcpListener::bind(("0.0.0.0", story::PORT))
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        async move { run_tcp_echo(listener?).await }
    })?;
    let registry = story.world.publish()?;

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
        dim(&format!("(registered in {}; Ctrl-C tears everything down)", registry.display()))
    );
    let signal = wait_for_stop_signal(&signals);
    drop(story);
    println!(
        "\n{} — the world is torn down: every namespace, interface and program is gone.",
        signal_name(signal)
    );
    Ok(())
}

/// A TCP echo server (homework 2 compares TCP with UDP).
async fn run_tcp_echo(listener: tokio::net::TcpListener) -> std::io::Result<()> {
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

fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: plain signal-mask manipulation on a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_stop_signal(set: &libc::sigset_t) -> i32 {
    let mut signal = 0;
    // SAFETY: waits for one of the blocked signals in `set`.
    unsafe { libc::sigwait(set, &mut signal) };
    signal
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGINT => "Ctrl-C",
        libc::SIGTERM => "SIGTERM",
        _ => "SIGHUP",
    }
}
