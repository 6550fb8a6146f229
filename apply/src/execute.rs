//! One plan, from a verified entry to a final outcome or a reason to try again later.
//!
//! The order of steps is the point: the dedupe claim is written with the first read of the
//! plan's state, every invariant is checked before anything is sent, and the outcome is
//! recorded, the plan marked done, the HOLD lease renewed and the entry acknowledged together,
//! after the exchange answered. An attempt that cannot finish leaves the entry pending and its claim in
//! place, and the next attempt starts by asking the exchange for the order.

use std::sync::Arc;

use reconcile_exchange::{
    code, host_now_ms, Client, ClientOrderId, ClosePlan, CloseReport, ErrorClass, ExchangeError,
    Order, Position, PositionMode, PositionSide, PriorLookup,
};
use reconcile_worker::redis::Connection;
use redis::RedisError;
use tokio::time::Instant;
use tracing::{debug, error, warn};

use crate::config::Config;
use crate::dedupe::{self, IfNoOrder, Record, Step, Timing, UnsentClaims};
use crate::invariants::{check_execution, check_plan, Approved, Exposure, Plan, Refusal};
use crate::metrics::{Metrics, RetryCause};
use crate::mode::ModeCache;
use crate::outcome::{OrderFacts, Outcome, Status};
use crate::plan::{self, Entry, Identity};
use crate::store::{self, Finish};

/// Why an attempt left its entry pending.
#[derive(Debug)]
pub(crate) struct Pending {
    pub cause: RetryCause,
    pub detail: String,
}

impl From<RedisError> for Pending {
    fn from(err: RedisError) -> Pending {
        Pending {
            cause: RetryCause::Redis,
            detail: err.to_string(),
        }
    }
}

impl From<ExchangeError> for Pending {
    fn from(err: ExchangeError) -> Pending {
        let cause = match err.class() {
            ErrorClass::UnknownOutcome => RetryCause::UnknownOutcome,
            _ => RetryCause::Exchange,
        };
        Pending {
            cause,
            detail: err.to_string(),
        }
    }
}

/// A final outcome, and whether this attempt holds the plan's dedupe claim (so that the
/// record is turned to done with it).
pub(crate) struct Settled {
    outcome: Outcome,
    claimed: bool,
}

/// The position mode an order is to be sent in, and whether it came from the cache (and may
/// be out of date) rather than from a read made for this plan.
#[derive(Debug, Clone, Copy)]
struct ModeRead {
    mode: PositionMode,
    cached: bool,
}

/// A plan checked against the state read for it: cleared with the mode to send it in, or
/// refused.
enum Checked {
    Approved(Approved, ModeRead),
    Refused(Box<Outcome>),
}

/// What the exchange says about a symbol just before executing.
struct ExchangeState {
    mode: ModeRead,
    rows: Vec<Position>,
}

/// What one attempt needs. Clones share the connections, the exchange client and the mode
/// cache; the worker hands one to each symbol it works on at a time.
#[derive(Clone)]
pub(crate) struct Executor {
    pub config: Arc<Config>,
    pub redis: Connection,
    pub exchange: Arc<Client>,
    pub metrics: Arc<Metrics>,
    pub modes: Arc<ModeCache>,
    pub unsent: Arc<UnsentClaims>,
}

impl Executor {
    /// Takes one entry as far as it can go, the order included, without writing its outcome:
    /// [`Executor::conclude`] does that. `Err` leaves the entry pending, to be tried again.
    pub async fn decide(&mut self, entry: &Entry) -> Result<Settled, Pending> {
        let settled = self.settle(entry).await.inspect_err(|pending| {
            warn!(entry_id = %entry.id, cause = pending.cause.label(), error = %pending.detail,
                "plan left pending");
            self.metrics.retry(pending.cause);
        })?;
        if let Some(plan_id) = &settled.outcome.plan_id {
            self.unsent.forget(plan_id);
        }
        Ok(settled)
    }

