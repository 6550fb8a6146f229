//! Errors of the exchange client, sorted by what the caller may do next.

use std::time::Duration;

use thiserror::Error;

use crate::quantity::QuantityError;

/// Exchange error codes the client reacts to.
pub mod code {
    /// Too many requests.
    pub const TOO_MANY_REQUESTS: i64 = -1003;
    /// Unexpected response from the message bus; execution status unknown.
    pub const UNEXPECTED_RESPONSE: i64 = -1006;
    /// Backend timeout; send and execution status unknown.
    pub const BACKEND_TIMEOUT: i64 = -1007;
    /// Request throttled by system protection.
    pub const THROTTLED: i64 = -1008;
    /// Timestamp outside `recvWindow`, or too far ahead of server time.
    pub const INVALID_TIMESTAMP: i64 = -1021;
    /// Signature does not match.
    pub const INVALID_SIGNATURE: i64 = -1022;
    /// Order does not exist.
    pub const NO_SUCH_ORDER: i64 = -2013;
    /// API key format invalid.
    pub const BAD_API_KEY_FORMAT: i64 = -2014;
    /// Invalid API key, IP, or permissions.
    pub const REJECTED_API_KEY: i64 = -2015;
    /// Margin is insufficient.
    pub const MARGIN_INSUFFICIENT: i64 = -2019;
    /// Reduce-only order rejected.
    pub const REDUCE_ONLY_REJECTED: i64 = -2022;
    /// Order's position side does not match the account's mode.
    pub const POSITION_SIDE_MISMATCH: i64 = -4061;
    /// Client order id already held by an open order.
    pub const DUPLICATE_CLIENT_ORDER_ID: i64 = -4116;
}

/// What a caller may do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request was refused and sending it again unchanged will be refused again.
    Definitive,
    /// The request was not executed; it may be sent again later.
    Retryable,
    /// The request may or may not have been executed. An order must be looked up by its client
    /// order id before anything is sent again.
    UnknownOutcome,
}

/// Everything that can go wrong talking to the exchange.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The exchange answered with an error that will not change on resend, for example -2022
    /// (reduce-only rejected), -2019 (margin) or -4061 (position side).
    #[error("exchange rejected the request: http {status}, code {code}: {msg}")]
    Rejected { status: u16, code: i64, msg: String },

    /// The request was refused before execution: rate limit (429, 418), throttling, a stale
    /// timestamp that a clock resync did not cure, a connection that never opened, or a read
    /// that failed.
    #[error("exchange refused for now: http {status}, code {code:?}: {msg}")]
    Retryable {
        status: u16,
        code: Option<i64>,
        msg: String,
        retry_after: Option<Duration>,
    },

    /// Nothing was sent: the exchange asked for a pause (`Retry-After` on an earlier answer,
    /// usually a 429 or 418) and `remaining` of it is left. Every request of the client waits
    /// it out, since the exchange counts them all against the same limit.
    #[error("holding requests back for another {remaining:?}, as the exchange asked")]
    HoldingOff { remaining: Duration },

    /// An order request was sent and no definite answer came back: timeout, dropped
    /// connection, HTTP 5xx, -1006 or -1007.
    #[error("outcome of order {client_order_id} is unknown: {detail}")]
    UnknownOutcome {
        client_order_id: String,
        detail: String,
    },

    /// The requested quantity cannot be sent under the symbol's lot filters.
    #[error("quantity refused before sending: {0}")]
    Quantity(#[from] QuantityError),

    /// The symbol is not in the exchange information.
    #[error("symbol {0} is not listed by the exchange")]
    UnknownSymbol(String),

    /// A success response that could not be understood.
    #[error("could not decode {endpoint} response: {detail}")]
    Decode {
        endpoint: &'static str,
        detail: String,
    },

    /// Local configuration is missing or invalid (credentials, base URL).
    #[error("configuration: {0}")]
    Config(String),
}

