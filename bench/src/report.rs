//! Figures out: one `RESULT` line per figure, and the `table` subcommand that renders them.

use std::fmt;
use std::io::Write as _;
use std::path::PathBuf;

use hdrhistogram::Histogram;

use crate::Res;
use crate::results::{self, Figure, System, median, spread};
use crate::stats::quantile_us;

#[derive(Clone, Copy)]
pub enum Better {
    Higher,
    Lower,
    None,
}

/// One figure: an id that `table` keys on, the target, the value, and labels for the table.
pub fn emit(id: &str, target: impl Into<System>, value: f64, better: Better, workload: &str, metric: &str) {
    let target = target.into();
    let better = match better {
        Better::Higher => "higher",
        Better::Lower => "lower",
        Better::None => "none",
    };
    println!("RESULT\t{id}\t{target}\t{value}\t{better}\t{workload}\t{metric}");
    let _ = std::io::stdout().flush();
}

pub fn note(message: impl fmt::Display) {
    eprintln!("baton-bench: {message}");
}

/// A histogram's distribution for the charts (the table skips it):
/// `QUANTILES <id> <target> <q>:<µs> <q>:<µs> …` at every percent, and the tail in finer steps.
fn quantiles_line(id: &str, target: System, hist: &Histogram<u64>) -> String {
    let quantiles = (0..100).map(|percent| f64::from(percent) / 100.0).chain([0.995, 0.999, 0.9995, 0.9999, 1.0]);
    let points: Vec<String> = quantiles.map(|q| format!("{q}:{}", quantile_us(hist, q))).collect();
    format!("QUANTILES\t{id}\t{target}\t{}", points.join(" "))
}

/// p50/p99/p99.9 rows for a latency histogram, and its `QUANTILES` line.
pub fn emit_latencies(id: &str, target: impl Into<System>, hist: &Histogram<u64>, workload: &str, what: &str) {
    let target = target.into();
    println!("{}", quantiles_line(id, target, hist));
    for (suffix, q, label) in [("p50", 0.5, "p50"), ("p99", 0.99, "p99"), ("p999", 0.999, "p99.9")] {
        emit(
            &format!("{id}.{suffix}"),
            target,
            quantile_us(hist, q),
            Better::Lower,
            workload,
            &format!("{what} {label} (µs)"),
        );
    }
}

struct Row {
    id: String,
    workload: String,
    metric: String,
    better: String,
    /// Medians over the runs.
    baton: Option<f64>,
    rival: Option<f64>,
    /// Redis or etcd.
    rival_system: System,
    /// baton ÷ rival of each run that measured both.
    ratios: Vec<f64>,
}

impl Row {
    fn of(figure: Figure) -> Row {
        let rival_system = figure.rival();
        Row {
            baton: median(&figure.values(System::Baton)),
            rival: median(&figure.values(rival_system)),
            rival_system,
            ratios: figure.ratios(),
            id: figure.id,
            workload: figure.workload,
            metric: figure.metric,
            better: figure.better,
        }
    }

    /// The median of the runs' ratios (not the ratio of the medians: each run pairs two
    /// servers measured side by side under the same noise).
    fn ratio(&self) -> Option<f64> {
        median(&self.ratios)
    }

    fn ratio_text(&self) -> String {
        let Some(ratio) = self.ratio() else {
            return "—".to_owned();
        };
        let (low, high) = spread(&self.ratios);
        if self.ratios.len() > 1 { format!("{ratio:.2}× ({low:.2}–{high:.2})") } else { format!("{ratio:.2}×") }
    }
}

pub fn thousands(value: f64) -> String {
    let rounded = value.round() as i64;
    let digits = rounded.unsigned_abs().to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    if rounded < 0 { format!("-{out}") } else { out }
}

fn number(value: Option<f64>) -> String {
    match value {
        None => "—".to_owned(),
        Some(value) if value.abs() >= 1000.0 => thousands(value),
        Some(value) if value.abs() >= 100.0 => format!("{value:.0}"),
        Some(value) if value.abs() >= 10.0 => format!("{value:.1}"),
        Some(value) if value == value.trunc() => format!("{value:.0}"),
        Some(value) => format!("{value:.2}"),
    }
}

/// The figures of RESULT lines, one row per figure, runs paired.
fn rows_of(text: &str) -> Res<Vec<Row>> {
    Ok(results::parse(text)?.figures.into_iter().map(Row::of).collect())
}

