//! SVG charts for `compare` (plotters' SVG backend: no font files needed, the text is SVG
//! `<text>` that the viewer renders with its own sans-serif font).
//!
//! Two shapes cover the comparison: grouped bars (one group per scheme, one bar per series,
//! each bar labelled with its value) and line panels side by side sharing an x axis (the
//! scaling chart: replication messages per write and throughput against the cluster size).

use std::ops::Range;

use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint, Ranged};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    /// The data does not fit the chart (lengths differ, nothing to draw, a value is not finite).
    #[error("chart {title:?}: {problem}")]
    Data {
        /// The chart's title.
        title: String,
        /// What is wrong.
        problem: String,
    },
    /// plotters failed while drawing.
    #[error("chart {title:?}: drawing failed: {message}")]
    Draw {
        /// The chart's title.
        title: String,
        /// plotters' error.
        message: String,
    },
}

/// One series of a bar chart: a value per category.
#[derive(Debug, Clone)]
pub struct BarSeries {
    /// The legend entry.
    pub name: String,
    /// One value per category (`None`: no bar, e.g. a skipped scheme).
    pub values: Vec<Option<f64>>,
}

/// A grouped bar chart.
#[derive(Debug, Clone)]
pub struct BarChart {
    /// Title above the chart.
    pub title: String,
    /// X axis description.
    pub x_desc: String,
    /// Y axis description.
    pub y_desc: String,
    /// The groups, left to right.
    pub categories: Vec<String>,
    /// The bars of each group, in legend order.
    pub series: Vec<BarSeries>,
    /// Decimals printed above each bar.
    pub decimals: usize,
}

/// One line of a panel: `(x, y)` points.
#[derive(Debug, Clone)]
pub struct Line {
    /// The legend entry.
    pub name: String,
    /// The points, in x order.
    pub points: Vec<(f64, f64)>,
}

/// One panel of a [`LinePanels`] chart.
#[derive(Debug, Clone)]
pub struct Panel {
    /// The panel's own title.
    pub title: String,
    /// Y axis description.
    pub y_desc: String,
    /// The lines.
    pub lines: Vec<Line>,
}

/// Line panels side by side with a shared x axis description and tick positions.
#[derive(Debug, Clone)]
pub struct LinePanels {
    /// Title above all panels.
    pub title: String,
    /// X axis description (every panel).
    pub x_desc: String,
    /// X positions that get a tick and a label (e.g. the cluster sizes measured).
    pub x_ticks: Vec<f64>,
    /// The panels, left to right.
    pub panels: Vec<Panel>,
}

/// Width and height of every chart, in SVG pixels.
pub const SIZE: (u32, u32) = (960, 540);

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A linear f64 axis whose ticks are exactly the given positions (the categories of a bar
/// chart, the cluster sizes of a line chart) rather than plotters' "nice" numbers.
#[derive(Debug, Clone)]
struct TickAxis {
    range: Range<f64>,
    ticks: Vec<f64>,
}

impl Ranged for TickAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, (lo, hi): (i32, i32)) -> i32 {
        let span = self.range.end - self.range.start;
        let f = if span > 0.0 {
            (value - self.range.start) / span
        } else {
            0.5
        };
        lo + (f64::from(hi - lo) * f).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _hint: H) -> Vec<f64> {
        self.ticks.clone()
    }

    fn range(&self) -> Range<f64> {
        self.range.clone()
    }
}

/// A value-axis label: whole numbers from 10 up, otherwise at most two decimals, without
/// trailing zeros or float noise (`0.30000000000000004` → `0.3`).
fn tick(v: &f64) -> String {
    if v.abs() >= 10.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

const LIGHT_GRID: RGBColor = RGBColor(238, 238, 238);

fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

fn draw_err(title: &str) -> impl Fn(&dyn std::fmt::Display) -> ChartError + '_ {
    move |e| ChartError::Draw {
        title: title.to_owned(),
        message: e.to_string(),
    }
}

fn data_err(title: &str, problem: impl Into<String>) -> ChartError {
    ChartError::Data {
        title: title.to_owned(),
        problem: problem.into(),
    }
}

/// Upper end of a value axis: 15 % headroom above the largest value (room for the labels),
/// and a positive range when everything is zero.
fn axis_top(max: f64) -> f64 {
    if max > 0.0 { max * 1.15 } else { 1.0 }
}

