//! One consumer design, stood up and driven: plans sent one at a time, or in a burst.
//!
//! A plan's latency runs from the instant before its publish command is sent to the instant
//! the paper exchange filled its order (see [`crate::probe`]). The next plan is sent only once
//! the previous one is settled, so no plan waits behind another.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use reconcile_apply::stream::ensure_group;
use reconcile_exchange::paper::RunningPaper;
use reconcile_exchange::{ClientOrderId, Decimal};
use reconcile_tests::STREAM;
use reconcile_worker::{Shutdown, ShutdownTrigger};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::consumer::{self, Verify};
use crate::probe::{self, Mark};
use crate::publish::{Publisher, STEP};
use crate::setup::{self, Secret, Store, GROUP};

/// How long one plan may take before the run is abandoned: only a bound on a hang.
const PLAN_DEADLINE: Duration = Duration::from_secs(10);
/// Plans sent before measuring, so that connections, pools and caches are warm.
pub const WARMUP: usize = 20;

/// The three designs measured side by side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Design {
    /// The module signs and verifies; the apply worker executes.
    Worker,
    /// The module signs and verifies; the minimal consumer executes.
    Minimal,
    /// The publisher signs, plain XADD; the minimal consumer verifies and executes.
    Baseline,
}

impl Design {
    pub const ALL: [Design; 3] = [Design::Worker, Design::Minimal, Design::Baseline];

    /// The prefix of its output lines.
    pub fn prefix(self) -> &'static str {
        match self {
            Design::Worker => "",
            Design::Minimal => "minimal_",
            Design::Baseline => "baseline_",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Design::Worker => "worker",
            Design::Minimal => "minimal",
            Design::Baseline => "baseline",
        }
    }
}

enum Consumer {
    Worker(setup::Worker),
    Minimal {
        trigger: ShutdownTrigger,
        task: JoinHandle<anyhow::Result<()>>,
    },
}

/// A design with its servers, its consumer and a publisher, ready for plans.
pub struct Rig {
    pub design: Design,
    publisher: Publisher,
    consumer: Consumer,
    sent: usize,
    // Dropped last: the consumer must stop before its servers go.
    _paper: RunningPaper,
    _store: Store,
}

/// What the one-at-a-time plans measured.
#[derive(Default)]
pub struct Sequential {
    pub latencies: Vec<Duration>,
    /// Each plan's steps, timed from its publish, when profiling.
    pub steps: Vec<Vec<(String, Duration)>>,
}

impl Rig {
    /// Stands the design up, with a position large enough for `plans` closes after the warmup.
    pub async fn start(design: Design, secret: &Secret, plans: usize) -> anyhow::Result<Rig> {
        let store = match design {
            Design::Worker | Design::Minimal => Store::guarded()?,
            Design::Baseline => Store::plain(),
        };
        let size = Decimal::from_str_exact(STEP)? * Decimal::from(plans + WARMUP + 1);
        let paper = setup::exchange(secret, size).await?;
        let admin = redis::Client::open(store.admin_url())?;
        let mut con = admin.get_multiplexed_async_connection().await?;
        let group = match design {
            Design::Worker => reconcile_apply::config::GROUP,
            Design::Minimal | Design::Baseline => GROUP,
        };
        // Created here rather than by the consumer, so that no plan is published before it.
        ensure_group(&mut con, STREAM, group).await?;

        let consumer = match design {
            Design::Worker => Consumer::Worker(setup::worker(&store, &paper, secret).await?),
            Design::Minimal | Design::Baseline => {
                let verify = match store.keyring() {
                    Some(ring) => Verify::ClientSide(ring),
                    None => Verify::Module,
                };
                let exchange = Arc::new(setup::client(&paper, secret)?);
                let (trigger, shutdown) = Shutdown::new();
                let run = consumer::run(store.admin_url(), verify, exchange, shutdown);
                Consumer::Minimal {
                    trigger,
                    task: tokio::spawn(run),
                }
            }
        };
        let publisher = match store.keyring() {
            Some(ring) => Publisher::ClientSigned { con, ring },
            None => Publisher::Module(con),
        };
        Ok(Rig {
            design,
            publisher,
            consumer,
            sent: 0,
            _paper: paper,
            _store: store,
        })
    }

    fn next_plan_id(&mut self, phase: &str) -> String {
        self.sent += 1;
        format!("bench:{}:{phase}:{}", self.design.name(), self.sent)
    }

