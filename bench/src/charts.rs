//! SVG charts of the results, drawn with plotters' SVG backend (no fonts needed: the viewer sets
//! the text). Each chart is drawn only when the results have its figures:
//!
//! - `handoff-cdf.svg`: W3's hand-off latency distribution, baton vs Redis, one curve per run;
//! - `throughput.svg`: W1 cycles/s and W2 requests/s, baton vs Redis, the median of the runs with
//!   their lowest and highest as an error bar;
//! - `scale-held.svg`, `scale-queue.svg`, `scale-memory.svg`: the scale curves S1, S2 and S3.

use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::coord::combinators::NestedValue;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::Res;
use crate::results::{Figure, Results, System, median, spread};

const SIZE: (u32, u32) = (760, 440);
const BATON: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
const REDIS: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const ETCD: RGBColor = RGBColor(0x2c, 0xa0, 0x2c);

fn color(target: System) -> RGBColor {
    match target {
        System::Baton => BATON,
        System::Redis => REDIS,
        System::Etcd => ETCD,
    }
}

fn name(target: System) -> &'static str {
    match target {
        System::Baton => "baton",
        System::Redis => "Redis",
        System::Etcd => "etcd",
    }
}

/// Writes every chart the results have figures for into `dir`; returns the files written.
pub fn write_all(results: &Results, dir: &Path) -> Res<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let charts = [
        ("handoff-cdf.svg", handoff_cdf(results)?),
        ("throughput.svg", throughput(results)?),
        ("scale-held.svg", scale(results, &HELD)?),
        ("scale-queue.svg", scale(results, &QUEUE)?),
        ("scale-memory.svg", scale(results, &MEMORY)?),
    ];
    let mut written = Vec::new();
    for (file, svg) in charts {
        if let Some(svg) = svg {
            let path = dir.join(file);
            std::fs::write(&path, svg)?;
            written.push(path);
        }
    }
    Ok(written)
}

/// The series' legend, in the upper left corner.
fn legend<'a, 'b: 'a, CT: CoordTranslate>(chart: &mut ChartContext<'a, SVGBackend<'b>, CT>) -> Res<()> {
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()?;
    Ok(())
}

/// Draws on a white SVG canvas and returns the SVG text.
fn svg(draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Res<()>) -> Res<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        draw(&root)?;
        root.present()?;
    }
    Ok(text)
}

/// A median with the lowest and highest of the runs around it.
#[derive(Clone, Copy)]
struct Spread {
    median: f64,
    low: f64,
    high: f64,
}

impl Spread {
    fn of(values: &[f64]) -> Option<Spread> {
        let median = median(values)?;
        let (low, high) = spread(values);
        Some(Spread { median, low, high })
    }
}

/// One curve: (x, y and its spread) points, x ascending.
struct Curve {
    /// Legend entry; None for the second and later runs of a series already in the legend.
    label: Option<String>,
    color: RGBColor,
    dashed: bool,
    points: Vec<(f64, Spread)>,
}

/// A chart of curves over a logarithmic x axis.
struct Axes {
    caption: String,
    x_desc: &'static str,
    y_desc: &'static str,
    x_label: fn(f64) -> String,
}

