#!/usr/bin/env bash
# Measures the cluster figures of docs/benchmarks.md ("Cluster"): every command starts real
# `ringlog serve` processes on 127.0.0.1 (the `ringlog` binary built next to ringlog-bench,
# data in fresh temporary directories on the system's temp filesystem), measures, and kills
# them, also when it fails. JSON goes to docs/bench/cluster-results; benches/plot.py turns it
# into the tables and SVGs. About 9 minutes on the 2-core VM. CARGO_TARGET_DIR is honoured.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin ringlog --bin ringlog-bench
bench="${CARGO_TARGET_DIR:-target}/release/ringlog-bench"
out=docs/bench/cluster-results
mkdir -p "$out"

# C1: ProduceStream of 100 B records, one per message: bare tonic, one `ringlog serve`, a
# 3-node cluster (produced to at its leader), alternating; records/s and the servers' CPU
# time per record (utime + stime of the processes, /proc/<pid>/stat).
$bench --workload produce-stream --record-bytes 100 --duration 3s --repeat 3 --server compare --json "$out/produce-stream-100.json"
# C2: batched 1 KiB records (100 per request, 2 connections): MB/s and CPU per record.
$bench --workload produce-batched --record-bytes 1024 --batch 100 --connections 2 --duration 3s --repeat 3 --server compare --json "$out/produce-batched-1k.json"
# C3: produce latency under --durability always at a fixed open-loop rate (2000 records/s, 10 s).
$bench --workload produce-stream --record-bytes 100 --rate 2000 --duration 10s --durability always --repeat 2 --server compare --json "$out/latency-always-2k.json"
# C3b: what the servers' CPU time is made of at a trickle (100 records/s, durability always):
# the part of C3's CPU per record that does not depend on the load.
$bench --workload produce-stream --record-bytes 100 --rate 100 --duration 10s --durability always --repeat 2 --server compare --json "$out/idle-always-100.json"
# C4: failover time, 20 leader kills, with the default election settings and with 100/500.
$bench failover --kills 20 --json "$out/failover-250-1000.json"
$bench failover --kills 20 --raft-heartbeat-ms 100 --raft-election-timeout-ms 500 --json "$out/failover-100-500.json"
# C5: catch-up of a fourth node added to a cluster holding 200 MB of 1 KiB records (three
# times, each on a new cluster), and once with 1000 MB for a longer window.
for i in 1 2 3; do
    $bench catch-up --megabytes 200 --json "$out/catch-up-200mb-$i.json"
done
$bench catch-up --megabytes 1000 --json "$out/catch-up-1000mb.json"
# C5b: the same through a snapshot of segment files: 1000 MB written with 600 MB retention
# (16 MiB segments), so that the new node cannot get the start of the log by appends.
$bench catch-up --megabytes 1000 --retention-megabytes 600 --json "$out/catch-up-snapshot-1000mb.json"
# C6: what mutual TLS costs (node and cluster, plaintext and --tls alternating).
for server in node cluster; do
    for tls in "" --tls; do
        $bench --workload produce-stream --record-bytes 100 --duration 3s --repeat 2 --server $server $tls --json "$out/tls-$server${tls:+-tls}-100.json"
        $bench --workload produce-batched --record-bytes 1024 --batch 100 --connections 2 --duration 3s --repeat 2 --server $server $tls --json "$out/tls-$server${tls:+-tls}-1k.json"
    done
done

python3 benches/plot.py cluster "$out" docs/bench
