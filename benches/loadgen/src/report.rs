//! What a run measured, as people read it (one line per run, ratios to the bare server) and
//! as JSON (`--json FILE`, the input of `benches/plot.py service`).

use std::{path::Path, time::Duration};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in nanoseconds, 1 ns to 100 s at three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("valid histogram bounds")
}

/// Records `count` observations of `latency_ns` (clamped into the histogram's range).
pub fn record(histogram: &mut Histogram<u64>, latency_ns: u64, count: u64) {
    let value = latency_ns.clamp(1, histogram.high());
    histogram.record_n(value, count).expect("a clamped value is in range");
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Percentiles {
    /// Observations (records).
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `histogram` (nanoseconds), or `None` when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Option<Percentiles> {
        if histogram.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        Some(Percentiles {
            count: histogram.len(),
            mean: histogram.mean() / 1_000.0,
            min: us(histogram.min()),
            p50: us(histogram.value_at_quantile(0.50)),
            p90: us(histogram.value_at_quantile(0.90)),
            p99: us(histogram.value_at_quantile(0.99)),
            p99_9: us(histogram.value_at_quantile(0.999)),
            max: us(histogram.max()),
        })
    }
}

/// One measurement against one server.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    /// `ringlog`, `bare`, or `external` (a server given with `--addr`).
    pub server: String,
    /// Which repetition (0-based); servers alternate within a repetition.
    pub repeat: u32,
    /// Records the measured RPC moved (appended and acknowledged, or delivered).
    pub records: u64,
    /// gRPC messages the measured RPC moved (requests, or consume responses).
    pub messages: u64,
    /// Value bytes of those records.
    pub value_bytes: u64,
    /// From the first request to the last answer.
    pub elapsed_s: f64,
    /// `records / elapsed_s`.
    pub records_per_s: f64,
    /// `value_bytes / elapsed_s`, in 10^6 bytes per second.
    pub mb_per_s: f64,
    /// Produce acknowledgement latency per record (from the intended send time in open
    /// loop); `None` for consume-stream.
    pub latency_us: Option<Percentiles>,
    /// Mixed: records the followers received, over all followers.
    pub delivered: u64,
    /// Mixed: append-to-delivery latency per delivered record (the time embedded by the
    /// producer to when a follower has it).
    pub delivery_latency_us: Option<Percentiles>,
    /// `ringlog serve` processes (`node`, `cluster`): CPU seconds (user + system) they
    /// spent during the run, all nodes together.
    pub server_cpu_s: Option<f64>,
    /// `server_cpu_s` per record acknowledged, in microseconds.
    pub server_cpu_us_per_record: Option<f64>,
}

impl Run {
    /// A run's figures from its counts and histograms.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        server: &str,
        repeat: u32,
        records: u64,
        messages: u64,
        record_bytes: usize,
        elapsed: Duration,
        latency: &Histogram<u64>,
        delivered: u64,
        delivery: &Histogram<u64>,
    ) -> Run {
        let elapsed_s = elapsed.as_secs_f64().max(1e-9);
        let value_bytes = records * record_bytes as u64;
        Run {
            server: server.to_owned(),
            repeat,
            records,
            messages,
            value_bytes,
            elapsed_s,
            records_per_s: records as f64 / elapsed_s,
            mb_per_s: value_bytes as f64 / elapsed_s / 1e6,
            latency_us: Percentiles::of(latency),
            delivered,
            delivery_latency_us: Percentiles::of(delivery),
            server_cpu_s: None,
            server_cpu_us_per_record: None,
        }
    }

    /// The run, with the CPU time its server processes spent.
    pub fn with_server_cpu(mut self, cpu: Duration) -> Run {
        let seconds = cpu.as_secs_f64();
        self.server_cpu_s = Some(seconds);
        self.server_cpu_us_per_record = (self.records > 0).then(|| seconds * 1e6 / self.records as f64);
        self
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{:<8} #{}  {:>10} records  {:>7.2} s  {:>10.0} records/s  {:>8.1} MB/s",
            self.server, self.repeat, self.records, self.elapsed_s, self.records_per_s, self.mb_per_s
        );
        if let Some(p) = &self.latency_us {
            line.push_str(&format!(
                "  ack µs p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} max {:.0}",
                p.p50, p.p90, p.p99, p.p99_9, p.max
            ));
        }
        if let (Some(cpu), Some(per_record)) = (self.server_cpu_s, self.server_cpu_us_per_record) {
            line.push_str(&format!("  server CPU {cpu:.2} s = {per_record:.2} µs/record"));
        }
        if let Some(p) = &self.delivery_latency_us {
            line.push_str(&format!(
                "  delivery µs p50 {:.0} p90 {:.0} p99 {:.0} p99.9 {:.0} max {:.0} ({} delivered)",
                p.p50, p.p90, p.p99, p.p99_9, p.max, self.delivered
            ));
        }
        line
    }
}