/// Draws `curves` over a logarithmic x axis and the y axis `y` (linear or logarithmic).
fn curves_chart<Y: Ranged<ValueType = f64> + ValueFormatter<f64>>(axes: &Axes, curves: &[Curve], y: Y) -> Res<String> {
    let xs = || curves.iter().flat_map(|curve| curve.points.iter().map(|&(x, _)| x)).filter(|&x| x > 0.0);
    let low = xs().fold(f64::INFINITY, f64::min);
    let high = xs().fold(f64::NEG_INFINITY, f64::max);
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(&axes.caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (low / 1.5..high * 1.5).log_scale().with_key_points(log_ticks(low / 1.5, high * 1.5)),
                y,
            )?;
        chart
            .configure_mesh()
            .x_desc(axes.x_desc)
            .y_desc(axes.y_desc)
            .x_label_formatter(&|x| (axes.x_label)(*x))
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        for curve in curves {
            let line = curve.points.iter().map(|&(x, y)| (x, y.median));
            let style = curve.color.stroke_width(2);
            let drawn = if curve.dashed {
                chart.draw_series(DashedLineSeries::new(line, 8, 5, style))?
            } else {
                chart.draw_series(LineSeries::new(line, style))?
            };
            match &curve.label {
                Some(label) if curve.dashed => drawn.label(label).legend(move |(x, y)| {
                    EmptyElement::at((x, y))
                        + PathElement::new([(0, 0), (8, 0)], style)
                        + PathElement::new([(13, 0), (21, 0)], style)
                }),
                Some(label) => drawn.label(label).legend(move |(x, y)| PathElement::new([(x, y), (x + 21, y)], style)),
                None => drawn,
            };
            let spreads = curve.points.iter().filter(|(_, y)| y.high > y.low);
            chart.draw_series(
                spreads.map(|&(x, y)| ErrorBar::new_vertical(x, y.low, y.median, y.high, curve.color, 8)),
            )?;
            if curve.points.len() <= 12 {
                chart.draw_series(
                    curve.points.iter().map(|&(x, y)| Circle::new((x, y.median), 3, curve.color.filled())),
                )?;
            }
        }
        legend(&mut chart)
    })
}

/// Ticks for a logarithmic axis from `low` to `high`: the powers of ten, and their doubles and
/// fives too when there are fewer than four powers.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let decades = (low.log10().floor() as i32)..=(high.log10().ceil() as i32);
    let within =
        |ticks: Vec<f64>| -> Vec<f64> { ticks.into_iter().filter(|tick| (low..=high).contains(tick)).collect() };
    let powers = within(decades.clone().map(|decade| 10f64.powi(decade)).collect());
    if powers.len() >= 4 {
        return powers;
    }
    within(decades.flat_map(|decade| [1.0, 2.0, 5.0].map(|step| step * 10f64.powi(decade))).collect())
}

/// 1,234 → "1.2k", 5,000,000 → "5M".
fn short(value: f64) -> String {
    let trimmed = |scaled: f64, unit: &str| {
        let text = format!("{scaled:.1}");
        format!("{}{unit}", text.strip_suffix(".0").unwrap_or(&text))
    };
    match value.abs() {
        v if v >= 1e6 => trimmed(value / 1e6, "M"),
        v if v >= 1e3 => trimmed(value / 1e3, "k"),
        v if v >= 10.0 || v == v.trunc() => format!("{value:.0}"),
        _ => format!("{value:.1}"),
    }
}

