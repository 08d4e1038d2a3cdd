//! `ringlog-bench` end to end: a few hundred records against in-process servers, checked
//! through its JSON report (counts only; timing never decides a test).

use std::process::Command;

/// `ringlog-bench` with `args`, on the engine's fastest portable settings (no fsync, pwrite).
fn bench(args: &[&str]) -> serde_json::Value {
    let fast = ["--durability", "none", "--backend", "pwrite"];
    bench_exactly(&args.iter().chain(&fast).copied().collect::<Vec<_>>())
}

#[test]
fn produce_stream_against_both_servers_reports_every_record_and_a_ratio() {
    let report =
        bench(&["--workload", "produce-stream", "--records", "300", "--connections", "2", "--streams", "2"]);
    assert_eq!(report["settings"]["workload"], "produce-stream");
    let runs = report["runs"].as_array().unwrap();
    let servers: Vec<&str> = runs.iter().map(|r| r["server"].as_str().unwrap()).collect();
    assert_eq!(servers, ["bare", "ringlog"]);
    for run in runs {
        assert_eq!(run["records"], 300);
        assert_eq!(run["messages"], 300);
        assert_eq!(run["value_bytes"], 300 * 100);
        assert_eq!(run["latency_us"]["count"], 300);
    }
    assert_eq!(report["ratio_to_bare"]["each"].as_array().unwrap().len(), 1);
}

#[test]
fn batched_and_consume_workloads_count_records_not_messages() {
    let report =
        bench(&["--workload", "produce-batched", "--batch", "10", "--records", "300", "--server", "ringlog"]);
    assert_eq!(report["runs"][0]["records"], 300);
    assert_eq!(report["runs"][0]["messages"], 30);

    let report = bench(&["--workload", "consume-stream", "--records", "200", "--streams", "2"]);
    for run in report["runs"].as_array().unwrap() {
        assert_eq!(run["records"], 400, "two streams read 200 each");
        assert!(run["latency_us"].is_null());
    }
}

#[test]
fn mixed_open_loop_delivers_every_record_to_every_follower() {
    let report = bench(&[
        "--workload",
        "mixed",
        "--records",
        "300",
        "--rate",
        "3000",
        "--followers",
        "2",
        "--server",
        "ringlog",
    ]);
    let run = &report["runs"][0];
    assert_eq!(run["records"], 300);
    assert_eq!(run["delivered"], 600);
    assert_eq!(run["delivery_latency_us"]["count"], 600);
    assert_eq!(report["settings"]["rate"], 3000);
}

/// `ringlog-bench` with exactly `args` and `--json`: the report.
fn bench_exactly(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .output()
        .expect("run ringlog-bench");
    assert!(output.status.success(), "ringlog-bench failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
}

// The tests below start `ringlog serve` processes: the `ringlog` binary that
// `cargo test --workspace` builds next to ringlog-bench.

#[test]
fn compare_measures_bare_a_node_process_and_a_cluster_with_their_cpu_time() {
    let report = bench(&["--workload", "produce-stream", "--records", "300", "--server", "compare"]);
    let runs = report["runs"].as_array().unwrap();
    let servers: Vec<&str> = runs.iter().map(|r| r["server"].as_str().unwrap()).collect();
    assert_eq!(servers, ["bare", "node", "cluster"]);
    for run in runs {
        assert_eq!(run["records"], 300);
        let has_cpu = run["server"] != "bare";
        assert_eq!(run["server_cpu_s"].is_number(), has_cpu, "{run}");
        assert_eq!(run["server_cpu_us_per_record"].is_number(), has_cpu, "{run}");
    }
    let pairs: Vec<(&str, &str)> = report["ratios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["server"].as_str().unwrap(), r["baseline"].as_str().unwrap()))
        .collect();
    assert_eq!(pairs, [("node", "bare"), ("cluster", "bare"), ("cluster", "node")]);
}

#[test]
fn failover_kills_the_leader_and_a_new_one_acknowledges() {
    let report = bench_exactly(&[
        "failover",
        "--kills",
        "1",
        "--raft-heartbeat-ms",
        "100",
        "--raft-election-timeout-ms",
        "500",
        "--settle",
        "100ms",
    ]);
    let cycles = report["cycles"].as_array().unwrap();
    assert_eq!(cycles.len(), 1);
    assert_ne!(cycles[0]["killed"], cycles[0]["new_leader"]);
    assert_eq!(report["failover_ms"]["count"], 1);
    assert!(report["acknowledged"].as_u64().unwrap() > 0);
}

#[test]
fn catch_up_adds_a_fourth_node_that_receives_the_whole_log() {
    let report = bench_exactly(&["catch-up", "--megabytes", "1"]);
    assert_eq!(report["records"], 977, "1 MB of 1 KiB values");
    assert!(report["received_bytes"].as_u64().unwrap() >= report["value_bytes"].as_u64().unwrap());
    let progress = report["progress"].as_array().unwrap();
    assert!(progress.last().unwrap()[1].as_u64().unwrap() >= report["target_index"].as_u64().unwrap());
}

#[test]
fn a_cluster_with_mutual_tls_takes_every_record() {
    let report = bench(&["--workload", "produce-stream", "--records", "300", "--server", "cluster", "--tls"]);
    assert_eq!(report["settings"]["tls"], true);
    assert_eq!(report["runs"][0]["server"], "cluster");
    assert_eq!(report["runs"][0]["records"], 300);

    // The in-process servers have no TLS: the bench says so rather than fail to connect.
    let refused = Command::new(env!("CARGO_BIN_EXE_ringlog-bench"))
        .args(["--server", "both", "--tls"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("use it with --server node or --server cluster")
    );
}
