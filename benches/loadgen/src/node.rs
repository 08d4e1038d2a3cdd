//! One `ringlog serve` process that the bench starts, watches and kills: the unit of the
//! process targets (`--server node|cluster`) and of the cluster measurements.
//!
//! The process is the `ringlog` binary built next to `ringlog-bench` (same target directory),
//! configured only by its flags (`RINGLOG_*` variables are removed), logging JSON to a file
//! in its node directory, which is how the bench learns that it is serving. A [`Node`] owns
//! its process: dropping it (at the end of a run, on an error, or while a panic unwinds)
//! SIGKILLs and reaps it, so no run leaves a server behind. When `ringlog-bench` itself is
//! interrupted (SIGINT, SIGTERM), no destructor runs: [`kill_running`] kills every node
//! still running from a signal listener instead.

use std::{
    fs::File,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::Context;

/// The filter of the nodes' logs: the `serving` line, and openraft's warnings only.
const LOG_LEVEL: &str = "info,openraft=warn";

/// Process ids of the nodes running now (started and not yet reaped).
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Directories of nodes (a cluster's temporary directory) that exist now.
static DIRS: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// SIGKILLs every node still running and removes the directories given to [`own_dir`]: for
/// when `ringlog-bench` is interrupted and its destructors will not run.
pub fn kill_running() {
    let pids = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(|e| e.into_inner()));
    for pid in pids {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
    for dir in std::mem::take(&mut *DIRS.lock().unwrap_or_else(|e| e.into_inner())) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// Has [`kill_running`] remove `dir` (`true`), or no longer (`false`: it is removed already).
pub fn own_dir(dir: &Path, owned: bool) {
    let mut dirs = DIRS.lock().unwrap_or_else(|e| e.into_inner());
    dirs.retain(|d| d != dir);
    if owned {
        dirs.push(dir.to_owned());
    }
}

/// The `ringlog` binary in the directory of this executable (cargo builds both there).
pub fn ringlog_binary() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("finding ringlog-bench's own path")?;
    let binary = me.with_file_name("ringlog");
    anyhow::ensure!(
        binary.is_file(),
        "{} is missing: build it next to ringlog-bench (cargo build --release --bin ringlog)",
        binary.display()
    );
    Ok(binary)
}

/// Loopback addresses that were free a moment ago (bound to port 0, then released).
pub fn free_addrs(n: usize) -> anyhow::Result<Vec<SocketAddr>> {
    let listeners = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .context("finding free loopback ports")?;
    listeners.iter().map(|l| l.local_addr().context("a bound port's address")).collect()
}

/// How to start one node: everything but the process.
#[derive(Clone, Debug)]
pub struct NodeSpec {
    /// The `ringlog` binary.
    pub binary: PathBuf,
    /// Raft node id (`--node-id`), meaningful with `peers`.
    pub id: u64,
    /// `--addr`.
    pub addr: SocketAddr,
    /// `--data-dir`; the log file goes next to it.
    pub dir: PathBuf,
    /// `--peers`, or `None` for a single node.
    pub peers: Option<String>,
    /// Any further flags (`--durability`, `--backend`, the Raft timers).
    pub flags: Vec<String>,
}

/// A running (or killed) `ringlog serve` process.
pub struct Node {
    /// What it was started with.
    pub spec: NodeSpec,
    process: Option<Child>,
    /// Where its stderr goes, and how much of it earlier starts wrote.
    log_path: PathBuf,
    log_from: u64,
}

impl Node {
    /// Starts the process (without waiting for it to serve: see [`Node::wait_serving`]).
    pub fn spawn(spec: NodeSpec) -> anyhow::Result<Node> {
        let log_path = spec.dir.with_extension("log");
        let mut node = Node { spec, process: None, log_path, log_from: 0 };
        node.start()?;
        Ok(node)
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Child::id)
    }

    /// Starts the process again on the same directory (after [`Node::kill`]).
    pub fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.process.is_none(), "node {} is already running", self.spec.id);
        std::fs::create_dir_all(&self.spec.dir)
            .with_context(|| format!("making {}", self.spec.dir.display()))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        self.log_from = log.metadata()?.len();
        let mut command = Command::new(&self.spec.binary);
        command
            .arg("serve")
            .args(["--node-id", &self.spec.id.to_string()])
            .args(["--addr", &self.spec.addr.to_string()])
            .arg("--data-dir")
            .arg(&self.spec.dir)
            .args(["--log-level", LOG_LEVEL, "--log-format", "json"])
            .args(self.spec.peers.iter().flat_map(|peers| ["--peers", peers.as_str()]))
            .args(&self.spec.flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("RINGLOG_") || key == "RUST_LOG" {
                command.env_remove(key);
            }
        }
        let child = command.spawn().with_context(|| format!("starting {}", self.spec.binary.display()))?;
        RUNNING.lock().unwrap_or_else(|e| e.into_inner()).push(child.id());
        self.process = Some(child);
        Ok(())
    }

    /// Waits until this start of the process logs `serving`; fails if it exits first or
    /// takes longer than `timeout`.
    pub async fn wait_serving(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = std::fs::read(&self.log_path).unwrap_or_default();
            let since = String::from_utf8_lossy(text.get(self.log_from as usize..).unwrap_or_default());
            if since.lines().any(|line| line.contains("\"message\":\"serving\"")) {
                return Ok(());
            }
            let process = self.process.as_mut().context("waiting for a node that is not running")?;
            if let Some(status) = process.try_wait()? {
                self.forget();
                anyhow::bail!("node {} exited ({status}) before serving:\n{}", self.spec.id, self.log_tail());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {} did not log `serving` within {timeout:?}:\n{}",
                self.spec.id,
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything the node has logged (its stdout and stderr).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines of the node's log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL, and reap: the node stops at once, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
            forget_pid(process.id());
        }
    }

    /// Drops the handle of a process that has exited (and been reaped).
    fn forget(&mut self) {
        if let Some(process) = self.process.take() {
            forget_pid(process.id());
        }
    }

    /// CPU time (user + system, all threads) the running process has used so far.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.pid().context("CPU time of a node that is not running")?;
        cpu_time_of(&Path::new("/proc").join(pid.to_string()).join("stat"))
    }
}