impl BarChart {
    /// Renders the chart as an SVG document.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        let title = self.title.as_str();
        let n = self.categories.len();
        if n == 0 || self.series.is_empty() {
            return Err(data_err(title, "no categories or no series"));
        }
        let mut max = 0.0f64;
        for s in &self.series {
            if s.values.len() != n {
                return Err(data_err(
                    title,
                    format!(
                        "series {:?} has {} values for {n} categories",
                        s.name,
                        s.values.len()
                    ),
                ));
            }
            for v in s.values.iter().flatten() {
                if !v.is_finite() || *v < 0.0 {
                    return Err(data_err(
                        title,
                        format!("series {:?} has the value {v}", s.name),
                    ));
                }
                max = max.max(*v);
            }
        }
        let mut svg = String::new();
        {
            let err = draw_err(title);
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let centers: Vec<f64> = (0..n).map(|i| i as f64).collect();
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 24))
                .margin(16)
                .x_label_area_size(56)
                .y_label_area_size(80)
                .build_cartesian_2d(
                    TickAxis {
                        range: -0.5..n as f64 - 0.5,
                        ticks: centers,
                    },
                    0f64..axis_top(max),
                )
                .map_err(|e| err(&e))?;
            let labels = self.categories.clone();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_label_formatter(&|x| {
                    let i = x.round();
                    if (x - i).abs() < 1e-6 && i >= 0.0 {
                        labels.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&tick)
                .light_line_style(LIGHT_GRID)
                .max_light_lines(1)
                .x_label_style(("sans-serif", 15))
                .y_label_style(("sans-serif", 14))
                .x_desc(self.x_desc.as_str())
                .y_desc(self.y_desc.as_str())
                .axis_desc_style(("sans-serif", 16))
                .draw()
                .map_err(|e| err(&e))?;
            let k = self.series.len() as f64;
            let group = 0.8;
            let width = group / k;
            let value_style = TextStyle::from(("sans-serif", 13).into_font())
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            for (si, s) in self.series.iter().enumerate() {
                let c = color(si);
                let left = |i: usize| i as f64 - group / 2.0 + si as f64 * width;
                chart
                    .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                        v.map(|v| {
                            Rectangle::new(
                                [(left(i) + 0.01, 0.0), (left(i) + width - 0.01, v)],
                                c.filled(),
                            )
                        })
                    }))
                    .map_err(|e| err(&e))?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())
                    });
                chart
                    .draw_series(s.values.iter().enumerate().filter_map(|(i, v)| {
                        v.map(|v| {
                            Text::new(
                                format!("{v:.*}", self.decimals),
                                (left(i) + width / 2.0, v),
                                value_style.clone(),
                            )
                        })
                    }))
                    .map_err(|e| err(&e))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .label_font(("sans-serif", 15))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(&e))?;
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

/// Where a panel's legend hides the least: upper left when the lines rise (their left end is
/// low), upper right when they fall.
fn legend_corner(lines: &[Line]) -> SeriesLabelPosition {
    let (mut first, mut last) = (0.0, 0.0);
    for l in lines {
        if let (Some(a), Some(b)) = (l.points.first(), l.points.last()) {
            first += a.1;
            last += b.1;
        }
    }
    if first > last {
        SeriesLabelPosition::UpperRight
    } else {
        SeriesLabelPosition::UpperLeft
    }
}

