//! Throughput, latency and memory of the capture pool against a local fixture page.
//!
//! ```text
//! cargo run --release -p capture --example capture_bench -- [REQUESTS_PER_MODE]
//! ```
//!
//! cargo run --release -p capture --example capture_bench -- [REQUESTS_PER_MODE] --compare-only
//! ```
//!
//! First, side by side with Playwright (`scripts/bench-playwright.py`, the same Chromium
//! binary, the same page, 1280x800 png) in the same run: the default pool (one session per
//! CPU) with one client (sequential) and with two, against one Playwright page and two; total
//! Chromium PSS; and the ratios that issue 12 sets as targets. `--compare-only` stops there.
//!
//! ```text
//! Then the older modes: warm pools of 1, 2 and 4 sessions (closed loop, as many clients as sessions), and
//! "fresh browser per request" (pool of 2, `max_uses_per_session = 1`, no prewarm, so every
//! capture pays for starting chromium). Memory: after each warm run, the resident memory of
//! every chromium process of that service's chromedriver group (RSS, and PSS which divides
//! shared pages fairly), divided by the number of sessions.

// A benchmark, not a program: a failed step should stop it loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use capture::{CaptureConfig, CaptureOptions, CaptureService, RawCaptureOptions};

struct Row {
    mode: String,
    sessions: usize,
    requests: usize,
    wall: Duration,
    p50: Duration,
    p95: Duration,
    rss_mb: Option<(f64, f64)>,
    /// Total chromium PSS of the pool, MiB.
    pss_total: Option<f64>,
    sessions_opened: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// (RSS, PSS) in MiB summed over chromium processes in chromedriver's process group.
fn chromium_memory(webdriver_url: &str) -> Option<(f64, f64)> {
    let port = webdriver_url.rsplit(':').next()?;
    let needle = format!("--port={port}");
    let procs: Vec<(u32, String, u32)> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let pgid: u32 = stat[stat.rfind(')')? + 2..]
                .split(' ')
                .nth(2)?
                .parse()
                .ok()?;
            Some((pid, cmd, pgid))
        })
        .collect();
    let driver = procs
        .iter()
        .find(|(_, cmd, _)| cmd.contains("chromedriver") && cmd.contains(&needle))?
        .0;
    let kib = |pid: u32, file: &str, key: &str| -> f64 {
        std::fs::read_to_string(format!("/proc/{pid}/{file}"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    };
    let (mut rss, mut pss) = (0.0, 0.0);
    for (pid, cmd, pgid) in &procs {
        if *pgid == driver && *pid != driver && cmd.contains("chromium") {
            rss += kib(*pid, "status", "VmRSS:");
            pss += kib(*pid, "smaps_rollup", "Pss:");
        }
    }
    Some((rss / 1024.0, pss / 1024.0))
}

async fn run_mode(
    mode: &str,
    url: &str,
    pool: usize,
    clients: usize,
    fresh: bool,
    requests: usize,
) -> Row {
    let pool = if pool == 0 {
        CaptureConfig::default().pool_size
    } else {
        pool
    };
    let svc = CaptureService::start(CaptureConfig {
        pool_size: pool,
        allow_private_targets: true,
        queue_capacity: 64,
        max_uses_per_session: if fresh { 1 } else { 1_000 },
        prewarm: !fresh,
        ..Default::default()
    })
    .await
    .expect("capture service starts (apt-get install chromium chromium-driver)");
    let opts = CaptureOptions::parse(RawCaptureOptions {
        url: Some(url.to_owned()),
        ..Default::default()
    })
    .unwrap();
    // Let every prewarmed session open, then warm each one once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if !fresh {
        let warm: Vec<_> = (0..pool)
            .map(|_| {
                let (svc, o) = (svc.clone(), opts.clone());
                tokio::spawn(async move { svc.capture(&o).await.map(|_| ()) })
            })
            .collect();
        for w in warm {
            w.await.unwrap().unwrap();
        }
    }
    let opened_before = svc.stats().sessions_opened;
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (svc, o, next) = (svc.clone(), opts.clone(), Arc::clone(&next));
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < requests {
                    let t = Instant::now();
                    let shot = svc.capture(&o).await.expect("capture succeeds");
                    assert!(shot.bytes.len() > 1000);
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for w in workers {
        lat.extend(w.await.unwrap());
    }
    let wall = started.elapsed();
    lat.sort();
    let memory = (!fresh)
        .then(|| chromium_memory(&svc.webdriver_url()))
        .flatten();
    let rss_mb = memory.map(|(r, p)| (r / pool as f64, p / pool as f64));
    let pss_total = memory.map(|(_, p)| p);
    let sessions_opened = svc.stats().sessions_opened - opened_before;
    svc.shutdown().await;
    Row {
        mode: mode.to_owned(),
        sessions: pool,
        requests,
        wall,
        p50: percentile(&lat, 0.50),
        p95: percentile(&lat, 0.95),
        rss_mb,
        pss_total,
        sessions_opened,
    }
}

/// One run of `scripts/bench-playwright.py`: its JSON, or why there is none.
fn playwright(requests: usize) -> Result<serde_json::Value, String> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../scripts/bench-playwright.py"
    );
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg("--requests")
        .arg(requests.to_string())
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {script}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{script} failed ({})", out.status));
    }
    serde_json::from_slice(&out.stdout).map_err(|e| format!("{script} printed no JSON: {e}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Shotledger against Playwright, in one run; prints a markdown table and the ratios.
async fn compare(url: &str, requests: usize) {
    eprintln!("Shotledger, default pool, 1 client...");
    let seq = run_mode("shotledger sequential", url, 0, 1, false, requests).await;
    eprintln!("Shotledger, default pool, 2 clients...");
    let par = run_mode("shotledger 2 clients", url, 0, 2, false, requests).await;
    eprintln!("Playwright...");
    let pw = match playwright(requests) {
        Ok(v) => v,
        Err(e) => {
            println!("No Playwright baseline in this run: {e}. Compare with the figures in issue 12 instead.");
            serde_json::Value::Null
        }
    };
    let f = |v: &serde_json::Value| v.as_f64();
    let pss = seq
        .pss_total
        .into_iter()
        .chain(par.pss_total)
        .fold(0.0, f64::max);
    println!("| | p50 ms | p95 ms | shots/s | Chromium PSS MiB |");
    println!("|---|---|---|---|---|");
    for (name, r) in [
        (
            format!("Shotledger pool of {} sessions, 1 client", seq.sessions),
            &seq,
        ),
        (
            format!("Shotledger pool of {} sessions, 2 clients", par.sessions),
            &par,
        ),
    ] {
        println!(
            "| {name} | {:.0} | {:.0} | {:.2} | {} |",
            ms(r.p50),
            ms(r.p95),
            r.requests as f64 / r.wall.as_secs_f64(),
            r.pss_total.map_or("n/a".into(), |p| format!("{p:.0}")),
        );
    }
    for (name, key) in [
        ("Playwright, 1 page", "sequential"),
        ("Playwright, 2 pages", "parallel2"),
    ] {
        let m = &pw[key];
        let g = |k: &str| f(&m[k]).map_or("n/a".into(), |x| format!("{x:.0}"));
        println!(
            "| {name} | {} | {} | {} | {} |",
            g("p50_ms"),
            g("p95_ms"),
            f(&m["shots_per_s"]).map_or("n/a".into(), |x| format!("{x:.2}")),
            f(&pw["pss_mib"]).map_or("n/a".into(), |x| format!("{x:.0}")),
        );
    }
    let par_rate = par.requests as f64 / par.wall.as_secs_f64();
    if let (Some(pw_p50), Some(pw_rate), Some(pw_pss)) = (
        f(&pw["sequential"]["p50_ms"]),
        f(&pw["parallel2"]["shots_per_s"]),
        f(&pw["pss_mib"]),
    ) {
        let p50_ratio = ms(seq.p50) / pw_p50;
        let rate_ratio = par_rate / pw_rate;
        let pss_ratio = pss / pw_pss;
        let verdict = |ok: bool| if ok { "met" } else { "missed" };
        println!();
        println!("| target | ratio | |");
        println!("|---|---|---|");
        println!(
            "| p50 sequential <= 1.0x Playwright | {p50_ratio:.2}x | {} |",
            verdict(p50_ratio <= 1.0)
        );
        println!(
            "| throughput, 2 clients >= 1.0x Playwright with 2 pages | {rate_ratio:.2}x | {} |",
            verdict(rate_ratio >= 1.0)
        );
        println!(
            "| PSS of the default pool <= 1.2x Playwright | {pss_ratio:.2}x | {} |",
            verdict(pss_ratio <= 1.2)
        );
    }
    println!();
}

fn main() {
    support::run(40, |requests, addr| async move {
        let url = format!("http://{addr}/");
        compare(&url, requests).await;
        if std::env::args().any(|a| a == "--compare-only") {
            return;
        }
        let mut rows = Vec::new();
        for pool in [1, 2, 4] {
            eprintln!("warm pool of {pool}...");
            rows.push(run_mode("warm pool", &url, pool, pool, false, requests).await);
        }
        eprintln!("fresh browser per request...");
        rows.push(run_mode("fresh browser per request", &url, 2, 2, true, requests).await);

        println!(
            "| mode | sessions | clients | requests | captures/s | p50 ms | p95 ms | chromium RSS / session MiB | chromium PSS / session MiB | sessions opened |"
        );
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for r in rows {
            let (rss, pss) = r.rss_mb.map_or(("n/a".into(), "n/a".into()), |(a, b)| {
                (format!("{a:.0}"), format!("{b:.0}"))
            });
            println!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {} | {} | {} |",
                r.mode,
                r.sessions,
                r.sessions,
                r.requests,
                r.requests as f64 / r.wall.as_secs_f64(),
                r.p50.as_millis(),
                r.p95.as_millis(),
                rss,
                pss,
                r.sessions_opened,
            );
        }
    });
}