pub fn table(files: &[PathBuf]) -> Res<()> {
    let rows = rows_of(&results::read(files)?)?;
    let runs = rows.iter().map(|row| row.ratios.len()).max().unwrap_or(0);
    if runs > 1 {
        println!("Medians of {runs} runs; the ratio is the median of the runs' ratios (lowest–highest).");
        println!();
    }
    // A workload measured against etcd goes to the etcd table whole, with its baton-only rows
    // (the single-node baseline).
    let against_etcd: Vec<&str> =
        rows.iter().filter(|row| row.rival_system == System::Etcd).map(|row| row.workload.as_str()).collect();
    let (mut etcd, mut redis): (Vec<&Row>, Vec<&Row>) =
        rows.iter().partition(|row| against_etcd.contains(&row.workload.as_str()));
    // A workload's rows together, in the order the workloads first appear (a baseline measured
    // later joins its workload).
    let first_seen = |row: &&Row| rows.iter().position(|other| other.workload == row.workload);
    etcd.sort_by_key(first_seen);
    redis.sort_by_key(first_seen);
    if !redis.is_empty() {
        rows_table(&redis, "Redis");
        println!("Redis runs the equivalent recipe described for each workload.");
        println!();
    }
    if !etcd.is_empty() {
        rows_table(&etcd, "etcd");
        println!("etcd runs its v3 lock API (Lock and Unlock on each client's lease) on a 3-member cluster.");
        println!();
    }
    targets(&rows);
    Ok(())
}

