//! The real `api-server` binary: started with `--config FILE`, spoken to over HTTP, stopped
//! with SIGTERM; and refusing a bad configuration value at start.

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_api-server");

/// The binary with a clean environment for the configuration layers.
fn command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, _) in std::env::vars() {
        if k.starts_with("SHOTLEDGER__") {
            cmd.env_remove(k);
        }
    }
    cmd
}

/// Kills the child if the test fails half-way.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn the_binary_serves_with_a_config_file_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let db = dir.path().join("e2e.db");
    let config = dir.path().join("e2e.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nbind = \"127.0.0.1:{port}\"\nworkers = 2\nshutdown_timeout_secs = 5\n\n\
             [database]\nurl = \"sqlite://{}\"\n\n[admin]\ntoken = \"{ADMIN}\"\n\n\
             [credits]\nsignup_bonus = 12\n",
            db.display()
        ),
    )
    .unwrap();
    let child = command(dir.path())
        .arg("--config")
        .arg(&config)
        .spawn()
        .expect("start the api-server");
    let mut running = Running(Some(child));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    if let Err(why) = wait_healthy(addr, Duration::from_secs(30)) {
        let mut child = running.0.take().unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("{why}; stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    let send = |req: Req| http(addr, &req).expect("an answer");

    // Signup (the bonus from the config file) → key → admin debit → balance.
    let res = send(
        Req::post("/api/v1/auth/signup")
            .json(json!({"email": "e2e@example.com", "password": PASSWORD})),
    );
    let account = res.expect(201);
    assert_eq!(account["balance"], 12, "signup_bonus from --config");
    let (session, cookie) = res.session_cookie().expect("a session cookie");
    assert!(cookie.to_ascii_lowercase().contains("httponly"));
    let id = account["accountId"].as_str().unwrap();
    let key = send(
        Req::post("/api/v1/api-keys")
            .auth(&Auth::Cookie(session))
            .json(json!({"name": "e2e"})),
    )
    .expect(201)["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = send(
        Req::post(format!("/admin/v1/accounts/{id}/debits"))
            .auth(&Auth::Admin)
            .idem("e2e-1")
            .json(json!({"amount": 2.5, "description": "Render"})),
    );
    res.expect(201);
    assert_eq!(res.header("x-credits-remaining"), Some("9.5"));
    assert_eq!(res.header("x-credits-charged"), Some("2.5"));
    for auth in [
        Auth::Key(key.clone()),
        Auth::Bearer(key.clone()),
        Auth::RawAuthorization(key.clone()),
    ] {
        let res = send(Req::get("/api/v1/credits").auth(&auth));
        assert_eq!(res.expect(200), json!({"balance": 9.5}));
        assert!(res.header("x-request-id").is_some());
    }
    let res = send(Req::get("/nope"));
    assert_eq!(res.expect(404)["code"], "NOT_FOUND");
    assert_eq!(
        send(Req::get("/admin/v1/verify").auth(&Auth::Admin)).expect(200)["ok"],
        true
    );

    // SIGTERM: a graceful, successful exit.
    let mut child = running.0.take().unwrap();
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(status.success(), "exit {status:?}; stderr: {stderr}");
    assert!(
        http(addr, &Req::get("/healthz")).is_err(),
        "nothing listens any more"
    );
    // The data is on disk where the config said.
    assert!(db.is_file());
}

#[test]
fn a_bad_configuration_value_stops_the_binary_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .env("SHOTLEDGER__SERVER__BIND", "nowhere")
        .output()
        .expect("run the api-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(stderr.contains("server.bind"), "stderr: {stderr}");

    // A --config file that does not exist is refused the same way.
    let out = command(dir.path())
        .args(["--config", "/nonexistent/shotledger.toml"])
        .output()
        .expect("run the api-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--config"), "stderr: {stderr}");
    // Nothing was created in the working folder.
    assert!(!dir.path().join("data").exists());
}