/// One server's throughput as a fraction of another's (a baseline's), per repetition.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ratio {
    /// The measured server (`ringlog`, `node`, `cluster`).
    pub server: String,
    /// What it is divided by (`bare`, or `node` for the cluster).
    pub baseline: String,
    /// `server records/s / baseline records/s` of each repetition, in order.
    pub each: Vec<f64>,
    /// Their median.
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Ratio {
    /// Pairs the `ringlog` and `bare` runs of each repetition; `None` unless both ran.
    pub fn of(runs: &[Run]) -> Option<Ratio> {
        Ratio::between(runs, "ringlog", "bare")
    }

    /// Every ratio the runs allow: each server to bare tonic, and the cluster to the node.
    pub fn pairs(runs: &[Run]) -> Vec<Ratio> {
        [("ringlog", "bare"), ("node", "bare"), ("cluster", "bare"), ("cluster", "node")]
            .into_iter()
            .filter_map(|(server, baseline)| Ratio::between(runs, server, baseline))
            .collect()
    }

    /// Pairs the `server` and `baseline` runs of each repetition; `None` unless both ran.
    pub fn between(runs: &[Run], server: &str, baseline: &str) -> Option<Ratio> {
        let rate = |server: &str, repeat: u32| {
            runs.iter().find(|r| r.server == server && r.repeat == repeat).map(|r| r.records_per_s)
        };
        let repeats = runs.iter().map(|r| r.repeat).max()?;
        let each: Vec<f64> = (0..=repeats)
            .filter_map(|i| Some(rate(server, i)? / rate(baseline, i)?))
            .filter(|ratio| ratio.is_finite())
            .collect();
        if each.is_empty() {
            return None;
        }
        let mut sorted = each.clone();
        sorted.sort_by(f64::total_cmp);
        let median = if sorted.len() % 2 == 1 {
            sorted[sorted.len() / 2]
        } else {
            (sorted[sorted.len() / 2 - 1] + sorted[sorted.len() / 2]) / 2.0
        };
        Some(Ratio {
            server: server.to_owned(),
            baseline: baseline.to_owned(),
            median,
            min: sorted[0],
            max: sorted[sorted.len() - 1],
            each,
        })
    }
}

/// The whole of `--json FILE`.
#[derive(Debug, Serialize)]
pub struct Report<S: Serialize> {
    /// `ringlog-bench` and its version.
    pub tool: String,
    /// The settings of the run.
    pub settings: S,
    /// CPUs the machine offers (client and server share them).
    pub cpus: usize,
    /// Every measurement, in the order taken.
    pub runs: Vec<Run>,
    /// ringlog as a fraction of bare tonic, when both ran.
    pub ratio_to_bare: Option<Ratio>,
    /// Every pair of servers that ran: each to bare tonic, the cluster to the node.
    pub ratios: Vec<Ratio>,
}

/// What every JSON report starts with: `ringlog-bench` and its version.
pub fn tool() -> String {
    format!("ringlog-bench {}", env!("CARGO_PKG_VERSION"))
}