    /// Records the outcome [`Executor::decide`] reached and acknowledges the entry. `Err`
    /// leaves the entry pending.
    pub async fn conclude(&mut self, settled: Settled) -> Result<Status, Pending> {
        let status = settled.outcome.status;
        if let Err(err) = self.record(&settled).await {
            error!(entry_id = %settled.outcome.entry_id, error = %err, "recording outcome failed");
            self.metrics.retry(RetryCause::Redis);
            return Err(err.into());
        }
        Ok(status)
    }

    async fn settle(&mut self, entry: &Entry) -> Result<Settled, Pending> {
        let now = host_now_ms();
        let raw = match plan::decode(entry) {
            Ok(raw) => raw,
            Err(why) => {
                let identity = Identity::of(entry);
                let (plan_id, symbol) = (identity.plan_id.as_deref(), identity.symbol.as_deref());
                return Ok(unclaimed(Outcome::refused(&entry.id, plan_id, symbol, why)));
            }
        };
        let plan = match check_plan(&raw, &self.config.limits, now) {
            Ok(plan) => plan,
            Err(why) => {
                let outcome =
                    Outcome::refused(&entry.id, Some(&raw.plan_id), Some(&raw.symbol), why);
                return Ok(unclaimed(outcome));
            }
        };

        // The claim rides on the dedupe record's read (`SET NX GET`), beside the HOLD lease,
        // while the exchange's position rows are read. Once the claim is this attempt's, the
        // order lookup the close starts with goes out as well, instead of after the checks.
        // Nothing is sent before the checks pass, and a plan they refuse is recorded done under
        // its claim. A dry run claims nothing and looks nothing up.
        let key = self.config.dedupe_key(&plan.plan_id);
        let claim = (!self.config.dry_run).then(|| Record::Executing {
            consumer: self.config.consumer.clone(),
            since_ms: now,
        });
        let (ttl, lease) = (self.config.dedupe_ttl, self.config.claim_lease);
        let (redis, exchange, modes) = (&mut self.redis, &self.exchange, &self.modes);
        let unsent = &self.unsent;
        let claim_and_look_up = async {
            let claiming = claim.as_ref().map(|c| (c, ttl));
            let stored = store::plan_state(redis, &key, &plan.symbol, claiming).await?;
            if let (true, Some(claim)) = (stored.claimed, &claim) {
                unsent.note(&plan.plan_id, claim.clone(), now, lease);
            }
            // A claim this process wrote and sent nothing under is its own to go on with: no
            // one else can have sent under it, so there is nothing to wait for.
            let own = stored.claimed
                || (stored.record.as_ref())
                    .is_some_and(|record| unsent.holds(&plan.plan_id, record));
            let prior = if own {
                // A failed lookup here costs nothing: the close makes its own.
                (exchange.look_up_close(&plan.symbol, &plan.plan_id).await)
                    .inspect_err(
                        |err| debug!(error = %err, "order lookup ahead of the close failed"),
                    )
                    .ok()
            } else {
                None
            };
            Ok::<_, RedisError>((stored, own, prior))
        };
        let (claimed, exchange_state) = tokio::join!(
            claim_and_look_up,
            read_exchange(exchange, modes, &plan.symbol),
        );
        let (stored, own, prior) = claimed?;
        // The order exists already (its claim was lost with Redis state, say): the plan is
        // settled, whatever the position now looks like.
        if let Some(order) = prior.as_ref().and_then(|p| p.found()) {
            return Ok(self.found(&plan, order));
        }
        let timing = Timing {
            settle: self.config.exchange_settle,
            lease: self.config.claim_lease,
        };
        let step = if own {
            Step::Claim
        } else {
            dedupe::step(stored.record.as_ref(), &self.config.consumer, now, timing)
        };
        let (checked, claimed) = match step {
            Step::Claim => (self.check_against(plan, stored.hold, exchange_state?), own),
            Step::Duplicate => {
                let mut outcome = self.outcome(&plan, Status::Duplicate);
                outcome.detail = stored.record.map(|r| r.to_string());
                return Ok(unclaimed(outcome));
            }
            Step::Settle(if_no_order) => {
                if let Some(settled) = self.look_up(&plan).await? {
                    return Ok(settled);
                }
                let claimed = self.reclaim(&plan, if_no_order).await?;
                // The state read above came before the lookup; read it again after it.
                (self.check_execution(plan).await?, claimed)
            }
        };
        let (approved, mode) = match checked {
            Checked::Approved(approved, mode) => (approved, mode),
            Checked::Refused(outcome) => {
                return Ok(Settled {
                    outcome: *outcome,
                    claimed,
                })
            }
        };
        if self.config.dry_run {
            return self.dry_run(&approved).await;
        }
        // Every path that gets here outside a dry run holds the claim: it was written with the
        // first read, or resumed, or taken over. Nothing is ever sent without one.
        if !claimed {
            return Err(claimed_elsewhere("the plan is not claimed by this attempt"));
        }
        // From here an order may be on its way: the claim is no longer one without an order.
        self.unsent.forget(&approved.plan.plan_id);
        self.close(&approved, mode, prior).await
    }

