//! Is a learner's server still giving its runtime a chance to run?
//!
//! A service runs on a **current-thread** Tokio runtime (see [`crate::Service`]): one
//! thread polls every task in turn, and a task gives the thread back only at an
//! `.await` that is not ready. A server that never reaches one — a `loop {}` without
//! `.await`, or a blocking `std::net` call inside async code — holds the thread forever:
//! no other task of that runtime runs again, and the service can never be stopped.
//! From outside, all a check sees is "no reply", and then a timeout.
//!
//! A [`Heartbeat`] is a tiny task spawned on the same runtime as the server, counting
//! every few milliseconds. If the count does not move for two seconds, the runtime's only
//! thread is not coming back to its tasks: the server never yields. The check can then
//! say so in seconds, instead of waiting for its time limit.
//!
//! ```no_run
//! # use netlab::{watchdog::Heartbeat, World};
//! # fn serve() -> impl std::future::Future<Output = std::io::Result<()>> { async { Ok(()) } }
//! # fn demo(world: &mut World) -> anyhow::Result<()> {
//! let (tx, rx) = std::sync::mpsc::channel();
//! world.spawn_service("box", "server", move || {
//!     let _ = tx.send(Heartbeat::start()); // inside the service's runtime
//!     serve()
//! })?;
//! let heartbeat = rx.recv()?;
//! // … no reply from the server? Ask why:
//! if heartbeat.check() == netlab::watchdog::Pulse::Stuck {
//!     panic!("{}", netlab::watchdog::NEVER_YIELDS);
//! }
//! # Ok(()) }
//! ```

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a check says when the server's runtime is stuck.
pub const NEVER_YIELDS: &str =
    "your server never yields to the runtime (a blocking loop or std::net call inside async code?)";

/// How often the heartbeat task counts.
const BEAT: Duration = Duration::from_millis(20);

/// How long the count may stay still before the runtime counts as stuck: a hundred
/// beats. A runtime that is merely busy (a burst of datagrams) is back within
/// milliseconds; the margin is for a machine so loaded that a thread waits its turn.
pub const PATIENCE: Duration = Duration::from_secs(2);

/// A counter that a task on the watched runtime increments; see the module's doc.
#[derive(Debug, Clone)]
pub struct Heartbeat {
    beats: Arc<AtomicU64>,
    /// Cleared when the task is dropped: the runtime has shut down (the service ended).
    alive: Arc<AtomicBool>,
}

/// What [`Heartbeat::check`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pulse {
    /// The runtime ran the heartbeat recently: the server yields as it should.
    Beating,
    /// The runtime has not run the heartbeat for [`PATIENCE`]: something holds its thread.
    Stuck,
    /// The runtime is gone: the service returned (or panicked) and its runtime shut down.
    Ended,
}

/// Sets `alive` to false when dropped (with the task, when its runtime shuts down).
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Heartbeat {
    /// Spawn the heartbeat on the current Tokio runtime. Call it from inside the runtime
    /// that runs the server — in the `make` closure given to
    /// [`World::spawn_service`](crate::World::spawn_service), which runs inside it.
    ///
    /// # Panics
    /// Outside a Tokio runtime (as `tokio::spawn` does).
    pub fn start() -> Heartbeat {
        let beats = Arc::new(AtomicU64::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let (counter, guard) = (beats.clone(), ClearOnDrop(alive.clone()));
        tokio::spawn(async move {
            let _guard = guard;
            loop {
                counter.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(BEAT).await;
            }
        });
        Heartbeat { beats, alive }
    }

    /// Watch the count for up to [`PATIENCE`]: does it move? Returns as soon as it does.
    pub fn check(&self) -> Pulse {
        let before = self.beats.load(Ordering::SeqCst);
        let deadline = Instant::now() + PATIENCE;
        loop {
            if !self.alive.load(Ordering::SeqCst) {
                return Pulse::Ended;
            }
            if self.beats.load(Ordering::SeqCst) != before {
                return Pulse::Beating;
            }
            if Instant::now() >= deadline {
                return Pulse::Stuck;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// Run `server` on a current-thread runtime of its own thread, as a Service does,
    /// with a heartbeat beside it; the thread is left running (a stuck one cannot be
    /// joined: that is the point).
    fn serve_on_a_runtime<F>(server: F) -> Heartbeat
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let _inside = runtime.enter();
            tx.send(Heartbeat::start()).unwrap();
            runtime.block_on(server);
        });
        rx.recv().unwrap()
    }

    #[test]
    fn a_server_that_awaits_keeps_the_heartbeat_beating() {
        let heartbeat = serve_on_a_runtime(async {
            let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buffer = [0u8; 16];
            let _ = socket.recv_from(&mut buffer).await; // nobody sends: waits, yielding
        });
        assert_eq!(heartbeat.check(), Pulse::Beating);
    }

    /// A deliberately blocking server: `std::net` inside async code, waiting for a
    /// datagram that never comes.
    #[test]
    fn a_server_blocked_in_std_net_is_found_stuck() {
        let heartbeat = serve_on_a_runtime(async {
            let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let mut buffer = [0u8; 16];
            let _ = socket.recv_from(&mut buffer); // blocks the runtime's only thread
        });
        // Give the runtime the moment it needs to reach the blocking call.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(heartbeat.check(), Pulse::Stuck);
    }

    /// A deliberately blocking server: a loop without `.await`.
    #[test]
    fn a_server_spinning_without_await_is_found_stuck() {
        let stop = Arc::new(AtomicBool::new(false));
        let spinning = stop.clone();
        let heartbeat = serve_on_a_runtime(async move {
            while !spinning.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        std::thread::sleep(Duration::from_millis(100));
        let pulse = heartbeat.check();
        stop.store(true, Ordering::Relaxed); // don't spin a CPU for the rest of the tests
        assert_eq!(pulse, Pulse::Stuck);
    }

    #[test]
    fn a_server_that_returned_is_ended_not_stuck() {
        let heartbeat = serve_on_a_runtime(async {});
        let deadline = Instant::now() + Duration::from_secs(10);
        while heartbeat.check() != Pulse::Ended {
            assert!(Instant::now() < deadline, "the runtime never shut down");
        }
    }
}
