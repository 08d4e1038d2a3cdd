//! The `ringlog` binary end to end: serve, produce, consume, SIGTERM, restart, bad config.

mod process;

use std::{
    io::Write,
    path::Path,
    process::{Command, Output, Stdio},
};

use process::RINGLOG;

/// A running `ringlog serve` (started by the shared `process` helper) and its client CLI.
struct Serving(process::Serving);

/// Starts `ringlog serve` on a free loopback port.
fn serve(dir: &Path) -> Serving {
    let args = ["--backend", "pwrite", "--durability", "always"];
    Serving(
        process::serve(dir, &args).unwrap_or_else(|failed| panic!("ringlog serve did not start: {failed:?}")),
    )
}

impl Serving {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(RINGLOG)
            .args(args)
            .args(["--addr", &self.0.addr.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let output = child.wait_with_output().unwrap();
        assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        output
    }

    fn stdout(&self, args: &[&str], stdin: Option<&str>) -> String {
        String::from_utf8(self.run(args, stdin).stdout).unwrap()
    }

    /// SIGTERM, and the exit status must be success.
    fn terminate(mut self) {
        let status = Command::new("kill").args(["-TERM", &self.0.child.id().to_string()]).status().unwrap();
        assert!(status.success());
        let exit = self.0.child.wait().unwrap();
        assert!(exit.success(), "ringlog serve exited with {exit}");
    }
}

#[test]
fn serve_produce_consume_terminate_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path());
    assert_eq!(server.stdout(&["produce", "one", "two", "three"], None), "0\n1\n2\n");
    assert_eq!(server.stdout(&["produce"], Some("four\nfive with\ttab\n")), "3\n4\n");
    assert_eq!(
        server.stdout(&["consume", "--from", "0"], None),
        "0\tone\n1\ttwo\n2\tthree\n3\tfour\n4\tfive with\\ttab\n"
    );
    assert_eq!(
        server.stdout(&["consume", "--from", "1", "--count", "2", "--format", "base64"], None),
        "1\tdHdv\n2\tdGhyZWU=\n"
    );
    assert_eq!(
        server.stdout(&["consume", "--from", "3", "--count", "1", "--format", "raw"], None),
        "3\tfour\n"
    );
    assert_eq!(
        server.stdout(&["consume", "--from", "4", "--count", "1", "--follow"], None),
        "4\tfive with\\ttab\n"
    );
    assert_eq!(server.stdout(&["consume", "--from", "5"], None), "", "the end of the log is not an error");
    server.terminate();

    let server = serve(dir.path());
    assert_eq!(server.stdout(&["produce", "six"], None), "5\n", "a restart continues at the next offset");
    assert_eq!(server.stdout(&["consume", "--from", "0", "--count", "1"], None), "0\tone\n");
    server.terminate();
}

fn serve_fails(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(RINGLOG)
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{args:?} should fail");
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr:?}");
    stderr
}

#[test]
fn bad_settings_get_one_line_naming_the_setting() {
    let error = serve_fails(&["--durability", "sometimes"], &[]);
    assert!(error.contains("--durability") && error.contains("always"), "{error}");
    let error = serve_fails(&[], &[("RINGLOG_MAX_RECORD_BYTES", "0")]);
    assert!(error.contains("max-record-bytes"), "{error}");
    let error = serve_fails(&[], &[("RINGLOG_ADDR", "nowhere")]);
    assert!(error.contains("--addr"), "{error}");

    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "segment-bytes = 100\n").unwrap();
    let error = serve_fails(&["--config", file.path().to_str().unwrap()], &[]);
    assert!(error.contains("segment-bytes"), "{error}");
    std::fs::write(file.path(), "colour = \"blue\"\n").unwrap();
    let error = serve_fails(&["--config", file.path().to_str().unwrap()], &[]);
    assert!(error.contains("colour"), "{error}");

    // Cluster settings: each mistake names its setting and says what is wrong.
    let peers = "1=127.0.0.1:1,2=127.0.0.1:2,3=127.0.0.1:3";
    let error = serve_fails(&["--peers", peers], &[]);
    assert!(error.contains("`node-id`") && error.contains("needed with peers"), "{error}");
    let error = serve_fails(&["--peers", peers, "--node-id", "4"], &[]);
    assert!(error.contains("`node-id`") && error.contains("4 is not in peers (1, 2, 3)"), "{error}");
    for (bad, says) in [
        ("1=127.0.0.1:1,1=127.0.0.1:2", "listed twice"),
        ("1:127.0.0.1:1", "is not ID=HOST:PORT"),
        ("one=127.0.0.1:1", "is not a node id"),
        ("1=127.0.0.1", "has no :PORT"),
        ("1=127.0.0.1:99999", "is not HOST:PORT"),
    ] {
        let error = serve_fails(&["--peers", bad, "--node-id", "1"], &[]);
        assert!(error.contains("`peers`") && error.contains(says), "{bad}: {error}");
    }
    let error = serve_fails(
        &[],
        &[("RINGLOG_PEERS", peers), ("RINGLOG_NODE_ID", "1"), ("RINGLOG_RAFT_ELECTION_TIMEOUT_MS", "100")],
    );
    assert!(error.contains("raft-election-timeout-ms"), "{error}");
}