/// (a) W3's hand-off latency distribution: the fraction of hand-offs within x µs.
fn handoff_cdf(results: &Results) -> Res<Option<String>> {
    let mut curves = Vec::new();
    let mut runs = 0;
    for target in [System::Baton, System::Redis] {
        let distributions = results.distributions.iter().filter(|d| d.id == "w3.handoff.lat" && d.target == target);
        for (index, distribution) in distributions.enumerate() {
            runs = runs.max(index + 1);
            curves.push(Curve {
                label: (index == 0).then(|| name(target).to_owned()),
                color: color(target),
                dashed: false,
                points: distribution
                    .points
                    .iter()
                    .map(|&(q, us)| (us, Spread { median: q, low: q, high: q }))
                    .collect(),
            });
        }
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let waiters = results
        .figure("w3.handoff.lat.p50")
        .map(|figure| figure.workload.trim_start_matches("W3 hand-off, ").to_owned())
        .unwrap_or_default();
    let axes = Axes {
        caption: format!("W3 hand-off latency, {waiters} ({})", plural(runs, "run")),
        x_desc: "µs from the holder's unlock to the next holder's grant (log)",
        y_desc: "fraction of hand-offs",
        x_label: short,
    };
    curves_chart(&axes, &curves, RangedCoordf64::from(0.0..1.0)).map(Some)
}

fn plural(count: usize, what: &str) -> String {
    if count == 1 { format!("1 {what}") } else { format!("{count} {what}s") }
}

/// The throughput figures (W1 `w1.p<N>.rate`, W2 `w2.p<N>.rps`) with a short label each.
fn throughput_figures(results: &Results) -> Vec<(String, &Figure)> {
    let pipeline = |id: &str, prefix: &str, suffix: &str| -> Option<u32> {
        id.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
    };
    results
        .figures
        .iter()
        .filter_map(|figure| {
            let label = match (pipeline(&figure.id, "w1.p", ".rate"), pipeline(&figure.id, "w2.p", ".rps")) {
                (Some(1), _) => "W1 unpipelined".to_owned(),
                (Some(depth), _) => format!("W1 pipeline {depth}"),
                (_, Some(depth)) => format!("W2 -P {depth}"),
                (None, None) => return None,
            };
            Some((label, figure))
        })
        .collect()
}

/// (b) Throughput bars per workload, baton beside Redis.
fn throughput(results: &Results) -> Res<Option<String>> {
    let figures = throughput_figures(results);
    if figures.is_empty() {
        return Ok(None);
    }
    let labels: Vec<String> = figures.iter().map(|(label, _)| label.clone()).collect();
    let runs = figures.iter().map(|(_, figure)| figure.runs.len()).max().unwrap_or(0);
    let bars: Vec<(usize, System, Spread)> = figures
        .iter()
        .enumerate()
        .flat_map(|(index, (_, figure))| {
            [System::Baton, System::Redis]
                .into_iter()
                .filter_map(move |target| Some((index, target, Spread::of(&figure.values(target))?)))
        })
        .collect();
    let top = bars.iter().map(|(_, _, bar)| bar.high).fold(0.0, f64::max).max(1.0) * 1.15;
    let caption = if runs > 1 {
        format!("Throughput, median of {runs} runs (lines: lowest–highest)")
    } else {
        "Throughput, 1 run".to_owned()
    };
    svg(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(64)
            // Integer ranges include their end: one category per label.
            .build_cartesian_2d((0..labels.len() - 1).nested_coord(|_| 0.0..1.0), 0.0..top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(labels.len())
            .x_label_formatter(&|value| match value {
                NestedValue::Category(index) => labels[*index].clone(),
                NestedValue::Value(..) => String::new(),
            })
            .y_desc("cycles/s (W1), requests/s (W2)")
            .y_label_formatter(&|y| short(*y))
            .draw()?;
        for (target, from, to) in [(System::Baton, 0.12, 0.48), (System::Redis, 0.52, 0.88)] {
            let at = |index: usize, offset: f64| NestedValue::Value(index, offset);
            let ours = || bars.iter().filter(move |(_, of, _)| *of == target);
            let fill = color(target).filled();
            chart
                .draw_series(ours().map(|&(index, _, bar)| {
                    Rectangle::new([(at(index, from), 0.0), (at(index, to), bar.median)], fill)
                }))?
                .label(name(target))
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], fill));
            let middle = (from + to) / 2.0;
            chart.draw_series(ours().filter(|(_, _, bar)| bar.high > bar.low).map(|&(index, _, bar)| {
                ErrorBar::new_vertical(at(index, middle), bar.low, bar.median, bar.high, BLACK.stroke_width(1), 8)
            }))?;
            let text = ("sans-serif", 12).into_font().color(&BLACK).pos(Pos::new(HPos::Center, VPos::Bottom));
            chart.draw_series(ours().map(|&(index, _, bar)| {
                Text::new(short(bar.median), (at(index, middle), bar.high.max(bar.median) + top * 0.01), text.clone())
            }))?;
        }
        legend(&mut chart)
    })
    .map(Some)
}

/// A scale curve chart: figures `<prefix>.n<N><suffix>`, one curve per target and suffix.
struct ScaleChart {
    prefix: &'static str,
    /// (id suffix, legend suffix, dashed).
    series: &'static [(&'static str, &'static str, bool)],
    caption: &'static str,
    x_desc: &'static str,
    y_desc: &'static str,
    /// A logarithmic y axis, for latencies whose p99 is many times their p50.
    y_log: bool,
}

