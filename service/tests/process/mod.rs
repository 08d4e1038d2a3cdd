//! The real `ringlog serve` process: start it on a free loopback port, read the address it
//! logs, kill it, read its memory use. Shared by the tests that need a real process
//! (the command line, crash torture, corrupt files at startup, hostile input).

#![allow(dead_code, missing_docs)]

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex, mpsc},
};

use ringlog_service::proto::log_client::LogClient;
use tonic::transport::{Channel, Endpoint};

pub const RINGLOG: &str = env!("CARGO_BIN_EXE_ringlog");

/// A running `ringlog serve`.
pub struct Serving {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every line the server wrote to stderr so far (kept for failure messages).
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// The lines after the one that says it is serving, as they come.
    later: Mutex<mpsc::Receiver<String>>,
}

/// The `addr` field of a log line, pretty (`addr=HOST:PORT`) or JSON (`"addr":"HOST:PORT"`).
pub fn logged_addr(line: &str) -> Option<SocketAddr> {
    let (at, end) = match line.find("\"addr\":\"") {
        Some(at) => (at + "\"addr\":\"".len(), '"'),
        None => (line.find("addr=")? + "addr=".len(), ' '),
    };
    line[at..].split(end).next()?.parse().ok()
}

/// How a start ended when the server did not come up: its exit status and stderr.
#[derive(Debug)]
pub struct Failed {
    pub status: std::process::ExitStatus,
    pub success: bool,
    pub stderr: Vec<String>,
}

/// Starts `ringlog serve --data-dir dir --addr 127.0.0.1:0 <args>` and waits for the line
/// that says it is serving (an event, not a sleep). `Err` when the process exits first.
pub fn serve(dir: &Path, args: &[&str]) -> Result<Serving, Failed> {
    serve_with_env(dir, args, &[])
}

/// [`serve`] with these environment variables set.
pub fn serve_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Serving, Failed> {
    let mut child = Command::new(RINGLOG)
        .args(["serve", "--addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("RINGLOG_ADDR")
        .env_remove("RINGLOG_LOG_LEVEL")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ringlog serve");
    let stderr = child.stderr.take().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let kept = lines.clone();
    // Keeps draining stderr so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            kept.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    let addr = rx.iter().find_map(|line| logged_addr(&line).filter(|_| line.contains("serving")));
    match addr {
        Some(addr) => Ok(Serving { child, addr, stderr: lines, later: Mutex::new(rx) }),
        None => {
            let status = child.wait().expect("wait for ringlog serve");
            let stderr = lines.lock().unwrap().clone();
            Err(Failed { status, success: status.success(), stderr })
        }
    }
}

/// A client of the server at `addr`.
pub async fn client(addr: SocketAddr) -> LogClient<Channel> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .expect("connect to ringlog serve");
    LogClient::new(channel).max_decoding_message_size(64 << 20).max_encoding_message_size(64 << 20)
}

impl Serving {
    pub async fn client(&self) -> LogClient<Channel> {
        client(self.addr).await
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL ringlog serve");
        self.child.wait().expect("reap ringlog serve");
    }

    /// SIGTERM; the exit status must be success.
    pub fn terminate(mut self) {
        let status =
            Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status().expect("kill -TERM");
        assert!(status.success());
        let exit = self.child.wait().unwrap();
        assert!(exit.success(), "ringlog serve exited with {exit}: {}", self.stderr_text());
    }

    /// Resident memory of the server, from /proc/<pid>/status, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read /proc status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// The first line the server logged that contains `text`, waiting for it if need be
    /// (panics if the server exits first).
    pub fn line_with(&self, text: &str) -> String {
        if let Some(line) = self.stderr.lock().unwrap().iter().find(|line| line.contains(text)) {
            return line.clone();
        }
        let later = self.later.lock().unwrap();
        later
            .iter()
            .find(|line| line.contains(text))
            .unwrap_or_else(|| panic!("ringlog serve never logged {text:?}: {}", self.stderr_text()))
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        // A failed test must not leave a server behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
