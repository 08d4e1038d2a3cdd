//! Network partitions between real processes: a TCP proxy in front of each node, through
//! which the other nodes reach it (their `--peers` name the proxies, so Raft calls and
//! forwarded produces pass through them; the test's clients dial the nodes directly).
//!
//! A proxy tells which node a connection comes from by the process that owns the connecting
//! socket (its inode in `/proc/net/tcp`, found among the node's open files). Cutting the
//! pair `(a, b)` blackholes the connections either makes to the other: bytes stop flowing
//! both ways and new connections are accepted but never relayed, as when a network drops
//! packets (no reset tells the sender). Healing drops the blackholed connections, so that the
//! nodes reconnect.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// Pairs of node indexes, smaller first.
type Cut = BTreeSet<(usize, usize)>;

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// The proxies of a cluster and the switch that cuts pairs of nodes apart.
pub struct Partitions {
    cut: watch::Sender<Cut>,
    /// The running process of each node (its pid), for telling where a connection comes from.
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    /// Each node's proxy address.
    addrs: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Partitions {
    /// Starts a proxy in front of each node at `targets`.
    pub async fn start(targets: &[SocketAddr]) -> Partitions {
        let (cut, _) = watch::channel(Cut::new());
        let pids = Arc::new(Mutex::new(vec![None; targets.len()]));
        let mut addrs = Vec::new();
        let mut tasks = Vec::new();
        for (to, target) in targets.iter().enumerate() {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a proxy port");
            addrs.push(listener.local_addr().unwrap());
            tasks.push(tokio::spawn(proxy(listener, to, *target, pids.clone(), cut.subscribe())));
        }
        Partitions { cut, pids, addrs, tasks }
    }

    /// Node `i`'s proxy: where its peers dial it.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.addrs[i]
    }

    /// Records node `i`'s process (`None` once it is gone).
    pub fn set_pid(&self, i: usize, pid: Option<u32>) {
        self.pids.lock().unwrap()[i] = pid;
    }

    /// Cuts node `i` off from every node in `others`, both ways.
    pub fn isolate(&self, i: usize, others: impl IntoIterator<Item = usize>) {
        self.cut.send_modify(|cut| cut.extend(others.into_iter().map(|o| pair(i, o))));
    }

    /// Restores every connection.
    pub fn heal(&self) {
        self.cut.send_modify(Cut::clear);
    }
}

impl Drop for Partitions {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Accepts connections for node `to` and relays each to `target` unless it is cut.
async fn proxy(
    listener: TcpListener,
    to: usize,
    target: SocketAddr,
    pids: Arc<Mutex<Vec<Option<u32>>>>,
    cut: watch::Receiver<Cut>,
) {
    let proxy_port = listener.local_addr().unwrap().port();
    loop {
        let Ok((inbound, from_addr)) = listener.accept().await else { continue };
        let running = pids.lock().unwrap().clone();
        let from = owner(from_addr.port(), proxy_port, &running);
        tokio::spawn(relay(inbound, from, to, target, cut.clone()));
    }
}

/// Relays one connection from node `from` (`None`: not a node) to node `to`, and blackholes
/// it while the pair is cut.
async fn relay(
    mut inbound: TcpStream,
    from: Option<usize>,
    to: usize,
    target: SocketAddr,
    mut cut: watch::Receiver<Cut>,
) {
    let is_cut = move |cut: &Cut| from.is_some_and(|from| cut.contains(&pair(from, to)));
    if !is_cut(&cut.borrow()) {
        let Ok(mut outbound) = TcpStream::connect(target).await else { return };
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => return,
            _ = cut.wait_for(is_cut) => {}
        }
        // Cut: hold both sockets open, relaying nothing, until healed.
        let _ = cut.wait_for(|c| !is_cut(c)).await;
        return;
    }
    let _ = cut.wait_for(|c| !is_cut(c)).await;
}

/// The index of the node whose process owns the socket at local port `port` connected to
/// `proxy_port`, if any.
fn owner(port: u16, proxy_port: u16, pids: &[Option<u32>]) -> Option<usize> {
    let inode = socket_inode(port, proxy_port)?;
    let link = format!("socket:[{inode}]");
    pids.iter().position(|pid| {
        pid.is_some_and(|pid| {
            std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten()
                    .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == link.as_str()))
            })
        })
    })
}

/// The inode of the IPv4 TCP socket from local port `port` to remote port `remote`, from
/// `/proc/net/tcp` (`sl local rem st ... inode`, addresses as hex `IP:PORT`).
fn socket_inode(port: u16, remote: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port_of = |field: &str| field.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let matches = port_of(fields.get(1)?)? == port && port_of(fields.get(2)?)? == remote;
        matches.then(|| fields.get(9)?.parse().ok()).flatten()
    })
}