const LATENCIES: &[(&str, &str, bool)] = &[(".lat.p50", "p50", false), (".lat.p99", "p99", true)];

const HELD: ScaleChart = ScaleChart {
    prefix: "s1",
    series: LATENCIES,
    caption: "S1: TRY+UNLOCK latency (1 conn, unpipelined) vs other locks held",
    x_desc: "other locks held (log)",
    y_desc: "µs per cycle (log)",
    y_log: true,
};

const QUEUE: ScaleChart = ScaleChart {
    prefix: "s2",
    series: LATENCIES,
    caption: "S2: hand-off latency vs owners in line on the key (baton)",
    x_desc: "owners in line, head included (log)",
    y_desc: "µs unlock → grant (log)",
    y_log: true,
};

const MEMORY: ScaleChart = ScaleChart {
    prefix: "s3",
    series: &[(".lock", "", false)],
    caption: "S3: RSS growth per held lock vs locks held",
    x_desc: "locks held (log)",
    y_desc: "bytes per lock",
    y_log: false,
};

/// N of a figure id `<prefix>.n<N><suffix>`.
fn level_of(id: &str, prefix: &str, suffix: &str) -> Option<f64> {
    id.strip_prefix(prefix)?.strip_prefix(".n")?.strip_suffix(suffix)?.parse::<u64>().ok().map(|n| n as f64)
}

