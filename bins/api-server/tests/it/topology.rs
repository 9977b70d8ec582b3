//! The several-machines topology of docs/DEPLOYMENT.md, on this machine: one PostgreSQL
//! schema; two api-server binaries and one webhook-receiver binary on it; the browsers on a
//! standalone chromedriver as the remote WebDriver (`capture.webdriver_url`); the limits in
//! Redis. A mixed load goes through both api-servers (signups, demo purchases paid on the
//! receiver, operator debits, screenshots of a local page); then every balance is the sum
//! it must be on both servers, `/admin/v1/verify` is clean, and one key's limit held
//! across both servers.
//!
//! The receiver is the binary `cargo build` puts beside the api-server
//! (`target/debug/webhook-receiver`); this test fails, saying so, when it is not there.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// A page for the browsers: any GET answers a small HTML document.
fn serve_page() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut stream = stream;
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let body = "<!doctype html><title>topology</title>\
                            <body style=\"background:#0a0\"><h1>several machines</h1>";
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

/// The chromedriver every api-server's browsers live on (a Grid node, as far as they know).
fn remote_webdriver() -> capture::Chromedriver {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(capture::Chromedriver::start(Path::new(
                "/usr/bin/chromedriver",
            )))
    })
    .join()
    .unwrap()
    .unwrap_or_else(|e| panic!("the standalone chromedriver did not start: {e}"))
}

/// The webhook-receiver binary beside this api-server binary.
fn receiver_binary() -> PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_api-server")).with_file_name("webhook-receiver");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build -p webhook-receiver`, which `./just test` does)",
        path.display()
    );
    path
}

/// A process of the topology, started with `config`; ready once `/healthz` answers.
fn start(binary: &Path, dir: &Path, config: &Path, addr: SocketAddr, log: &str) -> Running {
    let mut cmd = std::process::Command::new(binary);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join(log)).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOTLEDGER__") {
            cmd.env_remove(k);
        }
    }
    let child = cmd.arg("--config").arg(config).spawn().expect("start");
    let running = Running(Some(child));
    if let Err(why) = wait_healthy(addr, Duration::from_secs(90)) {
        let log = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
        panic!("{} did not start: {why}; its log: {log}", binary.display());
    }
    running
}