impl LinePanels {
    /// Renders the panels as one SVG document.
    pub fn to_svg(&self) -> Result<String, ChartError> {
        let title = self.title.as_str();
        if self.panels.is_empty() || self.x_ticks.is_empty() {
            return Err(data_err(title, "no panels or no x ticks"));
        }
        let (x_min, x_max) = self
            .x_ticks
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(*x), hi.max(*x))
            });
        if !x_min.is_finite() || !x_max.is_finite() {
            return Err(data_err(title, "x ticks are not finite"));
        }
        let pad = ((x_max - x_min) * 0.08).max(0.5);
        for p in &self.panels {
            if p.lines.is_empty() || p.lines.iter().all(|l| l.points.is_empty()) {
                return Err(data_err(
                    title,
                    format!("panel {:?} has no points", p.title),
                ));
            }
            for l in &p.lines {
                if l.points
                    .iter()
                    .any(|(x, y)| !x.is_finite() || !y.is_finite() || *y < 0.0)
                {
                    return Err(data_err(
                        title,
                        format!("line {:?} has a non-finite or negative point", l.name),
                    ));
                }
            }
        }
        let mut svg = String::new();
        {
            let err = draw_err(title);
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(&e))?;
            let root = root
                .titled(title, ("sans-serif", 24))
                .map_err(|e| err(&e))?;
            let areas = root.split_evenly((1, self.panels.len()));
            for (panel, area) in self.panels.iter().zip(areas.iter()) {
                let max = panel
                    .lines
                    .iter()
                    .flat_map(|l| l.points.iter().map(|p| p.1))
                    .fold(0.0f64, f64::max);
                let mut chart = ChartBuilder::on(area)
                    .caption(panel.title.as_str(), ("sans-serif", 18))
                    .margin(14)
                    .x_label_area_size(48)
                    .y_label_area_size(70)
                    .build_cartesian_2d(
                        TickAxis {
                            range: x_min - pad..x_max + pad,
                            ticks: self.x_ticks.clone(),
                        },
                        0f64..axis_top(max),
                    )
                    .map_err(|e| err(&e))?;
                chart
                    .configure_mesh()
                    .x_label_formatter(&|x| format!("{x}"))
                    .y_label_formatter(&tick)
                    .light_line_style(LIGHT_GRID)
                    .max_light_lines(1)
                    .x_desc(self.x_desc.as_str())
                    .y_desc(panel.y_desc.as_str())
                    .axis_desc_style(("sans-serif", 15))
                    .label_style(("sans-serif", 13))
                    .draw()
                    .map_err(|e| err(&e))?;
                for (li, line) in panel.lines.iter().enumerate() {
                    let c = color(li);
                    chart
                        .draw_series(LineSeries::new(
                            line.points.iter().copied(),
                            c.stroke_width(3),
                        ))
                        .map_err(|e| err(&e))?
                        .label(line.name.as_str())
                        .legend(move |(x, y)| {
                            PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                        });
                    chart
                        .draw_series(line.points.iter().map(|p| Circle::new(*p, 5, c.filled())))
                        .map_err(|e| err(&e))?;
                }
                chart
                    .configure_series_labels()
                    .position(legend_corner(&panel.lines))
                    .label_font(("sans-serif", 14))
                    .background_style(WHITE.mix(0.9))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| err(&e))?;
            }
            root.present().map_err(|e| err(&e))?;
        }
        Ok(svg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bars() -> BarChart {
        BarChart {
            title: "Latency per scheme".into(),
            x_desc: "scheme".into(),
            y_desc: "ms".into(),
            categories: vec!["cookie".into(), "redis (skipped)".into()],
            series: vec![
                BarSeries {
                    name: "p50".into(),
                    values: vec![Some(1.5), None],
                },
                BarSeries {
                    name: "p99".into(),
                    values: vec![Some(7.25), None],
                },
            ],
            decimals: 2,
        }
    }

    #[test]
    fn bar_chart_has_title_labels_legend_and_values() {
        let svg = bars().to_svg().unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        assert!(svg.trim_end().ends_with("</svg>"));
        for text in [
            "Latency per scheme",
            "cookie",
            "redis (skipped)",
            "p50",
            "p99",
            "7.25",
            "scheme",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        assert!(svg.contains("<rect"), "bars are rectangles");
    }

    #[test]
    fn value_ticks_are_short() {
        assert_eq!(tick(&1200.0), "1200");
        assert_eq!(tick(&0.30000000000000004), "0.3");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.0), "0");
        assert_eq!(tick(&12.4), "12");
    }

    #[test]
    fn legends_avoid_the_lines() {
        let line = |a: f64, b: f64| Line {
            name: "x".into(),
            points: vec![(2.0, a), (8.0, b)],
        };
        assert!(matches!(
            legend_corner(&[line(1.0, 7.0), line(1.0, 2.0)]),
            SeriesLabelPosition::UpperLeft
        ));
        assert!(matches!(
            legend_corner(&[line(14000.0, 3000.0), line(14000.0, 5000.0)]),
            SeriesLabelPosition::UpperRight
        ));
    }

    #[test]
    fn bar_chart_rejects_bad_data() {
        let mut c = bars();
        c.series[0].values.pop();
        let e = c.to_svg().unwrap_err().to_string();
        assert!(e.contains("1 values for 2 categories"), "{e}");
        let mut c = bars();
        c.series[1].values[0] = Some(f64::NAN);
        assert!(matches!(c.to_svg(), Err(ChartError::Data { .. })));
        let mut c = bars();
        c.categories.clear();
        assert!(matches!(c.to_svg(), Err(ChartError::Data { .. })));
    }

    #[test]
    fn line_panels_render_each_panel() {
        let chart = LinePanels {
            title: "Scaling".into(),
            x_desc: "nodes".into(),
            x_ticks: vec![2.0, 4.0, 8.0],
            panels: vec![
                Panel {
                    title: "messages per write".into(),
                    y_desc: "updates".into(),
                    lines: vec![
                        Line {
                            name: "all".into(),
                            points: vec![(2.0, 1.0), (4.0, 3.0), (8.0, 7.0)],
                        },
                        Line {
                            name: "k=1".into(),
                            points: vec![(2.0, 1.0), (4.0, 1.4), (8.0, 1.6)],
                        },
                    ],
                },
                Panel {
                    title: "throughput".into(),
                    y_desc: "req/s".into(),
                    lines: vec![Line {
                        name: "all".into(),
                        points: vec![(2.0, 900.0), (8.0, 400.0)],
                    }],
                },
            ],
        };
        let svg = chart.to_svg().unwrap();
        assert!(svg.starts_with("<svg"));
        for text in [
            "Scaling",
            "messages per write",
            "throughput",
            "k=1",
            "nodes",
            "req/s",
        ] {
            assert!(svg.contains(text), "the SVG lacks {text:?}");
        }
        let mut bad = chart.clone();
        bad.panels[1].lines[0].points[0].1 = f64::INFINITY;
        assert!(matches!(bad.to_svg(), Err(ChartError::Data { .. })));
        let mut empty = chart;
        empty.panels.clear();
        assert!(matches!(empty.to_svg(), Err(ChartError::Data { .. })));
    }
}