/// Takes a reaped process out of [`RUNNING`] (its id may be reused from now on).
fn forget_pid(pid: u32) {
    RUNNING.lock().unwrap_or_else(|e| e.into_inner()).retain(|&p| p != pid);
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `utime + stime` of `/proc/<pid>/stat` (fields 14 and 15), in clock ticks of
/// [`clock_ticks_per_s`].
fn cpu_time_of(stat: &Path) -> anyhow::Result<Duration> {
    let text = std::fs::read_to_string(stat).with_context(|| format!("reading {}", stat.display()))?;
    let ticks = stat_cpu_ticks(&text).with_context(|| format!("parsing {}", stat.display()))?;
    Ok(Duration::from_secs_f64(ticks as f64 / clock_ticks_per_s() as f64))
}

/// `utime + stime` from the text of a `/proc/<pid>/stat`. The command name (field 2) is in
/// parentheses and may hold spaces, so fields are counted after its closing one.
fn stat_cpu_ticks(text: &str) -> Option<u64> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state (3), ppid (4), ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// `USER_HZ`, the unit of `/proc/<pid>/stat` times: `getconf CLK_TCK`, else Linux's 100.
fn clock_ticks_per_s() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok()?.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_fields_14_and_15_even_with_spaces_in_the_name() {
        let stat = "4242 (ringlog (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 37 0 0 20 0 9 0";
        assert_eq!(stat_cpu_ticks(stat), Some(287));
        assert_eq!(stat_cpu_ticks("garbage"), None);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        let spent = cpu_time_of(Path::new("/proc/self/stat")).unwrap();
        assert!(spent < Duration::from_secs(3600 * 24));
    }
}
