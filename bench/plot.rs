//! Draws the end-to-end benchmark plots from the results.json that `bench/e2e.py --plots DIR` writes.
//!
//! - `echo-throughput.svg`: transactions per second against connections (echo-1, -16, -64, -1024), one line per
//!   stack, with the reflector's rate (`raw-1`, `raw-64`: AF_XDP alone, no TCP) marked where it was measured, and
//!   the kernel's rate when it blocks in epoll_wait (`block-1`).
//! - `echo-latency.svg`: p50, p90, p99 and p99.9 round trips of echo-1 and echo-64 for each stack.
//!
//! Both have a logarithmic y axis and a note of the machine (CPUs, kernel, load average, date). Workloads missing
//! from the file are left out; a plot with nothing to show is not written. scripts/bench.sh runs this after
//! e2e.py; by hand:
//!
//! ```sh
//! cargo run --release --locked --example plot -- docs/bench/results.json docs/bench
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

/// Width and height of each plot, in pixels.
const SIZE_PX: (u32, u32) = (800, 450);
/// Width of the legend, right of the chart, in pixels.
const LEGEND_PX: u32 = 210;
/// Height of the strip under the chart that holds the machine note, in pixels.
const NOTE_PX: u32 = 22;
/// Font sizes: plotters' SVG backend writes `size / 1.24` px (the title 14.5 px, the labels 12.1 px, the note 10.5).
const TITLE_FONT: u32 = 18;
const LABEL_FONT: u32 = 15;
const NOTE_FONT: u32 = 13;

/// xtcp's colour and the kernel's (matplotlib's red and blue).
const XTCP_RED: RGBColor = RGBColor(0xd6, 0x27, 0x28);
const KERNEL_BLUE: RGBColor = RGBColor(0x1f, 0x77, 0xb4);
/// The reflector's marks.
const RAW_GREY: RGBColor = RGBColor(0x44, 0x44, 0x44);

/// The stacks, with their names on the plots and their colours.
const STACKS: [(Stack, &str, RGBColor); 2] = [(Stack::Xdp, "xtcp", XTCP_RED), (Stack::Kernel, "kernel", KERNEL_BLUE)];

/// The echo workloads of the throughput plot, by connection count.
const ECHO_CONNECTIONS: [u32; 4] = [1, 16, 64, 1024];
/// The echo workloads of the latency plot, by connection count: the second is drawn dashed.
const LATENCY_CONNECTIONS: [u32; 2] = [1, 64];
/// The reflector's ping-pong runs (`raw-N`: N frames in flight) marked on the throughput plot.
const RAW_IN_FLIGHT: [u32; 2] = [1, 64];

/// What is read of results.json; every other field is ignored.
#[derive(Debug, Deserialize)]
struct Results {
    machine: Machine,
    /// Workload key (`echo-64`, `raw-1`...) → the chosen pair of reports.
    runs: BTreeMap<String, Run>,
}

/// The machine the run was on, as e2e.py recorded it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Machine {
    kernel: String,
    cpus: Option<u32>,
    load_average_before: String,
    date_utc: String,
}

/// One workload: the report of each stack that ran it (the reflector's runs have only `xdp`).
#[derive(Debug, Deserialize)]
struct Run {
    xdp: Option<Report>,
    kernel: Option<Report>,
}

/// An `xtcp load --json` report, or the reflector's (`frames_per_sec`, no `latency`).
#[derive(Debug, Deserialize)]
struct Report {
    requests_per_sec: Option<f64>,
    frames_per_sec: Option<f64>,
    latency: Option<Latency>,
}

/// Round-trip percentiles, in microseconds.
#[derive(Debug, Deserialize)]
struct Latency {
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
    p999_us: f64,
}

/// Which report of a [`Run`].
#[derive(Debug, Clone, Copy)]
enum Stack {
    Xdp,
    Kernel,
}

impl Stack {
    /// results.json's key for the stack's report.
    fn key(self) -> &'static str {
        match self {
            Stack::Xdp => "xdp",
            Stack::Kernel => "kernel",
        }
    }
}

impl Run {
    fn report(&self, stack: Stack) -> Option<&Report> {
        match stack {
            Stack::Xdp => self.xdp.as_ref(),
            Stack::Kernel => self.kernel.as_ref(),
        }
    }
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy)]
enum Look {
    /// A solid line through dots.
    Solid,
    /// A dashed line through triangles.
    Dashed,
    /// Crosses only: reference values, not one of the lines (the reflector's, the blocking kernel's).
    Crosses,
}

