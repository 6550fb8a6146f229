//! Serves a Prometheus registry over HTTP: `GET /metrics` in the text format and
//! `GET /healthz`, until shutdown.

use std::io;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::shutdown::Shutdown;

/// Binds `addr` and serves `registry` in a background task until `shutdown` fires.
///
/// Returns the bound address (useful with port 0) and the task, which ends with the server.
pub async fn spawn(
    addr: SocketAddr,
    registry: Registry,
    shutdown: Shutdown,
) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tracing::info!(addr = %bound, "serving metrics");
    let task = tokio::spawn(serve(listener, registry, shutdown));
    Ok((bound, task))
}

/// Serves `registry` on `listener` until `shutdown` fires.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: Shutdown,
) -> io::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(registry);
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

/// The registry in Prometheus's text exposition format.
pub fn render(registry: &Registry) -> Result<String, prometheus::Error> {
    let mut buffer = Vec::new();
    TextEncoder::new().encode(&registry.gather(), &mut buffer)?;
    String::from_utf8(buffer).map_err(|err| prometheus::Error::Msg(err.to_string()))
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    match render(&registry) {
        Ok(text) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            text,
        ),
        Err(err) => {
            tracing::error!(error = %err, "encoding metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain")],
                "encoding metrics failed\n".to_string(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use prometheus::IntCounter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(addr).await.expect("connecting");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("writing");
        let mut response = String::new();
        stream.read_to_string(&mut response).await.expect("reading");
        response
    }

    #[tokio::test]
    async fn serves_metrics_and_health_then_stops_on_shutdown() {
        let registry = Registry::new();
        let counter = IntCounter::new("test_events_total", "events seen").unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);
        let (trigger, shutdown) = Shutdown::new();
        let (addr, task) = spawn(([127, 0, 0, 1], 0).into(), registry, shutdown)
            .await
            .expect("binding");

        let metrics = get(addr, "/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.contains("test_events_total 3"), "{metrics}");
        let health = get(addr, "/healthz").await;
        assert!(
            health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
            "{health}"
        );
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));

        trigger.fire();
        task.await.expect("server task").expect("server result");
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }
}
