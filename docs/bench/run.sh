#!/usr/bin/env bash
# Measures the service targets of docs/bench/service.md: each command starts ringlog (on a
# temporary log, default settings: io_uring, `interval` durability) and bare tonic in the
# ringlog-bench process on 127.0.0.1:0, alternates them --repeat times, and writes JSON under
# docs/bench/results; benches/plot.py turns those into the table and SVGs.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release --bin ringlog-bench
bench=target/release/ringlog-bench
out=docs/bench/results
mkdir -p "$out"

# Q1: what does ringlog cost over gRPC itself for small records, one per message?
$bench --workload produce-stream --record-bytes 100 --duration 3s --repeat 3 --json "$out/produce-stream-100.json"
# Q2: how fast does a follower read a log back, one record per message, against gRPC itself?
$bench --workload consume-stream --record-bytes 100 --records 1000000 --repeat 3 --json "$out/consume-stream-100.json"
# Q3: how many MB/s does batched produce of 1 KiB records reach end to end?
$bench --workload produce-batched --record-bytes 1024 --batch 100 --connections 2 --duration 3s --repeat 3 --json "$out/produce-batched-1k.json"
# Q4: how long from a producer's (intended) send to a follower's receipt, at 10k records/s with 4 followers?
$bench --workload mixed --record-bytes 100 --rate 10000 --followers 4 --duration 5s --server ringlog --repeat 3 --json "$out/mixed-10k.json"
# Q5: what does one unary Produce round trip cost (4 callers on one connection)?
$bench --workload produce-unary --record-bytes 100 --streams 4 --duration 3s --repeat 2 --json "$out/produce-unary-100.json"

python3 benches/plot.py service "$out" docs/bench