    /// Reads the HOLD lease and the exchange position, and checks the plan against them.
    async fn check_execution(&mut self, plan: Plan) -> Result<Checked, Pending> {
        let (redis, exchange, modes) = (&mut self.redis, &self.exchange, &self.modes);
        let (hold, state) = tokio::join!(
            store::hold_present(redis, &plan.symbol),
            read_exchange(exchange, modes, &plan.symbol),
        );
        Ok(self.check_against(plan, hold?, state?))
    }

    /// Checks the plan against the HOLD lease and the exchange state read for it. The position
    /// mode the rows were read in is the one the order is sent in.
    fn check_against(&self, plan: Plan, hold: bool, state: ExchangeState) -> Checked {
        let mode = state.mode;
        let exposure = Exposure::from_rows(&plan.symbol, mode.mode, &state.rows);
        let max_age = self.config.limits.max_age;
        debug!(plan_id = %plan.plan_id, hold, long = %exposure.long, short = %exposure.short,
            "execution state read");
        let refused = |plan: &Plan, why: Refusal| {
            let mut outcome =
                Outcome::refused(&plan.entry_id, Some(&plan.plan_id), Some(&plan.symbol), why);
            outcome.side = Some(plan.side);
            outcome.qty = Some(plan.qty);
            outcome
        };
        match check_execution(plan.clone(), hold, &exposure, max_age, host_now_ms()) {
            Ok(approved) => Checked::Approved(approved, mode),
            Err(why) => Checked::Refused(Box::new(refused(&plan, why))),
        }
    }

    /// Asks the exchange for the plan's order after an earlier claim.
    async fn look_up(&mut self, plan: &Plan) -> Result<Option<Settled>, Pending> {
        let id = ClientOrderId::for_plan(&plan.plan_id);
        let Some(order) = self.exchange.query_order(&plan.symbol, &id).await? else {
            return Ok(None);
        };
        Ok(Some(self.found(plan, &order)))
    }

    /// The plan settled by its order, found on the exchange under the plan's claim.
    fn found(&self, plan: &Plan, order: &Order) -> Settled {
        let mut outcome = self.outcome(plan, Status::of_order(order.status));
        outcome.order = Some(OrderFacts::of(order, true));
        Settled {
            outcome,
            claimed: true,
        }
    }