fn rows_table(rows: &[&Row], rival: &str) {
    println!("| Workload | Metric | baton | {rival} | baton ÷ {rival} |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let mut last_workload = "";
    for row in rows {
        let ratio = row.ratio_text();
        let arrow = match row.better.as_str() {
            "higher" => " ↑",
            "lower" => " ↓",
            _ => "",
        };
        let workload = if row.workload == last_workload { "" } else { row.workload.as_str() };
        last_workload = &row.workload;
        println!("| {workload} | {}{arrow} | {} | {} | {ratio} |", row.metric, number(row.baton), number(row.rival));
    }
    println!();
    println!("↑ higher is better, ↓ lower is better.");
}

/// The targets, each with its figures and whether it is met.
fn targets(rows: &[Row]) {
    let find = |id: &str| rows.iter().find(|row| row.id == id);
    let both = |id: &str| find(id).and_then(|row| Some((row.baton?, row.rival?, row.ratio()?)));
    let mut lines: Vec<(String, String, &str)> = Vec::new();
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for (id, what) in [
        ("w1.p1.rate", "W1 unpipelined cycles/s ≥ 1.0× Redis"),
        ("w1.p16.rate", "W1 pipelined (16) cycles/s ≥ 1.0× Redis"),
        ("w2.p1.rps", "W2 redis-benchmark -P 1 requests/s ≥ 1.0× Redis"),
        ("w2.p16.rps", "W2 redis-benchmark -P 16 requests/s ≥ 1.0× Redis"),
    ] {
        if let Some((baton, redis, ratio)) = both(id) {
            lines.push((
                what.to_owned(),
                format!("{} vs {} = {ratio:.2}×", number(Some(baton)), number(Some(redis))),
                verdict(ratio >= 1.0),
            ));
        }
    }
    let ping = find("w3.ping.p50").and_then(|row| row.baton);
    if let (Some(ping), Some((baton, redis, _))) = (ping, both("w3.handoff.lat.p50")) {
        let ratio = baton / ping;
        lines.push((
            "W3 hand-off p50 ≤ 1.0× PING p50 (baton, same run)".to_owned(),
            format!("{baton:.1} µs vs PING {ping:.1} µs = {ratio:.2}×"),
            verdict(ratio <= 1.0),
        ));
        let ratio = redis / baton;
        lines.push((
            "W3 the Redis recipe's p50 ≥ 2.0× baton's hand-off p50".to_owned(),
            format!("Redis {redis:.1} µs ÷ baton {baton:.1} µs = {ratio:.2}×"),
            verdict(ratio >= 2.0),
        ));
    }
    if let Some((baton, redis, ratio)) = both("w4.n10000.last") {
        let status = if ratio <= 0.5 {
            "met"
        } else if ratio <= 1.0 {
            "MISSED (ahead of Redis)"
        } else {
            "MISSED"
        };
        lines.push((
            "W4 last of 10,000 waiters answered in ≤ 0.5× the time of the last of 10,000 Redis subscribers".to_owned(),
            format!("{baton:.2} ms vs {redis:.2} ms = {ratio:.2}×"),
            status,
        ));
    }
    if let Some((baton, redis, ratio)) = both("w6.lock") {
        lines.push((
            "W6 memory per held lock ≤ Redis".to_owned(),
            format!("{baton:.0} B vs {redis:.0} B = {ratio:.2}×"),
            verdict(ratio <= 1.0),
        ));
    }
    if let Some(fifo) = find("w5.fifo").and_then(|row| row.baton) {
        lines.push(("W5 FIFO violations = 0".to_owned(), format!("{fifo:.0}"), verdict(fifo == 0.0)));
    }
    if let Some((baton, etcd, ratio)) = both("c1.rate") {
        lines.push((
            "C1 cluster lock+unlock cycles/s ≥ 3× etcd".to_owned(),
            format!("{} vs {} = {ratio:.2}×", number(Some(baton)), number(Some(etcd))),
            verdict(ratio >= 3.0),
        ));
    }
    if let (Some(cluster), Some(single)) =
        (find("c1.rate").and_then(|row| row.baton), find("c1.single.rate").and_then(|row| row.baton))
    {
        lines.push((
            "C1 baton cluster ÷ one baton node, same fsync policy (no target)".to_owned(),
            format!("{} vs {} = {:.2}×", number(Some(cluster)), number(Some(single)), cluster / single),
            "measured",
        ));
    }
    if let Some((baton, etcd, ratio)) = both("c2.handoff.lat.p50") {
        lines.push((
            "C2 cluster hand-off p50 ≤ 0.5× etcd".to_owned(),
            format!("{baton:.0} µs vs {etcd:.0} µs = {ratio:.2}×"),
            verdict(ratio <= 0.5),
        ));
    }
    if let Some((baton, etcd, _)) = both("c3.failover.p99") {
        lines.push((
            "C3 failover p99 ≤ 2 s and ≤ etcd's".to_owned(),
            format!("{:.2} s vs {:.2} s", baton / 1e6, etcd / 1e6),
            verdict(baton <= 2e6 && baton <= etcd),
        ));
    }
    if lines.is_empty() {
        return;
    }
    println!("| Target | Figures | Status |");
    println!("| --- | --- | --- |");
    for (what, figures, status) in lines {
        println!("| {what} | {figures} | {status} |");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_grouped_with_commas() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_000.0), "1,000");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
    }

    #[test]
    fn runs_are_paired_and_their_ratios_summed_up_by_the_median() {
        let result = |target: &str, value: f64| format!("RESULT\tw1.p1.rate\t{target}\t{value}\thigher\tW1\tcycles/s");
        let text = [
            "RUN\t1".to_owned(),
            result("baton", 90.0),
            result("redis", 100.0),
            "RUN\t2".to_owned(),
            result("redis", 50.0),
            result("baton", 60.0),
            "RUN\t3".to_owned(),
            result("baton", 100.0),
            result("redis", 100.0),
        ]
        .join("\n");
        let rows = rows_of(&text).unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        assert_eq!((row.baton, row.rival, row.rival_system), (Some(90.0), Some(100.0), System::Redis));
        assert_eq!(row.ratio(), Some(1.0));
        assert_eq!(row.ratio_text(), "1.00× (0.90–1.20)");
    }

    #[test]
    fn a_quantiles_line_reads_back_as_the_histogram_it_came_from() {
        let mut hist = crate::stats::new_hist();
        for us in 1..=1000 {
            hist.record(us * 1000).unwrap();
        }
        let results = results::parse(&quantiles_line("w3.handoff.lat", System::Redis, &hist)).unwrap();
        let [distribution] = &results.distributions[..] else { panic!("one distribution expected") };
        assert_eq!((distribution.id.as_str(), distribution.target), ("w3.handoff.lat", System::Redis));
        let points = &distribution.points;
        assert_eq!(points.len(), 105);
        assert!(points.windows(2).all(|pair| pair[0].0 < pair[1].0 && pair[0].1 <= pair[1].1), "{points:?}");
        assert_eq!((points[0].0, points[104].0), (0.0, 1.0));
        assert!((499.0..=501.0).contains(&points[50].1), "p50 of 1..=1000 µs: {:?}", points[50]);
        assert!((1000.0..=1001.0).contains(&points[104].1), "max: {:?}", points[104]);
    }

    #[test]
    fn numbers_keep_about_three_significant_digits() {
        assert_eq!(number(None), "—");
        assert_eq!(number(Some(123_456.7)), "123,457");
        assert_eq!(number(Some(123.4)), "123");
        assert_eq!(number(Some(12.34)), "12.3");
        assert_eq!(number(Some(3.0)), "3");
        assert_eq!(number(Some(1.234)), "1.23");
    }
}
