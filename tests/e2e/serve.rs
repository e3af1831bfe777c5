//! Real HTTP servers on loopback for the agent to send to (webhook receivers).
#![allow(dead_code)]

/// Serves `app` on a loopback port the kernel picks, from a thread and runtime of its own,
/// for the rest of the test process; answers the port. The listener is bound before this
/// returns, so nothing can take the port between choosing and binding it.
pub fn serve(app: axum::Router) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(l, app).await.unwrap();
        });
    });
    port
}