    /// Makes an earlier claim on the plan this attempt's own, when the lookup found no order.
    async fn reclaim(&mut self, plan: &Plan, if_no_order: IfNoOrder) -> Result<bool, Pending> {
        match if_no_order {
            IfNoOrder::Resume => Ok(true),
            IfNoOrder::Wait => Err(claimed_elsewhere("claim too recent to settle")),
            IfNoOrder::TakeOver { stale } => {
                let record = Record::Executing {
                    consumer: self.config.consumer.clone(),
                    since_ms: host_now_ms(),
                };
                let ttl = self.config.dedupe_ttl;
                let key = self.config.dedupe_key(&plan.plan_id);
                if store::take_over(&mut self.redis, &key, &stale, &record, ttl).await? {
                    warn!(plan_id = %plan.plan_id, previous = %stale, "took over abandoned claim");
                    Ok(true)
                } else {
                    Err(claimed_elsewhere("claim changed while taking it over"))
                }
            }
        }
    }

    async fn dry_run(&mut self, approved: &Approved) -> Result<Settled, Pending> {
        let plan = &approved.plan;
        let filters = self.exchange.symbol_filters(&plan.symbol).await?;
        let mut outcome = self.outcome(plan, Status::DryRun);
        match filters.market_quantity(plan.qty) {
            Ok(qty) => {
                outcome.order = Some(OrderFacts {
                    order_id: None,
                    client_order_id: ClientOrderId::for_plan(&plan.plan_id).to_string(),
                    qty: qty.value(),
                    executed_qty: None,
                    avg_price: None,
                    found_by_lookup: false,
                });
                outcome.detail = Some(format!("would close {} of {}", qty, approved.position));
            }
            Err(err) => outcome.detail = Some(format!("would be refused: {err}")),
        }
        Ok(unclaimed(outcome))
    }