/// (c) A scale curve: how a figure moves with the state the server keeps.
fn scale(results: &Results, spec: &ScaleChart) -> Res<Option<String>> {
    let mut curves = Vec::new();
    let mut runs = 0;
    for target in [System::Baton, System::Redis] {
        for &(suffix, legend, dashed) in spec.series {
            let mut points: Vec<(f64, Spread)> = results
                .figures
                .iter()
                .filter_map(|figure| {
                    let level = level_of(&figure.id, spec.prefix, suffix)?;
                    let values = figure.values(target);
                    runs = runs.max(values.len());
                    Some((level, Spread::of(&values)?))
                })
                .collect();
            if points.is_empty() {
                continue;
            }
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = format!("{} {legend}", name(target)).trim_end().to_owned();
            curves.push(Curve { label: Some(label), color: color(target), dashed, points });
        }
    }
    if curves.is_empty() {
        return Ok(None);
    }
    let ys = || curves.iter().flat_map(|curve| curve.points.iter().flat_map(|(_, y)| [y.low, y.high]));
    let (bottom, top) = (ys().fold(f64::INFINITY, f64::min), ys().fold(0.0, f64::max));
    let axes = Axes {
        caption: if runs > 1 { format!("{} (median of {runs} runs)", spec.caption) } else { spec.caption.to_owned() },
        x_desc: spec.x_desc,
        y_desc: spec.y_desc,
        x_label: |x| short(x.round()),
    };
    if spec.y_log {
        let (low, high) = (bottom.max(0.1) / 2.0, top.max(1.0) * 2.0);
        curves_chart(&axes, &curves, (low..high).log_scale().with_key_points(log_ticks(low, high))).map(Some)
    } else {
        curves_chart(&axes, &curves, RangedCoordf64::from(0.0..top.max(1.0) * 1.2)).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::parse;

    /// Synthetic lines for every chart: two runs of W1, W2, W3 and the three scale curves.
    fn synthetic() -> String {
        let mut lines = Vec::new();
        let result = |id: &str, target: &str, value: f64| format!("RESULT\t{id}\t{target}\t{value}\tlower\tW\tm");
        for run in 1..=2 {
            let wobble = f64::from(run) * 0.1;
            lines.push(format!("RUN\t{run}"));
            for (target, scale) in [("baton", 1.0), ("redis", 1.3)] {
                lines.push(result("w1.p1.rate", target, 40_000.0 * scale + wobble));
                lines.push(result("w1.p16.rate", target, 90_000.0 / scale));
                lines.push(result("w2.p1.rps", target, 70_000.0 * scale));
                lines.push(result("w2.p16.rps", target, 300_000.0 * (scale + wobble)));
                let points: Vec<String> =
                    (0..=100).map(|p| format!("{}:{}", p as f64 / 100.0, 20.0 * scale + p as f64)).collect();
                lines.push(format!("QUANTILES\tw3.handoff.lat\t{target}\t{}", points.join(" ")));
                lines.push(result("w3.handoff.lat.p50", target, 70.0 * scale));
                for level in [1_000, 100_000, 1_000_000] {
                    lines.push(result(&format!("s1.n{level}.lat.p50"), target, 30.0 * scale + wobble));
                    lines.push(result(&format!("s1.n{level}.lat.p99"), target, 90.0 * scale));
                    lines.push(result(&format!("s3.n{level}.lock"), target, 150.0 * scale));
                }
            }
            for level in [10, 10_000, 1_000_000] {
                lines.push(result(&format!("s2.n{level}.lat.p50"), "baton", 40.0 + wobble));
                lines.push(result(&format!("s2.n{level}.lat.p99"), "baton", 120.0));
            }
        }
        lines.join("\n")
    }

    /// Parses as XML with an `svg` root, and has the texts it should.
    fn assert_svg(path: &Path, texts: &[&str]) {
        let text = std::fs::read_to_string(path).unwrap();
        let document = roxmltree::Document::parse(&text).unwrap_or_else(|error| panic!("{path:?}: {error}"));
        assert_eq!(document.root_element().tag_name().name(), "svg", "{path:?}");
        let shown: Vec<&str> = document.descendants().filter_map(|node| node.text()).map(str::trim).collect();
        for want in texts {
            assert!(shown.contains(want), "{path:?} shows no {want:?}: {shown:?}");
        }
    }

    #[test]
    fn every_chart_is_a_well_formed_svg_with_its_series() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_all(&parse(&synthetic()).unwrap(), dir.path()).unwrap();
        let names: Vec<_> = written.iter().map(|path| path.file_name().unwrap().to_str().unwrap()).collect();
        assert_eq!(
            names,
            ["handoff-cdf.svg", "throughput.svg", "scale-held.svg", "scale-queue.svg", "scale-memory.svg"]
        );
        assert_svg(&written[0], &["baton", "Redis"]);
        assert_svg(&written[1], &["baton", "Redis", "W1 unpipelined", "W1 pipeline 16", "W2 -P 1", "W2 -P 16", "40k"]);
        assert_svg(&written[2], &["baton p50", "baton p99", "Redis p50", "Redis p99", "1M"]);
        assert_svg(&written[3], &["baton p50", "baton p99"]);
        assert_svg(&written[4], &["baton", "Redis"]);
    }

    #[test]
    fn charts_without_their_figures_are_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let only_memory = "RESULT\ts3.n10000.lock\tbaton\t180\tlower\tS3\tB";
        let written = write_all(&parse(only_memory).unwrap(), dir.path()).unwrap();
        assert_eq!(written, [dir.path().join("scale-memory.svg")]);
        assert!(write_all(&parse("").unwrap(), &dir.path().join("none")).unwrap().is_empty());
    }

    #[test]
    fn short_numbers() {
        assert_eq!(short(5_000_000.0), "5M");
        assert_eq!(short(1_240.0), "1.2k");
        assert_eq!(short(100_000.0), "100k");
        assert_eq!(short(42.0), "42");
        assert_eq!(log_ticks(8.0, 120_000.0), [10.0, 100.0, 1_000.0, 10_000.0, 100_000.0]);
        assert_eq!(log_ticks(15.0, 600.0), [20.0, 50.0, 100.0, 200.0, 500.0]);
        assert_eq!(short(0.5), "0.5");
        assert_eq!(level_of("s1.n100000.lat.p50", "s1", ".lat.p50"), Some(100_000.0));
        assert_eq!(level_of("s1.n100000.lat.p99", "s1", ".lat.p50"), None);
        assert_eq!(level_of("s10.n5.lock", "s1", ".lock"), None);
    }
}