    /// Sends `count` plans one at a time and adds their latencies to `into`.
    pub async fn sequential(
        &mut self,
        count: usize,
        marks: &mut UnboundedReceiver<Mark>,
        into: &mut Sequential,
    ) -> anyhow::Result<()> {
        for _ in 0..count {
            let plan_id = self.next_plan_id("seq");
            let (latency, steps) = self.one(&plan_id, marks).await?;
            into.latencies.push(latency);
            if probe::profiling() {
                into.steps.push(steps);
            }
        }
        Ok(())
    }

    async fn one(
        &mut self,
        plan_id: &str,
        marks: &mut UnboundedReceiver<Mark>,
    ) -> anyhow::Result<(Duration, Vec<(String, Duration)>)> {
        let client_order_id = ClientOrderId::for_plan(plan_id).to_string();
        let mut steps = Vec::new();
        let sent = Instant::now();
        self.publisher.publish(plan_id).await?;
        steps.push(("publisher: entry written".to_owned(), sent.elapsed()));

        let mut accepted = None;
        let mut settled = false;
        while accepted.is_none() || !settled {
            let mark = tokio::time::timeout(PLAN_DEADLINE, marks.recv())
                .await
                .with_context(|| format!("{plan_id} not settled in time"))?
                .context("probe gone")?;
            match mark {
                Mark::Accepted {
                    client_order_id: id,
                    at,
                } => {
                    anyhow::ensure!(id == client_order_id, "unexpected order {id}");
                    accepted = Some(at - sent);
                    steps.push(("paper: order filled".to_owned(), at - sent));
                }
                Mark::Settled {
                    plan_id: id,
                    success,
                    at,
                } => {
                    anyhow::ensure!(id == plan_id, "unexpected plan {id} settled");
                    anyhow::ensure!(success, "{plan_id} did not succeed");
                    settled = true;
                    steps.push(("settled".to_owned(), at - sent));
                }
                Mark::Stage { label, at } if at >= sent => steps.push((label, at - sent)),
                Mark::Stage { .. } => {}
            }
        }
        let accepted = accepted.context("no acceptance")?;
        Ok((accepted, steps))
    }

    /// Publishes `count` plans as fast as one connection allows and returns the rate at which
    /// their orders were accepted: plans over the time from the first send to the last fill.
    pub async fn burst(
        &mut self,
        count: usize,
        marks: &mut UnboundedReceiver<Mark>,
    ) -> anyhow::Result<f64> {
        let plan_ids: Vec<String> = (0..count).map(|_| self.next_plan_id("burst")).collect();
        let deadline = PLAN_DEADLINE + Duration::from_millis(10) * count as u32;
        let start = Instant::now();
        let collect = async {
            let (mut accepted, mut settled, mut last) = (0, 0, start);
            while accepted < count || settled < count {
                match marks.recv().await.context("probe gone")? {
                    Mark::Accepted { at, .. } => {
                        accepted += 1;
                        last = last.max(at);
                    }
                    Mark::Settled {
                        success, plan_id, ..
                    } => {
                        anyhow::ensure!(success, "{plan_id} did not succeed");
                        settled += 1;
                    }
                    Mark::Stage { .. } => {}
                }
            }
            Ok(last)
        };
        let (published, last) = tokio::time::timeout(deadline, async {
            tokio::join!(self.publisher.publish_all(&plan_ids), collect)
        })
        .await
        .context("burst not cleared in time")?;
        published?;
        let elapsed = (last? - start).as_secs_f64();
        Ok(count as f64 / elapsed)
    }

    /// Forgets the marks of the setup (the order that opened the position), then sends the
    /// warmup plans and forgets their timings too.
    pub async fn warm_up(&mut self, marks: &mut UnboundedReceiver<Mark>) -> anyhow::Result<()> {
        while marks.try_recv().is_ok() {}
        self.sequential(WARMUP, marks, &mut Sequential::default())
            .await
    }

    /// Stops the consumer, then the servers.
    pub async fn stop(self) -> anyhow::Result<()> {
        match self.consumer {
            Consumer::Worker(worker) => worker.stop().await?,
            Consumer::Minimal { trigger, task } => {
                trigger.fire();
                task.await.context("consumer task")??;
            }
        }
        Ok(())
    }
}
