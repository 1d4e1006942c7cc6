//! Reading back what the workloads printed: `RESULT` lines (one figure each), `QUANTILES` lines
//! (a latency distribution) and the `RUN <n>` lines with which `scripts/bench.sh --runs` starts each
//! run. Figures before any `RUN` line are run 0. Other lines are ignored. The table (`report`) and
//! the charts (`charts`) are both drawn from this.

use std::fmt;
use std::path::PathBuf;

use crate::cli::{ClusterTarget, Target};
use crate::{Res, fail};

/// Whose figure a line gives: baton's, or its rival's (Redis for the single-server workloads,
/// etcd for the cluster ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Baton,
    Redis,
    Etcd,
}

impl From<Target> for System {
    fn from(target: Target) -> System {
        match target {
            Target::Baton => System::Baton,
            Target::Redis => System::Redis,
        }
    }
}

impl From<ClusterTarget> for System {
    fn from(target: ClusterTarget) -> System {
        match target {
            ClusterTarget::Baton | ClusterTarget::BatonSingle => System::Baton,
            ClusterTarget::Etcd => System::Etcd,
        }
    }
}

impl fmt::Display for System {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            System::Baton => "baton",
            System::Redis => "redis",
            System::Etcd => "etcd",
        })
    }
}

/// One figure, with its values run by run.
pub struct Figure {
    pub id: String,
    pub workload: String,
    pub metric: String,
    /// `higher`, `lower` or `none`.
    pub better: String,
    pub runs: Vec<RunValues>,
}

/// One run's values of a figure.
#[derive(Default)]
pub struct RunValues {
    pub run: usize,
    pub baton: Option<f64>,
    pub redis: Option<f64>,
    pub etcd: Option<f64>,
}

impl RunValues {
    pub fn of(&self, system: System) -> Option<f64> {
        match system {
            System::Baton => self.baton,
            System::Redis => self.redis,
            System::Etcd => self.etcd,
        }
    }

    /// The value baton is measured against in this run (a figure has one rival).
    fn rival(&self) -> Option<f64> {
        self.redis.or(self.etcd)
    }
}

impl Figure {
    /// The system's value in each run that measured it.
    pub fn values(&self, system: System) -> Vec<f64> {
        self.runs.iter().filter_map(|run| run.of(system)).collect()
    }

    /// baton ÷ its rival, of each run that measured both.
    pub fn ratios(&self) -> Vec<f64> {
        self.runs.iter().filter_map(|run| Some(run.baton? / run.rival().filter(|&rival| rival != 0.0)?)).collect()
    }

    /// Whom baton is measured against here: etcd if any run measured it, else Redis.
    pub fn rival(&self) -> System {
        if self.runs.iter().any(|run| run.etcd.is_some()) { System::Etcd } else { System::Redis }
    }
}

/// One run's latency distribution: (quantile, µs) pairs, quantiles ascending.
pub struct Distribution {
    pub id: String,
    pub target: System,
    pub points: Vec<(f64, f64)>,
}

#[derive(Default)]
pub struct Results {
    pub figures: Vec<Figure>,
    pub distributions: Vec<Distribution>,
}

impl Results {
    pub fn figure(&self, id: &str) -> Option<&Figure> {
        self.figures.iter().find(|figure| figure.id == id)
    }
}

/// The text of `files`, or of standard input when there are none.
pub fn read(files: &[PathBuf]) -> Res<String> {
    let mut text = String::new();
    if files.is_empty() {
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
    }
    for file in files {
        text.push_str(&std::fs::read_to_string(file)?);
        text.push('\n');
    }
    Ok(text)
}

fn target_of(name: &str) -> Res<System> {
    match name {
        "baton" => Ok(System::Baton),
        "redis" => Ok(System::Redis),
        "etcd" => Ok(System::Etcd),
        other => fail(format!("unknown target {other}")),
    }
}

/// `q:µs q:µs …` as (quantile, µs) pairs.
fn points_of(text: &str) -> Res<Vec<(f64, f64)>> {
    text.split_whitespace()
        .map(|pair| {
            let (q, us) = pair.split_once(':').ok_or_else(|| format!("bad quantile point {pair:?}"))?;
            Ok((q.parse()?, us.parse()?))
        })
        .collect()
}