#[test]
fn two_api_servers_one_receiver_remote_browsers_and_shared_limits() {
    let receiver = receiver_binary();
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::postgres();
    let driver = remote_webdriver();
    let page = serve_page();
    let prefix = format!("shotledger:test:topology:{}:", ledger_store::new_id(""));
    let (a, b, rx) = (free_port(), free_port(), free_port());
    let (burst, rps) = (8u64, 1u64);
    // One file for everything but each api-server's own address and cache (the receiver
    // reads [webhooks]); as DEPLOYMENT.md lays it out.
    let shared = format!(
        "[database]\nurl = \"{db}\"\nmax_connections = 8\n\n\
         [admin]\ntoken = \"{ADMIN}\"\n\n\
         [payments]\nprovider = \"demo\"\n\n\
         [webhooks]\nbind = \"127.0.0.1:{rx}\"\npublic_url = \"http://127.0.0.1:{rx}\"\n\n\
         [capture]\nwebdriver_url = \"{driver}\"\nproxy_bind = \"127.0.0.1\"\n\
         proxy_advertised_host = \"127.0.0.1\"\npool_size = 1\nallow_private_targets = true\n\
         default_timeout_secs = 30\n\n\
         [ratelimit]\nper_key_rps = {rps}\nper_key_burst = {burst}\n\
         redis_url = \"redis://127.0.0.1:6379/0\"\nredis_prefix = \"{prefix}\"\n",
        db = db.url,
        driver = driver.url(),
    );
    let config = |name: &str, port: u16| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &path,
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\nworkers = 2\n\n\
                 [screenshots]\ncache_dir = \"{}\"\n\n{shared}",
                dir.path().join(format!("cache-{name}")).display()
            ),
        )
        .unwrap();
        path
    };
    let api = env!("CARGO_BIN_EXE_api-server");
    let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
    let _a = start(
        Path::new(api),
        dir.path(),
        &config("a", a),
        addr(a),
        "a.log",
    );
    let _b = start(
        Path::new(api),
        dir.path(),
        &config("b", b),
        addr(b),
        "b.log",
    );
    let _rx = start(&receiver, dir.path(), &config("rx", a), addr(rx), "rx.log");
    let servers = [addr(a), addr(b)];
    let receiver_addr = addr(rx);

    // The load: each user on its own thread, alternating the two api-servers.
    let users = 4;
    let results: Vec<(String, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..users)
            .map(|i| {
                scope.spawn(move || {
                    let on = |n: usize| servers[(i + n) % 2];
                    let send = |n: usize, req: Req| {
                        http(on(n), &req).unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path))
                    };
                    let email = format!("user{i}@topology.example");
                    let res = send(0, signup_req(&email));
                    let account = res.expect(201)["accountId"].as_str().unwrap().to_owned();
                    let (session, _) = res.session_cookie().unwrap();
                    let key = send(1, new_key_req(&Auth::Cookie(session), "load")).expect(201)
                        ["key"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let auth = Auth::Key(key.clone());
                    // A demo purchase: the checkout from one api-server, paid on the receiver.
                    let checkout = send(2, purchase_req(&auth, "pack_starter")).expect(200)
                        ["checkoutUrl"]
                        .as_str()
                        .unwrap()
                        .to_owned();
                    let path = checkout
                        .split_once(&format!("127.0.0.1:{rx}"))
                        .map(|(_, p)| p.to_owned())
                        .unwrap_or_else(|| panic!("a receiver checkout: {checkout}"));
                    let paid = http(receiver_addr, &Req::post(format!("{path}/pay"))).unwrap();
                    assert!(paid.status < 400, "pay: {} {}", paid.status, paid.text());
                    // Operator debits through both servers; one replayed on the other.
                    for n in 0..3 {
                        let res = send(
                            n,
                            debit_req(&account, json!({"amount": 2, "description": "load"}))
                                .idem(&format!("debit-{i}-{n}")),
                        );
                        res.expect(201);
                    }
                    let replay = send(
                        1,
                        debit_req(&account, json!({"amount": 2, "description": "load"}))
                            .idem(&format!("debit-{i}-0")),
                    );
                    replay.expect(201);
                    assert_eq!(replay.header("x-credits-charged"), Some("0"), "a replay");
                    // A screenshot of the local page through the remote browsers.
                    let shot = send(
                        i,
                        Req::get(format!(
                            "/api/v1/screenshot?url=http://{page}/u{i}&cache=false&width=320&height=200"
                        ))
                        .auth(&auth),
                    );
                    assert_eq!(shot.status, 200, "screenshot: {}", shot.text());
                    assert_eq!(shot.header("content-type"), Some("image/png"));
                    assert_eq!(shot.header("x-credits-charged"), Some("1"));
                    assert!(shot.header("x-ratelimit-remaining").is_some());
                    (account, key)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });

    // 5 (signup bonus) + 100 (Starter, once paid) - 3 × 2 (debits; the replay charged
    // nothing) - 1 (the screenshot), read on both servers.
    let expected = json!(5 + 100 - 6 - 1);
    for (account, key) in &results {
        let auth = Auth::Key(key.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = http(servers[0], &Req::get("/api/v1/credits").auth(&auth))
                .unwrap()
                .expect(200)["balance"]
                .clone();
            if seen == expected {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{account}: balance {seen}, expected {expected} (the paid order not credited?)"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        let on_b = http(servers[1], &Req::get("/api/v1/credits").auth(&auth)).unwrap();
        assert_eq!(on_b.expect(200)["balance"], expected, "{account} on B");
    }
    for server in servers {
        let v: Value = http(server, &Req::get("/admin/v1/verify").auth(&Auth::Admin))
            .unwrap()
            .expect(200);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["violations"], json!([]), "{v}");
        assert!(v["accounts"].as_u64().unwrap() >= users as u64, "{v}");
    }

    // One key's limit holds across both servers: in any window, at most the burst plus
    // the rate's tokens are accepted, whichever server answers.
    let key = Auth::Key(results[0].1.clone());
    let started = Instant::now();
    let mut accepted = [0u64; 2];
    let mut refused = [0u64; 2];
    for n in 0..24 {
        let res = http(servers[n % 2], &Req::get("/api/v1/credits").auth(&key)).unwrap();
        match res.status {
            200 => accepted[n % 2] += 1,
            429 => {
                assert_eq!(res.json()["code"], "RATE_LIMITED");
                assert!(res.header("retry-after").is_some());
                refused[n % 2] += 1;
            }
            other => panic!("{other}: {}", res.text()),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let total = accepted[0] + accepted[1];
    assert!(
        total as f64 <= burst as f64 + (elapsed * rps as f64).ceil(),
        "{total} accepted in {elapsed:.2}s across both servers: {accepted:?}"
    );
    assert!(
        refused[0] > 0 && refused[1] > 0,
        "both servers refuse the spent key: {refused:?}"
    );
    drop(driver);
}