#[test]
fn flags_win_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ringlog.toml");
    std::fs::write(&file, "durability = \"always\"\nbackend = \"io-uring\"\nsync-interval-ms = 7\n").unwrap();
    let args = ["--config", file.to_str().unwrap(), "--durability", "interval"];
    let env = [("RINGLOG_DURABILITY", "none"), ("RINGLOG_BACKEND", "pwrite")];
    let server = process::serve_with_env(&dir.path().join("data"), &args, &env)
        .unwrap_or_else(|failed| panic!("ringlog serve did not start: {failed:?}"));
    let serving = server.line_with("serving");
    // durability: flag over environment over file; backend: environment over file;
    // sync-interval-ms: only the file gives it.
    assert!(serving.contains("durability=Interval { interval_ms: 7,"), "{serving}");
    assert!(serving.contains("backend=\"pwrite\""), "{serving}");
    server.terminate();
}

#[test]
fn a_second_open_of_a_data_directory_is_refused_naming_it_and_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = serve(dir.path());
    let failed = match process::serve(dir.path(), &[]) {
        Ok(_) => panic!("a second ringlog serve started on the same data directory"),
        Err(failed) => failed,
    };
    assert!(!failed.success);
    let line = failed.stderr.last().cloned().unwrap_or_default();
    assert!(line.contains(&dir.path().display().to_string()), "names the directory: {line}");
    assert!(line.contains(&format!("locked by process {}", first.0.pid())), "names the holder: {line}");
    first.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_during_a_slow_shutdown_exits_at_once() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path()).0;
    // An open health Watch keeps the graceful shutdown waiting (for its 30 s grace).
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut watch = HealthClient::new(channel)
        .watch(HealthCheckRequest { service: String::new() })
        .await
        .unwrap()
        .into_inner();
    watch.message().await.unwrap();
    let signal = |server: &process::Serving| {
        let status = Command::new("kill").args(["-TERM", &server.pid().to_string()]).status().unwrap();
        assert!(status.success());
    };
    signal(&server);
    server.line_with("shutting down");
    signal(&server);
    let (exit, line) = tokio::task::spawn_blocking(move || {
        let exit = server.child.wait().unwrap();
        (exit, server.line_with("second signal"))
    })
    .await
    .unwrap();
    assert_eq!(exit.code(), Some(2), "exits at once, not after the grace period ({line})");
    drop(watch);
}

/// A single node answers the book's GetServers with itself, as leader: by default id 1 at
/// the address it listens on; `--node-id` and `--advertise-addr` change what it says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_node_answers_get_servers_with_itself_as_leader() {
    use ringlog_service::proto::{GetServersRequest, Server};
    let dir = tempfile::tempdir().unwrap();
    for (args, id, advertised) in [
        (vec![], "1", None),
        (vec!["--node-id", "7", "--advertise-addr", "logs.example:8400"], "7", Some("logs.example:8400")),
    ] {
        let server = process::serve(dir.path(), &args).unwrap_or_else(|failed| panic!("{failed:?}"));
        let servers =
            server.client().await.get_servers(GetServersRequest {}).await.unwrap().into_inner().servers;
        let rpc_addr = advertised.map_or_else(|| server.addr.to_string(), str::to_owned);
        assert_eq!(servers, [Server { id: id.into(), rpc_addr, is_leader: true }], "{args:?}");
        server.terminate();
    }
}
