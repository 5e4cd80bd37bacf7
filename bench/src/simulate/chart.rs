//! The simulation's chart: messages and bytes per write against the cluster size.
//!
//! Owns `scaling.svg`: two log–log panels side by side, updates sent per write and sealed
//! push bytes per write, one line per mode (`all` climbs with n − 1, the `k` modes stay
//! flat), with the measured 2/4/8-node points of `docs/compare/results.json` drawn as hollow
//! markers over the simulated lines. plotters' SVG backend, like `bench/src/charts.rs`.

use plotters::prelude::*;

use super::report::SimReport;
use crate::error::{BenchError, Result};

const COLORS: [RGBColor; 4] = [
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

fn err(e: impl std::fmt::Display) -> BenchError {
    BenchError(format!("drawing the simulation chart: {e}"))
}

/// One panel's data: per mode, (nodes, value) points; and the measured points per mode.
struct PanelData {
    title: &'static str,
    y_desc: &'static str,
    sim: Vec<(String, Vec<(f64, f64)>)>,
    measured: Vec<(String, Vec<(f64, f64)>)>,
}

fn modes(report: &SimReport) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in &report.runs {
        if !out.contains(&r.mode) {
            out.push(r.mode.clone());
        }
    }
    out
}

fn panel(
    report: &SimReport,
    title: &'static str,
    y_desc: &'static str,
    sim: fn(&super::RunResult) -> f64,
    measured: fn(&super::report::MeasuredRow) -> f64,
) -> PanelData {
    let ms = modes(report);
    let sim_lines = ms
        .iter()
        .map(|m| {
            let pts = report
                .runs
                .iter()
                .filter(|r| &r.mode == m)
                .map(|r| (r.nodes as f64, sim(r)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            (m.clone(), pts)
        })
        .collect();
    let measured_lines = ms
        .iter()
        .map(|m| {
            let pts = report
                .measured
                .iter()
                .flat_map(|x| x.rows.iter())
                .filter(|r| &r.mode == m)
                .map(|r| (r.nodes as f64, measured(r)))
                .filter(|(_, v)| v.is_finite() && *v > 0.0)
                .collect();
            (m.clone(), pts)
        })
        .collect();
    PanelData {
        title,
        y_desc,
        sim: sim_lines,
        measured: measured_lines,
    }
}

/// The chart as an SVG document.
pub fn scaling_svg(report: &SimReport) -> Result<String> {
    let panels = [
        panel(
            report,
            "session updates sent per write",
            "updates / write (log)",
            |r| r.updates_per_write,
            |m| m.updates_per_write,
        ),
        panel(
            report,
            "sealed push bytes per write",
            "B / write (log)",
            |r| r.push_bytes_per_write,
            |m| m.push_bytes_per_write,
        ),
    ];
    let nodes: Vec<f64> = report.runs.iter().map(|r| r.nodes as f64).collect();
    let (x_lo, x_hi) = nodes.iter().fold((f64::INFINITY, 0f64), |(lo, hi), x| {
        (lo.min(*x), hi.max(*x))
    });
    if !x_lo.is_finite() || x_hi < x_lo {
        return Err(BenchError::msg(
            "the simulation chart needs at least one run",
        ));
    }
    let title = format!(
        "Simulated replication cost per write ({} µs links; hollow: measured on one machine)",
        report.options.latency_us
    );
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1100, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let root = root.titled(&title, ("sans-serif", 20)).map_err(err)?;
        let areas = root.split_evenly((1, panels.len()));
        for (p, area) in panels.iter().zip(areas.iter()) {
            let all = p
                .sim
                .iter()
                .chain(p.measured.iter())
                .flat_map(|(_, pts)| pts.iter().map(|x| x.1));
            let (lo, hi) = all.fold((f64::INFINITY, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
            let (lo, hi) = if lo.is_finite() && hi > 0.0 {
                (lo * 0.6, hi * 1.8)
            } else {
                (0.1, 10.0)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(p.title, ("sans-serif", 17))
                .margin(14)
                .x_label_area_size(44)
                .y_label_area_size(64)
                .build_cartesian_2d(
                    (x_lo.log2() - 0.3)..(x_hi.log2() + 0.3),
                    (lo..hi).log_scale(),
                )
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_labels((x_hi.log2() - x_lo.log2()).round() as usize + 1)
                .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
                .y_label_formatter(&|y| {
                    if *y >= 10.0 {
                        format!("{y:.0}")
                    } else {
                        format!("{y:.1}")
                    }
                })
                .light_line_style(RGBColor(238, 238, 238))
                .x_desc("nodes (log)")
                .y_desc(p.y_desc)
                .axis_desc_style(("sans-serif", 14))
                .label_style(("sans-serif", 12))
                .draw()
                .map_err(err)?;
            for (i, (mode, pts)) in p.sim.iter().enumerate() {
                let c = COLORS[i % COLORS.len()];
                let line: Vec<(f64, f64)> = pts.iter().map(|(x, y)| (x.log2(), *y)).collect();
                chart
                    .draw_series(LineSeries::new(line.iter().copied(), c.stroke_width(3)))
                    .map_err(err)?
                    .label(format!("simulated {mode}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                chart
                    .draw_series(line.iter().map(|p| Circle::new(*p, 4, c.filled())))
                    .map_err(err)?;
            }
            for (i, (mode, pts)) in p.measured.iter().enumerate() {
                if pts.is_empty() {
                    continue;
                }
                let c = COLORS[i % COLORS.len()];
                chart
                    .draw_series(
                        pts.iter()
                            .map(|(x, y)| Circle::new((x.log2(), *y), 8, c.stroke_width(2))),
                    )
                    .map_err(err)?
                    .label(format!("measured {mode}"))
                    .legend(move |(x, y)| Circle::new((x + 9, y), 6, c.stroke_width(2)));
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}