    /// Places the close under the plan's claim. An order refused for its position side in a
    /// cached mode is nothing executed: the mode is dropped, the plan checked again against a
    /// fresh mode and position, and sent once more.
    async fn close(
        &mut self,
        approved: &Approved,
        mode: ModeRead,
        prior: Option<PriorLookup>,
    ) -> Result<Settled, Pending> {
        let plan = &approved.plan;
        let mut sent = self.send_close(approved, mode.mode, prior).await;
        if mode.cached && refused_for_position_side(&sent) {
            self.modes.drop_reading(Instant::now());
            warn!(plan_id = %plan.plan_id, symbol = %plan.symbol, cached = ?mode.mode,
                "order refused for its position side; reading the position mode again");
            match self.check_execution(plan.clone()).await? {
                Checked::Approved(approved, mode) => {
                    sent = self.send_close(&approved, mode.mode, None).await;
                }
                Checked::Refused(outcome) => {
                    return Ok(Settled {
                        outcome: *outcome,
                        claimed: true,
                    })
                }
            }
        }
        match sent {
            Ok(report) => {
                let mut outcome = self.outcome(plan, Status::of_order(report.order.status));
                outcome.order = Some(OrderFacts::of(&report.order, report.found_by_lookup));
                if let Some(latency) = outcome.latency_ms {
                    self.metrics.plan_to_order(latency.max(0) as f64 / 1000.0);
                }
                Ok(Settled {
                    outcome,
                    claimed: true,
                })
            }
            Err(err) if err.class() == ErrorClass::Definitive => {
                let mut outcome = self.outcome(plan, Status::Rejected);
                outcome.detail = Some(err.to_string());
                Ok(Settled {
                    outcome,
                    claimed: true,
                })
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Sends the close, starting from `prior` when the order was looked up ahead.
    async fn send_close(
        &self,
        approved: &Approved,
        mode: PositionMode,
        prior: Option<PriorLookup>,
    ) -> Result<CloseReport, ExchangeError> {
        let plan = &approved.plan;
        let close = ClosePlan {
            plan_id: plan.plan_id.clone(),
            symbol: plan.symbol.clone(),
            side: plan.side,
            quantity: plan.qty,
        };
        match prior {
            Some(prior) => self.exchange.close_after(&close, mode, prior).await,
            None => self.exchange.close(&close, mode).await,
        }
    }

    /// Writes the outcome, then logs and counts it.
    async fn record(&mut self, settled: &Settled) -> Result<(), RedisError> {
        let config = Arc::clone(&self.config);
        let outcome = &settled.outcome;
        let plan_id = outcome.plan_id.as_deref().unwrap_or_default();
        let symbol = outcome.symbol.as_deref().unwrap_or_default();
        let renew = outcome.status == Status::Success;
        let finish = Finish {
            stream: &config.stream,
            group: &config.group,
            entry_id: &outcome.entry_id,
            result_stream: &config.result_stream,
            result_maxlen: config.result_maxlen,
            result: outcome.fields(&config.consumer, host_now_ms()),
            done: settled.claimed.then(|| {
                (
                    config.dedupe_key(plan_id),
                    outcome.done_record(),
                    config.dedupe_ttl,
                )
            }),
            renew_hold: renew.then_some((symbol, config.hold_ttl)),
        };
        let renewed = store::finish(&mut self.redis, finish).await?;
        if renew && !renewed {
            warn!(symbol, plan_id, "HOLD lease was gone; not renewed");
        }

        outcome.audit();
        self.metrics
            .settled(outcome.symbol.as_deref(), outcome.status, outcome.rule);
        Ok(())
    }

    fn outcome(&self, plan: &Plan, status: Status) -> Outcome {
        Outcome {
            entry_id: plan.entry_id.clone(),
            plan_id: Some(plan.plan_id.clone()),
            symbol: Some(plan.symbol.clone()),
            side: Some(plan.side),
            qty: Some(plan.qty),
            status,
            rule: None,
            detail: None,
            order: None,
            latency_ms: Some(host_now_ms().saturating_sub(plan.ts_ms)),
        }
    }
}

/// The account's position mode, from the cache while it is fresh, and the symbol's position
/// rows. A mode that has to be read is read together with the rows.
async fn read_exchange(
    exchange: &Client,
    modes: &ModeCache,
    symbol: &str,
) -> Result<ExchangeState, ExchangeError> {
    if let Some(mode) = modes.fresh(Instant::now()) {
        let rows = exchange.position_risk(Some(symbol)).await?;
        if rows_fit(mode, &rows) {
            let mode = ModeRead { mode, cached: true };
            return Ok(ExchangeState { mode, rows });
        }
        // The rows name legs of the other mode: the account was switched since the reading.
        warn!(symbol, cached = ?mode, "position rows do not fit the cached mode; reading it again");
        modes.drop_reading(Instant::now());
    }
    let mode = read_mode(exchange, modes);
    let (mode, rows) = tokio::join!(mode, exchange.position_risk(Some(symbol)));
    let mode = ModeRead {
        mode: mode?,
        cached: false,
    };
    Ok(ExchangeState { mode, rows: rows? })
}

/// Whether the exchange refused the order because its position side does not fit the
/// account's mode; nothing was executed then.
fn refused_for_position_side(sent: &Result<CloseReport, ExchangeError>) -> bool {
    matches!(sent, Err(e) if e.exchange_code() == Some(code::POSITION_SIDE_MISMATCH))
}

/// Whether position rows could have been read in `mode`: one-way mode has only `BOTH` rows,
/// hedge mode only `LONG` and `SHORT` rows.
fn rows_fit(mode: PositionMode, rows: &[Position]) -> bool {
    let hedge = mode == PositionMode::Hedge;
    rows.iter()
        .all(|row| (row.position_side == PositionSide::Both) != hedge)
}

/// Asks the exchange for the position mode and keeps the answer in the cache.
pub(crate) async fn read_mode(
    exchange: &Client,
    modes: &ModeCache,
) -> Result<PositionMode, ExchangeError> {
    let sent = Instant::now();
    let mode = exchange.position_mode().await?;
    modes.store(mode, sent);
    Ok(mode)
}

fn unclaimed(outcome: Outcome) -> Settled {
    Settled {
        outcome,
        claimed: false,
    }
}

fn claimed_elsewhere(detail: &str) -> Pending {
    Pending {
        cause: RetryCause::Claimed,
        detail: detail.into(),
    }
}
