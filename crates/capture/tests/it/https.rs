//! A successful https capture: a local TLS server whose certificate a test CA signed, made
//! with the `openssl` command at test time, reached by the browser through the capture
//! proxy's CONNECT tunnel. The browser trusts that CA only because the configuration names
//! its key (`trusted_spki_hashes`); without it the same page is a certificate error.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use base64::Engine as _;
use capture::CaptureConfig;
use sha2::{Digest, Sha256};

use crate::common::{assert_error, local_config, opts, shared, start_service};

/// A test CA and a server certificate it signed for `localhost` and 127.0.0.1.
pub(crate) struct TestCa {
    /// base64 SHA-256 of the CA's SubjectPublicKeyInfo.
    pub(crate) spki_hash: String,
    /// The server's chain (its certificate, then the CA's) and its key, DER.
    chain: Vec<Vec<u8>>,
    key: Vec<u8>,
}

/// Runs `openssl` in `dir`; what it says is shown only when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    match Command::new("openssl").args(args).current_dir(dir).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => panic!("openssl cannot run ({e}): apt-get install openssl"),
    }
}

impl TestCa {
    pub(crate) fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec![
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=Shotledger test CA",
        ];
        ca.extend(ec);
        ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
        ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
        ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
        openssl(d, &ca);
        let mut csr = vec!["req", "-subj", "/CN=localhost"];
        csr.extend(ec);
        csr.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
        openssl(d, &csr);
        std::fs::write(
            d.join("leaf.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                "leaf.pem",
            ],
        );
        for (pem, der) in [("leaf.pem", "leaf.der"), ("ca.pem", "ca.der")] {
            openssl(d, &["x509", "-in", pem, "-outform", "DER", "-out", der]);
        }
        openssl(
            d,
            &[
                "pkcs8",
                "-topk8",
                "-nocrypt",
                "-in",
                "leaf.key",
                "-outform",
                "DER",
                "-out",
                "leaf.key.der",
            ],
        );
        openssl(
            d,
            &[
                "x509", "-in", "ca.pem", "-pubkey", "-noout", "-out", "ca.pub",
            ],
        );
        openssl(
            d,
            &[
                "pkey", "-pubin", "-in", "ca.pub", "-outform", "DER", "-out", "ca.spki",
            ],
        );
        let read = |name: &str| std::fs::read(d.join(name)).unwrap();
        TestCa {
            spki_hash: base64::engine::general_purpose::STANDARD
                .encode(Sha256::digest(read("ca.spki"))),
            chain: vec![read("leaf.der"), read("ca.der")],
            key: read("leaf.key.der"),
        }
    }
}

/// The page: green, with a 100x50 red box at (40, 30), and a heading.
const PAGE: &str =
    "<!doctype html><html><head><style>html,body{margin:0;height:100%;background:rgb(0,128,0)}\
#box{position:absolute;left:40px;top:30px;width:100px;height:50px;background:#f00}</style></head>\
<body><div id=box></div><h1 style='margin-top:120px'>served over TLS</h1></body></html>";

/// An https server on 127.0.0.1 with the CA's certificate chain, a thread per connection.
pub(crate) fn serve_tls(ca: &TestCa) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = ca.chain.iter().map(|c| c.clone().into()).collect();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ca.key.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let config = Arc::clone(&config);
            std::thread::spawn(move || {
                let conn = rustls::ServerConnection::new(config).unwrap();
                let mut tls = BufReader::new(rustls::StreamOwned::new(conn, tcp));
                loop {
                    let mut line = String::new();
                    // A failed handshake (the browser refusing the certificate) ends here.
                    if tls.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{PAGE}",
                    PAGE.len()
                );
                let stream = tls.get_mut();
                let _ = stream.write_all(answer.as_bytes());
                stream.conn.send_close_notify();
                let _ = stream.flush();
            });
        }
    });
    addr
}

/// A 400x300 capture of [`PAGE`]: its background and its box are where the page put them.
#[track_caller]
pub(crate) fn assert_shows_the_page(shot: &capture::Captured, url: &str) {
    let img = image::load_from_memory(&shot.bytes).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (400, 300));
    let rgb = |x, y| img.get_pixel(x, y).0;
    assert_eq!(rgb(300, 250), [0, 128, 0], "{url}: the page's background");
    assert_eq!(rgb(90, 55), [255, 0, 0], "{url}: the page's box");
}

#[tokio::test]
async fn an_https_page_signed_by_a_configured_ca_is_captured() {
    let ca = TestCa::new();
    let addr = serve_tls(&ca);
    let svc = start_service(CaptureConfig {
        trusted_spki_hashes: vec![ca.spki_hash.clone()],
        ..local_config(1)
    });
    for host in ["localhost", "127.0.0.1"] {
        let url = format!("https://{host}:{}/", addr.port());
        let shot = svc
            .capture(&opts(&[("url", &url), ("width", "400"), ("height", "300")]))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_shows_the_page(&shot, &url);
    }
    assert!(svc.stats().proxy_requests >= 2, "{:?}", svc.stats());
    svc.shutdown().await;
}

/// The default configuration trusts no extra CA: the same server is a certificate error,
/// reported as a network error that names it, and nothing is captured.
#[tokio::test]
async fn without_the_configured_ca_the_certificate_is_refused() {
    let ca = TestCa::new();
    let addr = serve_tls(&ca);
    let (svc, _) = shared();
    assert!(svc.config().trusted_spki_hashes.is_empty());
    let url = format!("https://localhost:{}/", addr.port());
    let err = svc.capture(&opts(&[("url", &url)])).await.unwrap_err();
    assert_error(&err, "NETWORK_ERROR", 502);
    assert!(err.to_string().contains("CERT"), "{err}");
}
