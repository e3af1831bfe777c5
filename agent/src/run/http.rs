//! `/healthz` and `/metrics`, served until SIGTERM or Ctrl-C; SIGHUP asks for a reload.

use crate::metrics::Metrics;
use anyhow::{Context as _, Result};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

pub async fn serve_until_signal(http: &crate::config::Http, metrics: Arc<Metrics>) -> Result<()> {
    use axum::routing::get;
    let listen = http.listen;
    let max_lag = Duration::from_secs(http.max_detection_lag_seconds);
    let health = metrics.clone();
    let metrics_for_hup = metrics.clone();
    let app = axum::Router::new()
        .route(
            "/healthz",
            get(move || {
                let verdict = health.health(max_lag);
                async move {
                    match verdict {
                        Ok(()) => (axum::http::StatusCode::OK, "ok\n".to_owned()),
                        Err(why) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            format!("{why}\n"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let body = metrics.render();
                async move { ([("content-type", "text/plain; version=0.0.4")], body) }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics listener {listen}"))?;
    tracing::info!(%listen, "serving /healthz and /metrics");
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let reload = metrics_for_hup;
    let shutdown = async move {
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading settings, policies and context");
                    reload.reload_requested.store(true, Ordering::SeqCst);
                }
            }
        }
        tracing::info!("shutting down: finishing in-flight batches");
    };
    let limits = crate::net::HttpLimits {
        max_connections: 64,
        header_timeout: Duration::from_secs(http.header_timeout_seconds),
        ..Default::default()
    };
    crate::net::serve_http(
        listener,
        None,
        app,
        limits,
        Arc::new(crate::net::HttpCounters::default()),
        "metrics",
        shutdown,
    )
    .await;
    Ok(())
}
