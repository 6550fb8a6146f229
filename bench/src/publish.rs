//! Publishing close plans: through the module (`RECONCILE.XADDSIGNED`, the MAC computed inside
//! Redis), or as the replaced design did (the publisher computes the MAC and uses `XADD`).
//!
//! Both write the same thirteen fields the engine writes, and the baseline appends the same
//! `kid`, `signed_ms` and `hmac` trailer the module appends, computed by the same MAC code.

use reconcile_core::keyring::Keyring;
use reconcile_core::mac;
use reconcile_exchange::host_now_ms;
use reconcile_tests::STREAM;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Pipeline, RedisResult};

use crate::setup::SYMBOL;

/// How much of the position each plan closes: the symbol's step.
pub const STEP: &str = "0.001";
/// About how many entries the stream keeps, as the engine trims it.
const MAXLEN: usize = 100_000;
/// Plans per pipeline in a burst.
const BURST_PIPELINE: usize = 64;

/// The fields of a plan closing one step of the long position, dated now.
pub fn plan(plan_id: &str) -> Vec<(&'static str, String)> {
    let fixed = [
        ("decision", "RECONCILE_CLOSE"),
        ("symbol", SYMBOL),
        ("side", "SELL"),
        ("type", "MARKET"),
        ("qty", STEP),
        ("reduceOnly", "true"),
        ("reason", "reconcile_drift"),
        ("source", "p3.4"),
        ("signature", "a1b2c3d4e5f6"),
        ("exchange_amt", "100"),
        ("ledger_amt", "99.999"),
    ];
    std::iter::once(("plan_id", plan_id.to_owned()))
        .chain(fixed.into_iter().map(|(f, v)| (f, v.to_owned())))
        .chain([("ts", host_now_ms().to_string())])
        .collect()
}

/// Writes plans to the plan stream, one way or the other.
pub enum Publisher {
    /// `RECONCILE.XADDSIGNED`: the module signs.
    Module(MultiplexedConnection),
    /// The publisher signs with the first key of `ring` and writes with `XADD`.
    ClientSigned {
        con: MultiplexedConnection,
        ring: Keyring,
    },
}

impl Publisher {
    /// Publishes one plan and waits for the entry ID.
    pub async fn publish(&mut self, plan_id: &str) -> RedisResult<String> {
        let cmd = self.command(plan_id);
        cmd.query_async(self.con()).await
    }

    /// Publishes `plan_ids` as fast as one connection allows: pipelined, in order.
    pub async fn publish_all(&mut self, plan_ids: &[String]) -> RedisResult<()> {
        for chunk in plan_ids.chunks(BURST_PIPELINE) {
            let mut pipe = Pipeline::with_capacity(chunk.len());
            for plan_id in chunk {
                pipe.add_command(self.command(plan_id)).ignore();
            }
            pipe.query_async::<()>(self.con()).await?;
        }
        Ok(())
    }

    fn con(&mut self) -> &mut MultiplexedConnection {
        match self {
            Publisher::Module(con) | Publisher::ClientSigned { con, .. } => con,
        }
    }

    fn command(&self, plan_id: &str) -> Cmd {
        let fields = plan(plan_id);
        let name = match self {
            Publisher::Module(_) => "RECONCILE.XADDSIGNED",
            Publisher::ClientSigned { .. } => "XADD",
        };
        let mut cmd = redis::cmd(name);
        cmd.arg(STREAM).arg("MAXLEN").arg("~").arg(MAXLEN).arg("*");
        for (field, value) in &fields {
            cmd.arg(*field).arg(value);
        }
        if let Publisher::ClientSigned { ring, .. } = self {
            let key = ring.signing();
            let signed_ms = host_now_ms().to_string();
            let flat: Vec<&[u8]> = fields
                .iter()
                .flat_map(|(f, v)| [f.as_bytes(), v.as_bytes()])
                .collect();
            let kid = key.kid().as_bytes();
            let tag = mac::sign(
                key.mac(),
                kid,
                STREAM.as_bytes(),
                signed_ms.as_bytes(),
                &flat,
            );
            cmd.arg(mac::KID_FIELD)
                .arg(kid)
                .arg(mac::SIGNED_MS_FIELD)
                .arg(&signed_ms)
                .arg(mac::HMAC_FIELD)
                .arg(&tag[..]);
        }
        cmd
    }
}