pub fn parse(text: &str) -> Res<Results> {
    let mut results = Results::default();
    let mut run = 0;
    for line in text.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        match fields[..] {
            ["RUN", number] => run = number.parse()?,
            ["QUANTILES", id, target, points] => results.distributions.push(Distribution {
                id: id.to_owned(),
                target: target_of(target)?,
                points: points_of(points)?,
            }),
            ["RESULT", id, target, value, better, workload, metric] => {
                let value: f64 = value.parse()?;
                let figures = &mut results.figures;
                let index = match figures.iter().position(|figure| figure.id == id && figure.workload == workload) {
                    Some(index) => index,
                    None => {
                        figures.push(Figure {
                            id: id.to_owned(),
                            workload: workload.to_owned(),
                            metric: metric.to_owned(),
                            better: better.to_owned(),
                            runs: Vec::new(),
                        });
                        figures.len() - 1
                    }
                };
                let runs = &mut figures[index].runs;
                if runs.last().is_none_or(|last| last.run != run) {
                    runs.push(RunValues { run, ..RunValues::default() });
                }
                let this_run = runs.last_mut().expect("pushed above");
                let slot = match target_of(target)? {
                    System::Baton => &mut this_run.baton,
                    System::Redis => &mut this_run.redis,
                    System::Etcd => &mut this_run.etcd,
                };
                *slot = Some(value);
            }
            _ => {}
        }
    }
    Ok(results)
}

pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => Some(sorted[middle]),
        _ => Some((sorted[middle - 1] + sorted[middle]) / 2.0),
    }
}

/// The lowest and the highest value (infinities for none).
pub fn spread(values: &[f64]) -> (f64, f64) {
    let low = values.iter().copied().fold(f64::INFINITY, f64::min);
    let high = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (low, high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_told_apart_by_id_and_workload_and_values_kept_by_run() {
        let text = "RUN\t1\n\
            RESULT\tw1.p1.rate\tbaton\t90\thigher\tW1, 50 conns\tcycles/s\n\
            RESULT\tw1.p1.rate\tredis\t100\thigher\tW1, 50 conns\tcycles/s\n\
            RESULT\tw1.p1.rate\tbaton\t7\thigher\tW1, 10 conns\tcycles/s\n\
            RUN\t2\n\
            a line of something else\n\
            RESULT\tw1.p1.rate\tbaton\t60\thigher\tW1, 50 conns\tcycles/s\n";
        let results = parse(text).unwrap();
        assert_eq!(results.figures.len(), 2);
        let figure = results.figure("w1.p1.rate").unwrap();
        assert_eq!(figure.values(System::Baton), [90.0, 60.0]);
        assert_eq!(figure.values(System::Redis), [100.0]);
        assert_eq!(figure.ratios(), [0.9], "only run 1 measured both");
        assert_eq!(figure.rival(), System::Redis);
        assert_eq!(results.figures[1].values(System::Baton), [7.0]);
        assert!(results.figure("w1.p16.rate").is_none());
    }

    #[test]
    fn etcd_is_the_rival_of_the_cluster_figures() {
        let text = "RESULT\tc1.rate\tetcd\t100\thigher\tC1\tcycles/s\n\
            RESULT\tc1.rate\tbaton\t400\thigher\tC1\tcycles/s\n\
            RESULT\tc1.single.rate\tbaton\t800\thigher\tC1\tcycles/s\n";
        let results = parse(text).unwrap();
        let figure = results.figure("c1.rate").unwrap();
        assert_eq!((figure.rival(), figure.ratios()), (System::Etcd, vec![4.0]));
        assert_eq!(figure.values(System::Redis), [] as [f64; 0]);
        assert!(results.figure("c1.single.rate").unwrap().ratios().is_empty(), "baton alone has no ratio");
    }

    #[test]
    fn distributions_keep_their_points() {
        let text = "RUN\t2\nQUANTILES\tw3.handoff.lat\tredis\t0:10 0.5:20.5 1:80\n";
        let results = parse(text).unwrap();
        let [distribution] = &results.distributions[..] else { panic!("one distribution expected") };
        assert_eq!((distribution.id.as_str(), distribution.target), ("w3.handoff.lat", System::Redis));
        assert_eq!(distribution.points, [(0.0, 10.0), (0.5, 20.5), (1.0, 80.0)]);
        assert!(parse("QUANTILES\tx\tbaton\t0.5-20").is_err());
        assert!(parse("RESULT\tx\tother\t1\thigher\tW\tm").is_err());
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[1.0, 3.0]), Some(2.0));
        assert_eq!(spread(&[2.0, 1.0, 3.0]), (1.0, 3.0));
    }
}