/// One line (or row of marks) of a chart.
#[derive(Debug)]
struct Series {
    label: String,
    color: RGBColor,
    look: Look,
    /// (index into the chart's categories, value > 0).
    points: Vec<(usize, f64)>,
}

/// A chart with categories along x (evenly spaced) and a logarithmic y axis.
#[derive(Debug)]
struct Chart {
    title: String,
    x_desc: String,
    y_desc: String,
    categories: Vec<String>,
    series: Vec<Series>,
    note: String,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [results, outdir] = args.as_slice() else {
        eprintln!("usage: plot RESULTS_JSON OUTDIR (draws echo-throughput.svg and echo-latency.svg into OUTDIR)");
        return ExitCode::from(2);
    };
    match run(Path::new(results), Path::new(outdir)) {
        Ok(written) if written.is_empty() => {
            println!("plot: no echo workload in {results}, nothing drawn");
            ExitCode::SUCCESS
        }
        Ok(written) => {
            for path in written {
                println!("plot: {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("plot: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads `results`, writes the plots it has data for into `outdir` (made if missing) and returns their paths.
fn run(results: &Path, outdir: &Path) -> Result<Vec<PathBuf>, String> {
    let text = std::fs::read_to_string(results).map_err(|e| format!("cannot read {}: {e}", results.display()))?;
    let results: Results = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a results.json of bench/e2e.py: {e}", results.display()))?;
    let mut svgs = Vec::new();
    for (name, chart) in [("echo-throughput.svg", throughput(&results)?), ("echo-latency.svg", latency(&results)?)] {
        if let Some(chart) = chart {
            svgs.push((name, draw(&chart).map_err(|e| format!("drawing {name}: {e}"))?));
        }
    }
    if !svgs.is_empty() {
        std::fs::create_dir_all(outdir).map_err(|e| format!("cannot make {}: {e}", outdir.display()))?;
    }
    let mut written = Vec::new();
    for (name, svg) in svgs {
        let path = outdir.join(name);
        std::fs::write(&path, svg).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// The note under each plot: "2 CPUs, kernel 6.18.44, load average 1.55 1.53 2.68; 2026-12-07 14:51 UTC".
fn note(m: &Machine) -> String {
    let cpus = m.cpus.map_or_else(|| "? CPUs".to_owned(), |n| format!("{n} CPUs"));
    format!("{cpus}, kernel {}, load average {}; {} UTC", m.kernel, m.load_average_before, m.date_utc)
}

/// A report's field that a plot needs, or an error naming where it is missing.
fn field<T>(value: Option<T>, key: &str, stack: Stack, name: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("runs.{key}.{} has no {name}", stack.key()))
}

/// Transactions per second against connections, from the echo-N workloads present.
fn throughput(results: &Results) -> Result<Option<Chart>, String> {
    let present: Vec<(u32, &Run)> =
        ECHO_CONNECTIONS.iter().filter_map(|&n| results.runs.get(&format!("echo-{n}")).map(|r| (n, r))).collect();
    if present.is_empty() {
        return Ok(None);
    }
    let mut series = Vec::new();
    for (stack, name, color) in STACKS {
        let mut points = Vec::new();
        for (i, &(n, run)) in present.iter().enumerate() {
            if let Some(report) = run.report(stack) {
                points.push((i, field(report.requests_per_sec, &format!("echo-{n}"), stack, "requests_per_sec")?));
            }
        }
        series.push(Series { label: name.to_owned(), color, look: Look::Solid, points });
    }
    // The reflector bounces frames without TCP: the most AF_XDP gives a round trip on this machine.
    let mut raw = Vec::new();
    for n in RAW_IN_FLIGHT {
        let key = format!("raw-{n}");
        let (Some(report), Some(i)) =
            (results.runs.get(&key).and_then(|r| r.xdp.as_ref()), present.iter().position(|&(conns, _)| conns == n))
        else {
            continue;
        };
        raw.push((i, field(report.frames_per_sec, &key, Stack::Xdp, "frames_per_sec")?));
    }
    if !raw.is_empty() {
        series.push(Series {
            label: "AF_XDP alone, no TCP".to_owned(),
            color: RAW_GREY,
            look: Look::Crosses,
            points: raw,
        });
    }
    // block-1: the kernel's loop blocking in epoll_wait whenever idle, as ordinary kernel programs run.
    if let (Some(report), Some(i)) =
        (results.runs.get("block-1").and_then(|r| r.kernel.as_ref()), present.iter().position(|&(conns, _)| conns == 1))
    {
        series.push(Series {
            label: "kernel, blocking".to_owned(),
            color: KERNEL_BLUE,
            look: Look::Crosses,
            points: vec![(i, field(report.requests_per_sec, "block-1", Stack::Kernel, "requests_per_sec")?)],
        });
    }
    Ok(Some(Chart {
        title: "echo, 64-byte messages: transactions per second".to_owned(),
        x_desc: "connections".to_owned(),
        y_desc: "transactions/s".to_owned(),
        categories: present.iter().map(|(n, _)| n.to_string()).collect(),
        series: positive(series),
        note: note(&results.machine),
    }))
}

/// p50, p90, p99 and p99.9 of echo-1 and echo-64 for each stack; 64 connections dashed, with triangles.
fn latency(results: &Results) -> Result<Option<Chart>, String> {
    let mut series = Vec::new();
    for (j, n) in LATENCY_CONNECTIONS.into_iter().enumerate() {
        let key = format!("echo-{n}");
        let Some(run) = results.runs.get(&key) else { continue };
        for (stack, name, color) in STACKS {
            let Some(report) = run.report(stack) else { continue };
            let lat = field(report.latency.as_ref(), &key, stack, "latency")?;
            // A round trip under a microsecond reads 0: drawn at 1 µs, the axis's floor.
            let points = [lat.p50_us, lat.p90_us, lat.p99_us, lat.p999_us].map(|us| us.max(1.0));
            let look = if j == 0 { Look::Solid } else { Look::Dashed };
            let plural = if n == 1 { "connection" } else { "connections" };
            series.push(Series {
                label: format!("{name}, {n} {plural}"),
                color,
                look,
                points: points.into_iter().enumerate().collect(),
            });
        }
    }
    if series.is_empty() {
        return Ok(None);
    }
    Ok(Some(Chart {
        title: "echo, 64-byte messages: round-trip latency percentiles".to_owned(),
        x_desc: "percentile".to_owned(),
        y_desc: "µs".to_owned(),
        categories: ["p50", "p90", "p99", "p99.9"].map(str::to_owned).into(),
        series: positive(series),
        note: note(&results.machine),
    }))
}

/// Drops the points a logarithmic axis cannot show (a failed run's rate of 0), then the series left empty.
fn positive(mut series: Vec<Series>) -> Vec<Series> {
    for s in &mut series {
        s.points.retain(|&(_, v)| v.is_finite() && v > 0.0);
    }
    series.retain(|s| !s.points.is_empty());
    series
}

/// The y axis for values in `lo..=hi` (0 < lo <= hi): its ends, the 1-2-5 steps just outside the values (never the
/// same step twice), and the steps from one end to the other, its ticks.
fn ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let mut steps = Vec::new();
    let mut exponent = lo.log10().floor() as i32;
    while steps.last().is_none_or(|&v| v <= hi) {
        steps.extend([1.0, 2.0, 5.0].map(|m| m * 10f64.powi(exponent)));
        exponent += 1;
    }
    let bottom = steps.iter().rev().copied().find(|&v| v <= lo).unwrap_or(steps[0]);
    let top = steps.iter().copied().find(|&v| v >= hi && v > bottom).unwrap_or(hi);
    steps.retain(|&v| v >= bottom && v <= top);
    (bottom, top, steps)
}

/// A tick label: 500, 2k, 1.5M.
fn short(v: f64) -> String {
    if v >= 1e6 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

/// The chart as an SVG document: the plot, its legend on the right, the machine note at the bottom.
fn draw(chart: &Chart) -> Result<String, Box<dyn std::error::Error>> {
    let values = chart.series.iter().flat_map(|s| s.points.iter().map(|&(_, v)| v));
    let lo = values.clone().fold(f64::INFINITY, f64::min);
    let hi = values.fold(0.0, f64::max);
    if !lo.is_finite() {
        return Err("no values".into());
    }
    let (bottom, top, y_ticks) = ticks(lo, hi);
    // x runs in half categories, so that each category's centre is a whole number: category i at 2i + 1, the axis
    // from 0 to 2n.
    let n = chart.categories.len() as i32;
    let x_ticks: Vec<i32> = (0..n).map(|i| 2 * i + 1).collect();
    let category = |x: &i32| chart.categories.get((x / 2) as usize).cloned().unwrap_or_default();
    let label = |y: &f64| short(*y);

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE_PX).into_drawing_area();
        root.fill(&WHITE)?;
        let (main, foot) = root.split_vertically(SIZE_PX.1 - NOTE_PX);
        let (plot, legend) = main.split_horizontally(SIZE_PX.0 - LEGEND_PX);
        foot.draw(&Text::new(
            chart.note.as_str(),
            (12, 4),
            ("sans-serif", NOTE_FONT).into_font().color(&RGBColor(0x66, 0x66, 0x66)),
        ))?;
        let mut ctx = ChartBuilder::on(&plot)
            .caption(&chart.title, ("sans-serif", TITLE_FONT))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(
                (0..2 * n).with_key_points(x_ticks),
                (bottom..top).log_scale().with_key_points(y_ticks),
            )?;
        ctx.configure_mesh()
            .disable_x_mesh()
            .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
            .axis_style(RGBColor(0x44, 0x44, 0x44))
            .label_style(("sans-serif", LABEL_FONT))
            .axis_desc_style(("sans-serif", LABEL_FONT))
            .x_desc(chart.x_desc.as_str())
            .y_desc(chart.y_desc.as_str())
            .x_label_formatter(&category)
            .y_label_formatter(&label)
            .draw()?;
        for s in &chart.series {
            let points: Vec<(i32, f64)> = s.points.iter().map(|&(i, v)| (2 * i as i32 + 1, v)).collect();
            let line = s.color.stroke_width(2);
            match s.look {
                Look::Solid => {
                    ctx.draw_series(LineSeries::new(points.iter().copied(), line))?;
                    ctx.draw_series(points.iter().map(|&p| Circle::new(p, 4, s.color.filled())))?;
                }
                Look::Dashed => {
                    ctx.draw_series(DashedLineSeries::new(points.iter().copied(), 7, 4, line))?;
                    ctx.draw_series(points.iter().map(|&p| TriangleMarker::new(p, 6, s.color.filled())))?;
                }
                Look::Crosses => {
                    ctx.draw_series(points.iter().map(|&p| Cross::new(p, 6, line)))?;
                }
            }
        }
        // The legend, one series a row from the top of the plotting area: 26 pixels of its line with its mark in
        // the middle, then its label.
        let label_style =
            TextStyle::from(("sans-serif", LABEL_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (row, s) in chart.series.iter().enumerate() {
            let y = ctx.plotting_area().get_base_pixel().1 + 10 + 22 * row as i32;
            let line = s.color.stroke_width(2);
            let ends = vec![(4, y), (30, y)];
            match s.look {
                Look::Solid => {
                    legend.draw(&PathElement::new(ends, line))?;
                    legend.draw(&Circle::new((17, y), 4, s.color.filled()))?;
                }
                Look::Dashed => {
                    legend.draw(&DashedPathElement::new(ends, 6, 3, line))?;
                    legend.draw(&TriangleMarker::new((17, y), 6, s.color.filled()))?;
                }
                Look::Crosses => legend.draw(&Cross::new((17, y), 6, line))?,
            }
            legend.draw(&Text::new(s.label.as_str(), (38, y), label_style.clone()))?;
        }
        root.present()?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Asserts that the SVG document `name` holds every one of `texts`.
    fn assert_has(svg: &str, name: &str, texts: &[&str]) {
        for text in texts {
            assert!(svg.contains(text), "{name} lacks {text:?}");
        }
    }

    /// A scratch directory of this test process, empty.
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtcp-plot-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// An `xtcp load --json` report with only the fields the plots read, and one they ignore.
    fn report(rate: f64, p50_us: u64) -> serde_json::Value {
        json!({
            "completed": 1000,
            "requests_per_sec": rate,
            "latency": { "count": 1000, "p50_us": p50_us, "p90_us": p50_us + 2, "p99_us": p50_us * 3,
                         "p999_us": p50_us * 10, "max_us": 5000 },
        })
    }

    /// Writes `value` as `dir/results.json` and returns its path.
    fn results_file(dir: &Path, value: &serde_json::Value) -> PathBuf {
        let path = dir.join("results.json");
        std::fs::write(&path, value.to_string()).unwrap();
        path
    }

    #[test]
    fn draws_both_plots_from_the_workloads_present() {
        let dir = scratch("draw");
        // echo-16 and echo-1024 missing, a stack missing from echo-64, a reflector run, and workloads not plotted.
        let results = json!({
            "machine": { "kernel": "6.1.0-test", "cpu": "Test CPU", "cpus": 2,
                         "load_average_before": "0.10 0.20 0.30", "date_utc": "2026-12-07 12:00" },
            "runs": {
                "echo-1": { "xdp": report(170_000.0, 6), "kernel": report(92_000.0, 10), "repeat_ratios": [1.8] },
                "echo-64": { "xdp": report(530_000.0, 110) },
                "raw-1": { "xdp": { "in_flight": 1, "frames_per_sec": 160_000.0, "p50_us": 6 } },
                "block-1": { "xdp": report(165_000.0, 6), "kernel": report(17_000.0, 55) },
                "cps": { "xdp": report(60_000.0, 30), "kernel": report(9_000.0, 200) },
                "hold-1m": {},
            },
        });
        let path = results_file(&dir, &results);
        let out = dir.join("plots");
        let written = run(&path, &out).unwrap();
        assert_eq!(written, [out.join("echo-throughput.svg"), out.join("echo-latency.svg")]);

        let svg = std::fs::read_to_string(&written[0]).unwrap();
        assert_has(
            &svg,
            "echo-throughput.svg",
            &[
                "echo, 64-byte messages: transactions per second",
                "connections",
                "transactions/s",
                "xtcp",
                "kernel",
                "AF_XDP alone, no TCP",
                "kernel, blocking",
                "2 CPUs, kernel 6.1.0-test, load average 0.10 0.20 0.30; 2026-12-07 12:00 UTC",
                "#D62728",
                "#1F77B4",
            ],
        );
        // Only the connection counts that ran are on the x axis.
        assert!(svg.contains("\n64\n") && !svg.contains("\n16\n") && !svg.contains("\n1024\n"));

        let svg = std::fs::read_to_string(&written[1]).unwrap();
        assert_has(
            &svg,
            "echo-latency.svg",
            &[
                "echo, 64-byte messages: round-trip latency percentiles",
                "xtcp, 1 connection",
                "kernel, 1 connection",
                "xtcp, 64 connections",
                "p99.9",
                "µs",
                "6.1.0-test",
            ],
        );
        assert!(!svg.contains("kernel, 64 connections"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn no_echo_workload_draws_nothing() {
        let dir = scratch("none");
        let path = results_file(&dir, &json!({ "machine": {}, "runs": { "cps": { "xdp": report(1.0, 1) } } }));
        let out = dir.join("plots");
        assert_eq!(run(&path, &out).unwrap(), Vec::<PathBuf>::new());
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_or_malformed_file_is_an_error() {
        let dir = scratch("bad");
        let out = dir.join("plots");
        let err = run(&dir.join("absent.json"), &out).unwrap_err();
        assert!(err.starts_with("cannot read ") && err.contains("absent.json"), "{err}");

        let path = dir.join("results.json");
        for (text, expected) in [
            ("{ \"machine\": {}, \"runs\": ", "is not a results.json of bench/e2e.py"),
            ("[1, 2, 3]", "is not a results.json of bench/e2e.py"),
            ("{ \"machine\": {} }", "missing field `runs`"),
            ("{ \"machine\": {}, \"runs\": { \"echo-1\": { \"xdp\": { \"latency\": 5 } } } }", "invalid type"),
            (
                "{ \"machine\": {}, \"runs\": { \"echo-1\": { \"kernel\": {} } } }",
                "runs.echo-1.kernel has no requests_per_sec",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = run(&path, &out).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
        assert!(!out.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_y_axis_ends_on_the_1_2_5_steps_around_the_values() {
        assert_eq!(ticks(92_596.2, 544_000.0), (50_000.0, 1e6, vec![50_000.0, 1e5, 2e5, 5e5, 1e6]));
        assert_eq!(ticks(6.0, 1_300.0), (5.0, 2_000.0, vec![5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1e3, 2e3]));
        // Values on a step, and a single value: the axis still has two ends.
        assert_eq!(ticks(100.0, 200.0), (100.0, 200.0, vec![100.0, 200.0]));
        assert_eq!(ticks(100.0, 100.0), (100.0, 200.0, vec![100.0, 200.0]));
        assert_eq!([1e6, 2e5, 1.5e3, 20.0].map(short), ["1M", "200k", "1.5k", "20"]);
    }
}