/// CPUs the machine offers (client and servers share them), for every JSON report.
pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Writes a report to `path` as pretty JSON and says so.
pub fn write_json(path: &Path, report: &impl Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report).context("encoding the report")?;
    std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(server: &str, repeat: u32, records: u64) -> Run {
        Run::new(server, repeat, records, records, 100, Duration::from_secs(1), &histogram(), 0, &histogram())
    }

    #[test]
    fn percentiles_are_in_microseconds_per_record() {
        let mut h = histogram();
        record(&mut h, 1_000, 98); // 98 records at 1 µs
        record(&mut h, 10_000, 1);
        record(&mut h, 5_000_000, 1); // and one at 5 ms
        let p = Percentiles::of(&h).unwrap();
        assert_eq!(p.count, 100);
        assert!((p.p50 - 1.0).abs() < 0.01, "{p:?}");
        assert!((p.p99 - 10.0).abs() < 0.01, "{p:?}");
        assert!((p.max - 5_000.0).abs() / 5_000.0 < 0.001, "{p:?}");
        assert!(Percentiles::of(&histogram()).is_none());
    }

    #[test]
    fn out_of_range_latencies_are_clamped_not_lost() {
        let mut h = histogram();
        record(&mut h, 0, 1);
        record(&mut h, u64::MAX, 1);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn rates_come_from_counts_and_elapsed_time() {
        let r =
            Run::new("bare", 0, 1_000, 10, 1024, Duration::from_millis(500), &histogram(), 0, &histogram());
        assert_eq!(r.records_per_s, 2_000.0);
        assert_eq!(r.value_bytes, 1_024_000);
        assert!((r.mb_per_s - 2.048).abs() < 1e-9);
    }

    #[test]
    fn ratios_pair_runs_of_the_same_repetition() {
        let runs =
            vec![run("bare", 0, 100), run("ringlog", 0, 50), run("ringlog", 1, 90), run("bare", 1, 100)];
        let ratio = Ratio::of(&runs).unwrap();
        assert_eq!(ratio.each, vec![0.5, 0.9]);
        assert!((ratio.median - 0.7).abs() < 1e-9);
        assert_eq!((ratio.min, ratio.max), (0.5, 0.9));
        assert!(Ratio::of(&[run("ringlog", 0, 1)]).is_none());
    }

    #[test]
    fn a_comparison_pairs_each_process_target_with_bare_and_the_cluster_with_the_node() {
        let runs = vec![run("bare", 0, 100), run("node", 0, 50), run("cluster", 0, 20)];
        let pairs: Vec<(String, String, f64)> =
            Ratio::pairs(&runs).into_iter().map(|r| (r.server, r.baseline, r.median)).collect();
        assert_eq!(
            pairs,
            vec![
                ("node".into(), "bare".into(), 0.5),
                ("cluster".into(), "bare".into(), 0.2),
                ("cluster".into(), "node".into(), 0.4)
            ]
        );
    }

    #[test]
    fn server_cpu_is_divided_by_records() {
        let r = run("cluster", 0, 1_000).with_server_cpu(Duration::from_millis(30));
        assert_eq!(r.server_cpu_s, Some(0.03));
        assert!((r.server_cpu_us_per_record.unwrap() - 30.0).abs() < 1e-9);
        assert_eq!(run("node", 0, 0).with_server_cpu(Duration::from_secs(1)).server_cpu_us_per_record, None);
    }

    #[test]
    fn the_json_report_names_settings_runs_and_ratio() {
        #[derive(Serialize)]
        struct Settings {
            workload: &'static str,
        }
        let runs = vec![run("bare", 0, 100), run("ringlog", 0, 60)];
        let report = Report {
            tool: "ringlog bench".into(),
            settings: Settings { workload: "produce-stream" },
            cpus: 2,
            ratio_to_bare: Ratio::of(&runs),
            ratios: Ratio::pairs(&runs),
            runs,
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_json(&path, &report).unwrap();
        let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(json["settings"]["workload"], "produce-stream");
        assert_eq!(json["runs"][1]["records"], 60);
        assert_eq!(json["runs"][1]["records_per_s"], 60.0);
        assert_eq!(json["ratio_to_bare"]["median"], 0.6);
        assert!(json["runs"][0]["latency_us"].is_null());
    }
}
