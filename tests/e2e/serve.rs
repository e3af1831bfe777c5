//! Real HTTP servers on loopback for the agent to send to (webhook receivers).
#![allow(dead_code)]

/// Serves `app` on `127.0.0.1:port` from a thread and runtime of its own, for the rest of
/// the test process.
pub fn serve(port: u16, app: axum::Router) {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                .await
                .unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
}
