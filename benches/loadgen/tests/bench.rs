//! `ringlog-bench` end to end: a few hundred records against in-process servers, checked
//! through its JSON report (counts only; timing never decides a test).

use std::process::Command;

fn bench(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_ringlog-bench"))
        .args(args)
        .arg("--json")
        .arg(&json)
        .args(["--durability", "none", "--backend", "pwrite"])
        .output()
        .expect("run ringlog-bench");
    assert!(output.status.success(), "ringlog-bench failed: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap()
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
