//! What both benchmarks share: the local page they capture, served on 127.0.0.1.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const PAGE: &str = r#"<!doctype html><html><head><meta charset="utf-8"><title>Bench</title>
<style>body{font-family:sans-serif;margin:0;background:#f4f6fb}header{background:#234;color:#fff;padding:24px}
main{display:grid;grid-template-columns:repeat(3,1fr);gap:16px;padding:24px}
.card{background:#fff;border-radius:8px;padding:16px;box-shadow:0 1px 4px rgba(0,0,0,.2)}</style></head>
<body><header><h1>Shotledger benchmark page</h1><p>A small, static, realistic page.</p></header><main>
CARDS</main></body></html>"#;

/// Serve the benchmark page (about 4 KB, 24 cards) on a free port, on the current runtime.
pub async fn serve() -> SocketAddr {
    let cards: String = (0..24)
        .map(|i| format!("<div class=\"card\"><h2>Card {i}</h2><p>Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor.</p></div>"))
        .collect();
    let body = Arc::new(PAGE.replace("CARDS", &cards));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let body = Arc::clone(&body);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = s.write_all(head.as_bytes()).await;
                let _ = s.write_all(body.as_bytes()).await;
            });
        }
    });
    addr
}

/// The benchmark's `main`: the first argument as a count (`default` without one), and a
/// runtime of two worker threads that serves the page and runs `body` with the count and the
/// page's address.
pub fn run<F: Future<Output = ()>>(default: usize, body: impl FnOnce(usize, SocketAddr) -> F) {
    let n = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let addr = serve().await;
        body(n, addr).await;
    });
}
