//! `lab bench` — how long the world takes to come up and go down. A benchmark, not a
//! test: it prints numbers and asserts nothing.

use std::time::{Duration, Instant};

use anyhow::Result;
use netlab::World;
use story::Story;

pub fn run(rounds: usize) -> Result<()> {
    let topology = story::story_world();
    let nat = story::reference_nat_rules();
    println!(
        "world up/down on {} cores, {rounds} rounds each (after one warm-up round)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    measure(
        "topology only (6 namespaces, 5 cables, addresses, routes)",
        rounds,
        || {
            let started = Instant::now();
            let world = World::up(&topology)?;
            let up = started.elapsed();
            drop(world);
            Ok((up, started.elapsed() - up))
        },
    )?;
    measure(
        "the story (topology + NAT rules in 3 nodes + echo server)",
        rounds,
        || {
            let started = Instant::now();
            let story = Story::up(&nat, false)?;
            let up = started.elapsed();
            drop(story);
            Ok((up, started.elapsed() - up))
        },
    )?;
    println!("(down = until every descriptor is closed; the kernel finishes dismantling namespaces in the background)");
    Ok(())
}

fn measure(
    what: &str,
    rounds: usize,
    mut round: impl FnMut() -> Result<(Duration, Duration)>,
) -> Result<()> {
    round()?;
    let mut ups = Vec::new();
    let mut downs = Vec::new();
    for _ in 0..rounds {
        let (up, down) = round()?;
        ups.push(up);
        downs.push(down);
    }
    let total: Vec<Duration> = ups.iter().zip(&downs).map(|(u, d)| *u + *d).collect();
    println!("{what}");
    for (name, samples) in [("up", &ups), ("down", &downs), ("up+down", &total)] {
        let mut sorted = samples.clone();
        sorted.sort();
        let mean = sorted.iter().sum::<Duration>() / sorted.len() as u32;
        println!(
            "  {name:<8} min {:>7.1?}  median {:>7.1?}  mean {:>7.1?}  max {:>7.1?}",
            sorted[0],
            sorted[sorted.len() / 2],
            mean,
            sorted[sorted.len() - 1]
        );
    }
    Ok(())
}
