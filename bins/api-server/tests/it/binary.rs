//! The real `api-server` binary: started with `--config FILE`, spoken to over HTTP, stopped
//! with SIGTERM; and refusing a bad configuration value at start.

use crate::common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

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
    let child = binary_command(dir.path())
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
    let res = send(signup_req("e2e@example.com"));
    let account = res.expect(201);
    assert_eq!(account["balance"], 12, "signup_bonus from --config");
    let (session, cookie) = res.session_cookie().expect("a session cookie");
    assert!(cookie.to_ascii_lowercase().contains("httponly"));
    let id = account["accountId"].as_str().unwrap();
    let key = send(new_key_req(&Auth::Cookie(session), "e2e")).expect(201)["key"]
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
    let out = binary_command(dir.path())
        .env("SHOTLEDGER__SERVER__BIND", "nowhere")
        .output()
        .expect("run the api-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "exit {:?}", out.status);
    assert!(stderr.contains("server.bind"), "stderr: {stderr}");

    // A --config file that does not exist is refused the same way.
    let out = binary_command(dir.path())
        .args(["--config", "/nonexistent/shotledger.toml"])
        .output()
        .expect("run the api-server");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("--config"), "stderr: {stderr}");
    // Nothing was created in the working folder.
    assert!(!dir.path().join("data").exists());
}

fn start_server(dir: &std::path::Path, config: &std::path::Path, addr: SocketAddr) -> Running {
    let child = binary_command(dir)
        .env("RUST_LOG", "warn,api_server::server=info,actix_server=info")
        .arg("--config")
        .arg(config)
        .spawn()
        .expect("start the api-server");
    let mut running = Running(Some(child));
    if let Err(why) = wait_healthy(addr, Duration::from_secs(30)) {
        let mut child = running.0.take().unwrap();
        let _ = child.kill();
        let out = child.wait_with_output().unwrap();
        panic!("{why}; stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    running
}

fn sigterm(child: &Child) {
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(killed.success());
}

fn read_answer(mut stream: std::net::TcpStream) -> Result<u16, String> {
    use std::io::Read;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{e} after {} bytes", raw.len()))?;
    let text = String::from_utf8_lossy(&raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| text.contains("\r\n\r\n"))
        .ok_or_else(|| format!("no complete answer: {text:?}"))
}

#[test]
fn sigterm_answers_every_request_already_sent_and_applies_only_those() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = config_in(dir.path(), "workers = 2\nshutdown_timeout_secs = 20");
    let mut running = start_server(dir.path(), &config, addr);
    let send = |req: Req| http(addr, &req).expect("an answer");
    let id = send(new_account_req()).expect(201)["accountId"]
        .as_str()
        .unwrap()
        .to_owned();
    send(
        Req::post(format!("/admin/v1/accounts/{id}/credits"))
            .auth(&Auth::Admin)
            .json(json!({"amount": 10_000, "description": "Test balance"})),
    )
    .expect(201);

    // 120 debits, each sent whole on its own connection, then SIGTERM before reading any
    // answer: they are all queued or in flight at the moment of the signal.
    const N: usize = 120;
    let streams: Vec<_> = (0..N)
        .map(|i| {
            let req = Req::post(format!("/admin/v1/accounts/{id}/debits"))
                .auth(&Auth::Admin)
                .idem(&format!("term-{i}"))
                .json(json!({"amount": 1, "description": format!("queued #{i}")}));
            std::thread::spawn(move || send_only(addr, &req))
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| {
            h.join()
                .unwrap()
                .expect("connected and sent before the signal")
        })
        .collect();
    let child = running.0.take().unwrap();
    sigterm(&child);
    let mut running = Running(Some(child));
    // Connections made after the signal are served, told to retry (JSON 503), or refused
    // by the kernel; never taken and then dropped.
    let late = std::thread::spawn(move || {
        (0..20)
            .map(|_| {
                std::thread::sleep(Duration::from_millis(25));
                match http(addr, &Req::get("/healthz")) {
                    Ok(r) if r.status == 200 => Ok("served"),
                    Ok(r) if r.status == 503 && r.json()["code"] == "SHUTTING_DOWN" => {
                        assert_eq!(r.header("retry-after"), Some("1"));
                        Ok("told to retry")
                    }
                    Ok(r) => Err(format!("{} {}", r.status, r.text())),
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok("refused"),
                    Err(e) => Err(e.to_string()),
                }
            })
            .collect::<Vec<_>>()
    });
    let answers: Vec<Result<u16, String>> = streams
        .into_iter()
        .map(|s| std::thread::spawn(move || read_answer(s)))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    let lost: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    if !lost.is_empty() {
        let mut child = running.0.take().unwrap();
        let _ = wait_exit(&mut child, Duration::from_secs(30));
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            use std::io::Read;
            let _ = e.read_to_string(&mut stderr);
        }
        panic!(
            "{} of {N} requests sent before SIGTERM got no answer, e.g. {:?}; server log:\n{stderr}",
            lost.len(),
            lost.first()
        );
    }
    let late = late.join().unwrap();
    assert!(late.iter().all(Result::is_ok), "after the signal: {late:?}");
    let applied = answers.iter().filter(|a| **a == Ok(201)).count();
    assert_eq!(applied, N, "every debit was covered: {answers:?}");

    let mut child = running.0.take().unwrap();
    let status = wait_exit(&mut child, Duration::from_secs(30));
    assert!(status.success(), "exit {status:?}");
    // Exactly the answered debits are in the ledger: the grant, the bonus, N usages.
    let store = ledger_store::Store::open(
        &format!("sqlite://{}", dir.path().join("ledger.db").display()),
        &ledger_store::PoolOptions::default(),
    )
    .unwrap();
    let report = store.maintenance().verify().unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.entries, 2 + N as u64, "{report:?}");
}

#[test]
fn the_binary_refuses_an_sqlite_file_it_cannot_write_and_says_which_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let (config, addr) = config_in(dir.path(), "workers = 1");
    let db = dir.path().join("ledger.db");
    let running = start_server(dir.path(), &config, addr);
    drop(running);
    // Immutable (`chattr +i`): tests run as root, for whom file modes do not stop writes.
    struct Immutable<'a>(&'a std::path::Path);
    impl Drop for Immutable<'_> {
        fn drop(&mut self) {
            let _ = Command::new("chattr").arg("-i").arg(self.0).status();
        }
    }
    let set = Command::new("chattr").arg("+i").arg(&db).output().unwrap();
    assert!(
        set.status.success(),
        "chattr +i failed, so this test cannot make the file unwritable here: {}",
        String::from_utf8_lossy(&set.stderr)
    );
    let guard = Immutable(&db);
    let mut child = binary_command(dir.path())
        .arg("--config")
        .arg(&config)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let healthy = http(addr, &Req::get("/healthz")).map(|r| r.status);
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running on an unwritable database (healthz: {healthy:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(!status.success());
    assert!(
        stderr.contains(&db.display().to_string()),
        "names the file: {stderr}"
    );
    assert!(stderr.contains("readonly"), "says why: {stderr}");
    drop(guard);
    drop(start_server(dir.path(), &config, addr));
}
