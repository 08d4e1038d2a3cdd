//! The `ringlog` binary with security on: `ringlog certs`, `serve` with mutual TLS, an ACL
//! and metrics, and the client's `--ca-file`, `--cert-file`, `--key-file`.

mod process;

use std::{
    io::{Read, Write},
    net::TcpStream,
    path::Path,
    process::{Command, Output, Stdio},
};

use process::RINGLOG;

/// `ringlog serve` (started by the shared `process` helper) with mutual TLS, an ACL and
/// metrics, logging JSON.
struct Serving {
    server: process::Serving,
    metrics_addr: std::net::SocketAddr,
}

fn serve(dir: &Path, certs: &Path, acl: &Path) -> Serving {
    let (cert, key, ca) = (certs.join("server.pem"), certs.join("server-key.pem"), certs.join("ca.pem"));
    let args = [
        "--metrics-addr",
        "127.0.0.1:0",
        "--backend",
        "pwrite",
        "--log-format",
        "json",
        "--log-level",
        "ringlog_service=debug,info",
        "--tls-cert-file",
        cert.to_str().unwrap(),
        "--tls-key-file",
        key.to_str().unwrap(),
        "--tls-client-ca-file",
        ca.to_str().unwrap(),
        "--acl-file",
        acl.to_str().unwrap(),
    ];
    let server =
        process::serve(dir, &args).unwrap_or_else(|failed| panic!("ringlog serve did not start: {failed:?}"));
    let serving = server.line_with("serving");
    assert!(serving.contains("\"security\":\"mutual tls + acl\""), "{serving}");
    let metrics_addr = process::logged_addr(&server.line_with("metrics endpoint listening")).unwrap();
    Serving { server, metrics_addr }
}

impl Serving {
    /// Runs a client subcommand as `subject` (with its certificate), or with none.
    fn run(&self, certs: &Path, subject: Option<&str>, args: &[&str]) -> Output {
        let mut command = Command::new(RINGLOG);
        command
            .args(args)
            .args(["--addr", &self.server.addr.to_string()])
            .arg("--ca-file")
            .arg(certs.join("ca.pem"));
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
        let mut stream = TcpStream::connect(self.metrics_addr).unwrap();
        write!(stream, "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    }

    /// SIGTERM (the exit status must be success); returns every line the server logged.
    fn terminate(self) -> Vec<String> {
        let lines = self.server.stderr.clone();
        self.server.terminate();
        lines.lock().unwrap().clone()
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn certs_then_mutual_tls_with_an_acl_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = make_certs(&["--client", "alice", "--client", "reader", "--out"], &certs);
    assert_eq!(made.len(), 7, "{made:?}");
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

/// Runs `ringlog certs <args> <dir>`; returns the files it wrote.
fn make_certs(args: &[&str], dir: &Path) -> Vec<String> {
    let made = Command::new(RINGLOG).arg("certs").args(args).arg(dir).output().unwrap();
    assert!(made.status.success(), "{args:?}: {}", text(&made.stderr));
    text(&made.stdout).lines().map(str::to_owned).collect()
}

#[test]
fn certificates_signed_later_with_the_kept_ca_key_are_trusted_by_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = make_certs(&["--client", "alice", "--keep-ca-key", "--out"], &certs);
    assert!(made.iter().any(|path| path.ends_with("/ca-key.pem")), "{made:?}");
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "alice, consume\ncarol, produce\ncarol, consume\n").unwrap();
    let server = serve(&dir.path().join("data"), &certs, &acl);

    // A client added while the server runs, with the original CA: nothing else is rewritten.
    let made = make_certs(&["--client", "carol", "--ca-dir"], &certs);
    assert_eq!(made.len(), 2, "{made:?}");
    let produced = server.run(&certs, Some("carol"), &["produce", "hello"]);
    assert!(produced.status.success(), "{}", text(&produced.stderr));
    assert_eq!(text(&produced.stdout), "0\n");
    let consumed = server.run(&certs, Some("alice"), &["consume", "--from", "0"]);
    assert!(consumed.status.success(), "{}", text(&consumed.stderr));
    server.terminate();

    // A new server certificate from the same CA, elsewhere: old clients trust it.
    let renewed = dir.path().join("renewed");
    let made = make_certs(&["--server", "--ca-dir", certs.to_str().unwrap(), "--out"], &renewed);
    assert_eq!(made.len(), 3, "ca.pem, server.pem, server-key.pem: {made:?}");
    let server = serve(&dir.path().join("data"), &renewed, &acl);
    let consumed = server.run(&certs, Some("carol"), &["consume", "--from", "0"]);
    assert!(consumed.status.success(), "{}", text(&consumed.stderr));
    assert_eq!(text(&consumed.stdout), "0\thello\n");
    server.terminate();
}

/// Starts `ringlog serve` expecting it to stop at startup; returns what it wrote to stderr.
fn serve_fails(dir: &Path, args: &[&str]) -> String {
    match process::serve(dir, args) {
        Ok(_) => panic!("ringlog serve {args:?} should not start"),
        Err(failed) => {
            assert!(!failed.success, "{failed:?}");
            failed.stderr.join("\n")
        }
    }
}

#[test]
fn a_bad_acl_file_stops_the_server_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "# ok\nalice, produce\nalice: consume\n").unwrap();
    let stderr = serve_fails(&dir.path().join("data"), &["--acl-file", acl.to_str().unwrap()]);
    assert!(stderr.contains("line 3: expected `subject, action`"), "{stderr}");
    assert!(!dir.path().join("data").exists(), "the log is not opened");
}

#[test]
fn a_missing_tls_file_stops_the_server_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--tls-cert-file", "/nonexistent.pem", "--tls-key-file", "/k.pem"];
    let stderr = serve_fails(&dir.path().join("data"), &args);
    assert!(stderr.contains("tls-cert-file /nonexistent.pem"), "{stderr}");
}
