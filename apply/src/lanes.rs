//! Working on the plans of one read: one lane per symbol, lanes side by side.
//!
//! Plans of one symbol go strictly one after another in stream order, since each one's
//! position check must see the effect of the close before it. Plans of different symbols touch
//! different positions and HOLD leases, so up to `concurrency` symbols are worked on at once.
//! Every plan is still recorded and acknowledged on its own, when its outcome is known.
//!
//! Within a lane, recording a plan's outcome overlaps with the next plan: the close is done
//! once its order is answered, and the next plan's checks read the exchange, not the record.
//! Records still land one at a time and in stream order, and a plan whose record has not
//! landed when the worker dies is pending with its claim, as after any crash before the write.

use std::sync::Arc;

use reconcile_worker::Shutdown;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::error;

use crate::execute::Executor;
use crate::plan::{Entry, Identity};

/// Splits `entries` into one lane per symbol, each in stream order, lanes in the order their
/// first entry came. Entries that name no readable symbol share a lane of their own: they can
/// only be refused.
pub fn lanes(entries: Vec<Entry>) -> Vec<Vec<Entry>> {
    let mut keys: Vec<Option<String>> = Vec::new();
    let mut lanes: Vec<Vec<Entry>> = Vec::new();
    for entry in entries {
        let symbol = Identity::of(&entry).symbol;
        match keys.iter().position(|key| *key == symbol) {
            Some(lane) => lanes[lane].push(entry),
            None => {
                keys.push(symbol);
                lanes.push(vec![entry]);
            }
        }
    }
    lanes
}

/// Handles `entries`, up to `concurrency` symbols at once; with a concurrency of one, all in
/// stream order. Returns how many were left pending,
/// including those not started because of shutdown.
pub(crate) async fn handle(
    executor: &mut Executor,
    entries: Vec<Entry>,
    concurrency: usize,
    shutdown: &Shutdown,
) -> usize {
    if concurrency <= 1 {
        return run_lane(executor, entries, shutdown).await;
    }
    let mut lanes = lanes(entries);
    if lanes.len() == 1 {
        return run_lane(executor, lanes.remove(0), shutdown).await;
    }

    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for lane in lanes.drain(..) {
        let (mut executor, shutdown) = (executor.clone(), shutdown.clone());
        let permits = Arc::clone(&permits);
        let size = lane.len();
        tasks.spawn(async move {
            // The semaphore is never closed, so acquiring fails only if that changes.
            let Ok(_permit) = permits.acquire_owned().await else {
                return size;
            };
            run_lane(&mut executor, lane, &shutdown).await
        });
    }
    let mut left = 0;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(lane_left) => left += lane_left,
            Err(err) => {
                // The lane's entries stay pending and come back from the group's history.
                error!(error = %err, "plan task failed");
                left += 1;
            }
        }
    }
    left
}

/// Handles one symbol's entries in order. Returns how many were left pending. A plan left
/// pending does not hold up the later plans of its symbol, as before: each checks the
/// position as it then is.
async fn run_lane(executor: &mut Executor, lane: Vec<Entry>, shutdown: &Shutdown) -> usize {
    let mut left = 0;
    // The record of the previous plan, written while this one is worked on, with its plan id.
    let mut recording: Option<(Option<String>, JoinHandle<bool>)> = None;
    for (started, entry) in lane.iter().enumerate() {
        if shutdown.is_triggered() {
            left += lane.len() - started;
            break;
        }
        // A second entry of the same plan waits for the first one's record, so that it reads
        // the plan as done rather than as claimed by an attempt still in flight.
        let plan_id = Identity::of(entry).plan_id;
        if recording.as_ref().is_some_and(|(id, _)| *id == plan_id) {
            if let Some((_, previous)) = recording.take() {
                left += usize::from(!recorded(previous).await);
            }
        }
        let Ok(settled) = executor.decide(entry).await else {
            left += 1;
            continue;
        };
        if let Some((_, previous)) = recording.take() {
            left += usize::from(!recorded(previous).await);
        }
        let mut recorder = executor.clone();
        let task = tokio::spawn(async move { recorder.conclude(settled).await.is_ok() });
        recording = Some((plan_id, task));
    }
    if let Some((_, previous)) = recording.take() {
        left += usize::from(!recorded(previous).await);
    }
    left
}

/// Whether a record task wrote its outcome; a task that failed leaves its entry pending.
async fn recorded(task: JoinHandle<bool>) -> bool {
    match task.await {
        Ok(written) => written,
        Err(err) => {
            error!(error = %err, "record task failed");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, symbol: Option<&str>) -> Entry {
        let fields = symbol.map(|s| vec![(b"symbol".to_vec(), s.as_bytes().to_vec())]);
        Entry {
            id: id.into(),
            fields,
        }
    }

    fn ids(lane: &[Entry]) -> Vec<&str> {
        lane.iter().map(|e| e.id.as_str()).collect()
    }

    #[test]
    fn lanes_keep_stream_order_within_each_symbol() {
        let entries = vec![
            entry("1-0", Some("BTCUSDT")),
            entry("2-0", Some("ETHUSDT")),
            entry("3-0", Some("BTCUSDT")),
            entry("4-0", None),
            entry("5-0", Some("ETHUSDT")),
            entry("6-0", Some("BTCUSDT")),
            entry("7-0", None),
        ];
        let lanes = lanes(entries);
        let lanes: Vec<Vec<&str>> = lanes.iter().map(|l| ids(l)).collect();
        assert_eq!(
            lanes,
            vec![
                vec!["1-0", "3-0", "6-0"],
                vec!["2-0", "5-0"],
                vec!["4-0", "7-0"],
            ]
        );
    }

    #[test]
    fn one_symbol_is_one_lane() {
        let entries = (1..=5)
            .map(|i| entry(&format!("{i}-0"), Some("BTCUSDT")))
            .collect();
        assert_eq!(lanes(entries).len(), 1);
    }
}
