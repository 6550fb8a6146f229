//! `plan-latency`: how long a close plan takes from the moment its entry is written until the
//! paper exchange accepted its order, and how fast a burst of plans is cleared, for the apply
//! worker on the signing module, beside a minimal consumer on the module and the same minimal
//! consumer with client-side signing on plain Redis (the replaced design).
//!
//! Everything runs on loopback: redis-server processes, and in this process the paper
//! exchange, the consumers and the publisher. Prints `name value` lines for
//! `scripts/bench.sh`; with `--profile`, also where each step of a plan's path falls.
//! A benchmark, not a test: nothing here asserts on time.

#![forbid(unsafe_code)]

mod consumer;
mod probe;
mod publish;
mod run;
mod setup;
mod stats;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use crate::run::{Design, Rig, Sequential};
use crate::setup::Secret;
use crate::stats::{ms, percentile, Profile};

/// Plan-to-order latency and burst throughput of the close path.
#[derive(Debug, Parser)]
#[command(name = "plan-latency")]
struct Args {
    /// Plans sent one at a time, per design.
    #[arg(long, default_value_t = 10_000)]
    plans: usize,
    /// Plans in the burst, per design (default: as many as --plans).
    #[arg(long)]
    burst: Option<usize>,
    /// A quick smoke run: 200 plans and a burst of 200.
    #[arg(long, conflicts_with_all = ["plans", "burst"])]
    short: bool,
    /// One-at-a-time plans are sent in rounds of this many per design, alternating designs,
    /// so that a change in the machine's load shifts all of them alike.
    #[arg(long, default_value_t = 500)]
    round: usize,
    /// Also time each step of the path (debug events of the worker and the exchange client);
    /// this adds its own cost to the figures.
    #[arg(long)]
    profile: bool,
}

/// The position a paper exchange can hold limits how many plans one run can close.
const MAX_PLANS: usize = 100_000;

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (plans, burst) = if args.short {
        (200, 200)
    } else {
        (args.plans, args.burst.unwrap_or(args.plans))
    };
    anyhow::ensure!(
        plans > 0 && burst > 0 && args.round > 0,
        "counts must be positive"
    );
    anyhow::ensure!(plans.max(burst) <= MAX_PLANS, "at most {MAX_PLANS} plans");
    let mut marks = probe::install(args.profile)?;
    let secret = Secret::random()?;
    eprintln!(
        "bench: {plans} plans one at a time and a burst of {burst}, per design; {}",
        load()
    );

    let mut rigs = Vec::new();
    for design in Design::ALL {
        let mut rig = Rig::start(design, &secret, plans).await?;
        rig.warm_up(&mut marks).await.context("warming up")?;
        rigs.push(rig);
    }
    let mut sequential: Vec<Sequential> =
        Design::ALL.iter().map(|_| Sequential::default()).collect();
    let mut left = plans;
    while left > 0 {
        let round = left.min(args.round);
        for (rig, into) in rigs.iter_mut().zip(&mut sequential) {
            rig.sequential(round, &mut marks, into)
                .await
                .with_context(|| format!("{:?}, one at a time", rig.design))?;
        }
        left -= round;
    }
    for rig in rigs {
        rig.stop().await?;
    }

    let mut rates = Vec::new();
    for design in Design::ALL {
        let mut rig = Rig::start(design, &secret, burst).await?;
        rig.warm_up(&mut marks).await.context("warming up")?;
        let rate = rig
            .burst(burst, &mut marks)
            .await
            .with_context(|| format!("{design:?}, burst"))?;
        rates.push(rate);
        rig.stop().await?;
    }

    let drift: Vec<String> = Design::ALL
        .iter()
        .zip(&sequential)
        .map(|(design, seq)| drift(*design, &seq.latencies))
        .collect();
    for ((design, seq), rate) in Design::ALL.iter().zip(&mut sequential).zip(&rates) {
        let prefix = design.prefix();
        seq.latencies.sort();
        let p50 = ms(percentile(&seq.latencies, 50.0));
        let p99 = ms(percentile(&seq.latencies, 99.0));
        println!("{prefix}plan_to_order_p50_ms {p50:.3}");
        println!("{prefix}plan_to_order_p99_ms {p99:.3}");
        println!("{prefix}burst_plans_per_s {rate:.0}");
    }
    println!("plans {plans}");
    println!("burst_plans {burst}");
    if args.profile {
        for (design, seq) in Design::ALL.iter().zip(&sequential) {
            print_profile(*design, seq);
        }
        drift.iter().for_each(|line| println!("{line}"));
    }
    eprintln!("bench: done; {}", load());
    Ok(())
}

/// One line per step: `stage DESIGN MEDIAN_MS SHARE LABEL`, in the order the steps happen.
fn print_profile(design: Design, seq: &Sequential) {
    let mut profile = Profile::default();
    for steps in &seq.steps {
        profile.add(steps);
    }
    let name = format!("{design:?}").to_lowercase();
    let mut previous = Duration::ZERO;
    for (offset, share, label) in profile.layout() {
        let delta = offset.saturating_sub(previous);
        previous = offset;
        println!(
            "stage {name} {:.3} +{:.3} {:.0}% {label}",
            ms(offset),
            ms(delta),
            share * 100.0
        );
    }
}

/// The median of the first and of the last tenth of the plans, in the order they were sent:
/// whether latency grows as the paper exchange's order history does.
fn drift(design: Design, in_order: &[Duration]) -> String {
    let tenth = (in_order.len() / 10).max(1);
    let median = |part: &[Duration]| {
        let mut part = part.to_vec();
        part.sort();
        ms(percentile(&part, 50.0))
    };
    let (first, last) = (&in_order[..tenth], &in_order[in_order.len() - tenth..]);
    format!(
        "drift {} first_tenth_p50_ms {:.3} last_tenth_p50_ms {:.3}",
        format!("{design:?}").to_lowercase(),
        median(first),
        median(last)
    )
}

fn load() -> String {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let averages: Vec<&str> = text.split_whitespace().take(3).collect();
    format!("load average {}", averages.join(" "))
}
