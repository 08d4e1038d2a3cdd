//! The `ringlog` binary with security on: `ringlog certs`, `serve` with mutual TLS, an ACL
//! and metrics, and the client's `--ca-file`, `--cert-file`, `--key-file`.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
};

const RINGLOG: &str = env!("CARGO_BIN_EXE_ringlog");

/// `ringlog serve` on free loopback ports; the addresses are read from its log.
struct Serving {
    child: Child,
    addr: String,
    metrics_addr: String,
    /// The server's log lines (JSON) after the startup ones.
    lines: mpsc::Receiver<String>,
}

/// The `addr` field of a JSON log line.
fn logged_addr(line: &str) -> Option<String> {
    let at = line.find("\"addr\":\"")? + "\"addr\":\"".len();
    Some(line[at..].split('"').next()?.to_owned())
}

fn serve(dir: &Path, certs: &Path, acl: &Path) -> Serving {
    let mut child = Command::new(RINGLOG)
        .args(["serve", "--addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", "--backend", "pwrite"])
        .args(["--log-format", "json", "--log-level", "ringlog_service=debug,info"])
        .arg("--data-dir")
        .arg(dir)
        .arg("--tls-cert-file")
        .arg(certs.join("server.pem"))
        .arg("--tls-key-file")
        .arg(certs.join("server-key.pem"))
        .arg("--tls-client-ca-file")
        .arg(certs.join("ca.pem"))
        .arg("--acl-file")
        .arg(acl)
        .env_remove("RINGLOG_ADDR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringlog serve");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut addr, mut metrics_addr) = (None, None);
    for line in rx.iter() {
        if line.contains("metrics endpoint listening") {
            metrics_addr = logged_addr(&line);
        } else if line.contains("serving") {
            assert!(line.contains("\"security\":\"mutual tls + acl\""), "{line}");
            addr = logged_addr(&line);
        }
        if addr.is_some() && metrics_addr.is_some() {
            break;
        }
    }
    Serving {
        child,
        addr: addr.expect("the server logs its address"),
        metrics_addr: metrics_addr.unwrap(),
        lines: rx,
    }
}

impl Serving {
    /// Runs a client subcommand as `subject` (with its certificate), or with none.
    fn run(&self, certs: &Path, subject: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(RINGLOG);
        command.args(args).args(["--addr", &self.addr]).arg("--ca-file").arg(certs.join("ca.pem"));
        if let Some(subject) = subject {
            command
                .arg("--cert-file")
                .arg(certs.join(format!("{subject}.pem")))
                .arg("--key-file")
                .arg(certs.join(format!("{subject}-key.pem")));
        }
        command.stdin(Stdio::null()).output().unwrap()
    }

    fn metrics(&self) -> String {
        let mut stream = TcpStream::connect(&self.metrics_addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// SIGTERM; returns the log lines written since startup.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        assert!(self.child.wait().unwrap().success());
        self.lines.iter().collect()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn certs_then_mutual_tls_with_an_acl_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = Command::new(RINGLOG)
        .args(["certs", "--client", "alice", "--client", "reader", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    assert_eq!(text(&made.stdout).lines().count(), 7, "{}", text(&made.stdout));
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "alice, produce\nalice, consume\nreader, consume\n").unwrap();

    let server = serve(&dir.path().join("data"), &certs, &acl);
    let produced = server.run(&certs, Some("alice"), &["produce", "one", "two"]);
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    assert_eq!(text(&produced.stdout), "0\n1\n");

    let consumed = server.run(&certs, Some("reader"), &["consume", "--from", "0"]);
    assert!(consumed.status.success(), "{}", text(&consumed.stderr));
    assert_eq!(text(&consumed.stdout), "0\tone\n1\ttwo\n");

    let denied = server.run(&certs, Some("reader"), &["produce", "three"]);
    assert!(!denied.status.success());
    assert!(text(&denied.stderr).contains("reader not permitted to produce"), "{}", text(&denied.stderr));

    let anonymous = server.run(&certs, None, &["consume"]);
    assert!(!anonymous.status.success());
    assert!(text(&anonymous.stderr).contains("Unauthenticated"), "{}", text(&anonymous.stderr));

    let metrics = server.metrics();
    assert!(metrics.contains("ringlog_records_appended_total 2"), "{metrics}");
    assert!(metrics.contains(r#"grpc_method="ProduceStream",grpc_code="PermissionDenied"} 1"#), "{metrics}");

    // One `call finished` event per call, in the call's span.
    let lines = server.terminate();
    let finished = |subject: &str, method: &str, code: &str| {
        lines.iter().any(|line| {
            line.contains("call finished")
                && line.contains(&format!("\"subject\":\"{subject}\""))
                && line.contains(&format!("\"method\":\"/log.v1.Log/{method}\""))
                && line.contains(&format!("\"code\":\"{code}\""))
                && line.contains("\"peer\":\"127.0.0.1:")
                && line.contains("\"latency_us\":")
        })
    };
    assert!(finished("alice", "ProduceStream", "Ok"), "{lines:#?}");
    assert!(finished("reader", "ProduceStream", "PermissionDenied"), "{lines:#?}");
    assert!(finished("anonymous", "Consume", "Unauthenticated"), "{lines:#?}");
}

#[test]
fn a_bad_acl_file_stops_the_server_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "# ok\nalice, produce\nalice: consume\n").unwrap();
    let output = Command::new(RINGLOG)
        .args(["serve", "--addr", "127.0.0.1:0", "--acl-file"])
        .arg(&acl)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RINGLOG_ADDR")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("line 3: expected `subject, action`"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "the log is not opened");
}

#[test]
fn a_missing_tls_file_stops_the_server_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(RINGLOG)
        .args([
            "serve",
            "--addr",
            "127.0.0.1:0",
            "--tls-cert-file",
            "/nonexistent.pem",
            "--tls-key-file",
            "/k.pem",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RINGLOG_ADDR")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = text(&output.stderr);
    assert!(stderr.contains("tls-cert-file /nonexistent.pem"), "{stderr}");
}