impl ExchangeError {
    /// The class that tells the caller whether it may resend.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::Retryable { .. } | Self::HoldingOff { .. } => ErrorClass::Retryable,
            Self::UnknownOutcome { .. } => ErrorClass::UnknownOutcome,
            Self::Rejected { .. }
            | Self::Quantity(_)
            | Self::UnknownSymbol(_)
            | Self::Decode { .. }
            | Self::Config(_) => ErrorClass::Definitive,
        }
    }

    /// How long the exchange asked the client to wait before its next request, when it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::HoldingOff { remaining } => Some(*remaining),
            _ => None,
        }
    }

    /// The exchange's error code, when the exchange sent one.
    pub fn exchange_code(&self) -> Option<i64> {
        match self {
            Self::Rejected { code, .. } => Some(*code),
            Self::Retryable { code, .. } => *code,
            _ => None,
        }
    }
}

/// Whether the request changes state on the exchange. Only such requests can end in an
/// unknown outcome; a failed read is simply retryable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    Read,
    Write,
}

/// Sorts an error answer (non-2xx status with an optional `{code,msg}` body) into a class.
pub(crate) fn classify(
    effect: Effect,
    client_order_id: Option<&str>,
    status: u16,
    code: Option<i64>,
    msg: String,
    retry_after: Option<Duration>,
) -> ExchangeError {
    let unknown_code = matches!(
        code,
        Some(code::UNEXPECTED_RESPONSE | code::BACKEND_TIMEOUT)
    );
    // 408 is the gateway giving up on the backend, 5xx is the exchange's own failure: in both
    // the order may have reached the matching engine.
    let unknown_status = status == 408 || status >= 500;
    if unknown_code || unknown_status {
        return match effect {
            Effect::Write => ExchangeError::UnknownOutcome {
                client_order_id: client_order_id.unwrap_or_default().to_owned(),
                detail: format!("http {status}, code {code:?}: {msg}"),
            },
            Effect::Read => ExchangeError::Retryable {
                status,
                code,
                msg,
                retry_after,
            },
        };
    }

    let retryable_code = matches!(
        code,
        Some(code::TOO_MANY_REQUESTS | code::THROTTLED | code::INVALID_TIMESTAMP)
    );
    if status == 429 || status == 418 || retryable_code {
        return ExchangeError::Retryable {
            status,
            code,
            msg,
            retry_after,
        };
    }

    ExchangeError::Rejected {
        status,
        code: code.unwrap_or(0),
        msg,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class_of(effect: Effect, status: u16, code: Option<i64>) -> ErrorClass {
        classify(effect, Some("id"), status, code, String::new(), None).class()
    }

    #[test]
    fn order_errors_sort_into_the_three_classes() {
        use ErrorClass::*;
        assert_eq!(class_of(Effect::Write, 400, Some(-2022)), Definitive);
        assert_eq!(class_of(Effect::Write, 400, Some(-2019)), Definitive);
        assert_eq!(class_of(Effect::Write, 400, Some(-4061)), Definitive);
        assert_eq!(class_of(Effect::Write, 429, Some(-1003)), Retryable);
        assert_eq!(class_of(Effect::Write, 418, Some(-1003)), Retryable);
        assert_eq!(class_of(Effect::Write, 400, Some(-1021)), Retryable);
        assert_eq!(class_of(Effect::Write, 503, None), UnknownOutcome);
        assert_eq!(class_of(Effect::Write, 408, Some(-1007)), UnknownOutcome);
        assert_eq!(class_of(Effect::Write, 400, Some(-1006)), UnknownOutcome);
    }

    #[test]
    fn failed_reads_are_never_unknown_outcomes() {
        assert_eq!(class_of(Effect::Read, 503, None), ErrorClass::Retryable);
        assert_eq!(
            class_of(Effect::Read, 408, Some(-1007)),
            ErrorClass::Retryable
        );
    }
}
