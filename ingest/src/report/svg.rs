//! Small inline SVG charts for the report: no script, no external file, so
//! the HTML stays one self-contained document that prints well.

use std::fmt::Write;

use fleetpulse_engine::EventTime;
use jiff::tz::TimeZone;

/// Colours of the report (band colours as in the dashboard).
pub mod color {
    /// Red band, misses.
    pub const RED: &str = "#d64545";
    /// Yellow band.
    pub const YELLOW: &str = "#e0a000";
    /// Green band, hits.
    pub const GREEN: &str = "#2f9e44";
    /// Targets, purchased capacity.
    pub const GREY: &str = "#8a94a6";
    /// Main series.
    pub const BLUE: &str = "#2b6cb0";
    /// Second series.
    pub const ORANGE: &str = "#e8590c";
    /// Third series.
    pub const TEAL: &str = "#0c8599";
    /// Fourth series.
    pub const VIOLET: &str = "#7048e8";
}

const DAY_MS: u64 = 86_400_000;

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Stroke colour.
    pub color: &'static str,
    /// Dashed (targets, capacity).
    pub dashed: bool,
    /// (time, value); non-finite values break the line.
    pub points: Vec<(EventTime, f64)>,
    /// Dots drawn on top: (time, value, colour), e.g. met / missed.
    pub marks: Vec<(EventTime, f64, &'static str)>,
}

impl Series {
    /// A solid line.
    pub fn line(
        name: impl Into<String>,
        color: &'static str,
        points: Vec<(EventTime, f64)>,
    ) -> Self {
        Self {
            name: name.into(),
            color,
            dashed: false,
            points,
            marks: Vec::new(),
        }
    }

    /// This line dashed.
    pub fn dashed(self) -> Self {
        Self {
            dashed: true,
            ..self
        }
    }
}

/// A time-series line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    /// Identifies the chart in the document (`data-chart`).
    pub id: String,
    /// The lines.
    pub series: Vec<Series>,
    /// Fixed lower bound of the y axis (else 0 or the smallest value).
    pub y_min: Option<f64>,
    /// Fixed upper bound of the y axis (else the largest value plus a margin).
    pub y_max: Option<f64>,
    /// Shaded horizontal bands: (from, to, colour).
    pub bands: Vec<(f64, f64, &'static str)>,
    /// Axis label format; `None`: as many decimals as the axis step needs.
    pub format: Option<fn(f64) -> String>,
    /// Width in SVG units, about the CSS pixels it is shown at, so labels
    /// keep their size.
    pub width: f64,
    /// Height in SVG units.
    pub height: f64,
    /// Time zone of the date labels: the customer's.
    pub zone: TimeZone,
}

/// Width of a chart in a half of the page.
pub const HALF_WIDTH: f64 = 500.0;
/// Width of a chart across the page.
pub const FULL_WIDTH: f64 = 1020.0;

/// `12`, `0.25`, `1.5k`: short axis labels.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if a >= 100.0 || a == 0.0 || (a - a.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// `25%` of a ratio.
pub fn percent(v: f64) -> String {
    format!("{:.0}%", v * 100.0)
}

impl LineChart {
    /// A chart of `series` with automatic axes.
    pub fn new(id: impl Into<String>, series: Vec<Series>) -> Self {
        Self {
            id: id.into(),
            series,
            y_min: None,
            y_max: None,
            bands: Vec::new(),
            format: None,
            width: HALF_WIDTH,
            height: 230.0,
            zone: TimeZone::UTC,
        }
    }

    /// Dates on the axis in `zone` (the customer's days).
    pub fn in_zone(mut self, zone: &TimeZone) -> Self {
        self.zone = zone.clone();
        self
    }

    /// The same chart across the whole page.
    pub fn full_width(mut self) -> Self {
        self.width = FULL_WIDTH;
        self.height = 260.0;
        self
    }

    /// The SVG element and its legend.
    pub fn render(&self) -> String {
        let (w, h) = (self.width, self.height);
        const L: f64 = 52.0;
        const R: f64 = 14.0;
        const T: f64 = 10.0;
        const B: f64 = 26.0;
        let finite: Vec<(EventTime, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(_, v)| v.is_finite())
            .collect();
        let mut svg = String::new();
        let _ = write!(
            svg,
            r#"<svg class="chart" data-chart="{}" viewBox="0 0 {w} {h}" xmlns="http://www.w3.org/2000/svg" role="img">"#,
            escape(&self.id)
        );
        if finite.is_empty() {
            let _ = write!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="middle">no data in this period</text>"#,
                w / 2.0,
                h / 2.0
            );
        } else {
            let mut x0 = finite.iter().map(|p| p.0).min().unwrap_or(0);
            let mut x1 = finite.iter().map(|p| p.0).max().unwrap_or(0);
            if x1 == x0 {
                x0 = x0.saturating_sub(DAY_MS);
                x1 += DAY_MS;
            }
            let lo = finite.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
            let hi = finite.iter().map(|p| p.1).fold(f64::NEG_INFINITY, f64::max);
            let y0 = self.y_min.unwrap_or(lo.min(0.0));
            let mut y1 = self.y_max.unwrap_or(hi + (hi - y0).abs() * 0.08);
            if y1 <= y0 {
                y1 = y0 + 1.0;
            }
            let sx = |x: EventTime| L + (w - L - R) * (x - x0) as f64 / (x1 - x0) as f64;
            let sy = |y: f64| T + (h - T - B) * (1.0 - (y.clamp(y0, y1) - y0) / (y1 - y0));
            for (from, to, color) in &self.bands {
                let top = sy(to.min(y1));
                let bottom = sy(from.max(y0));
                let _ = write!(
                    svg,
                    r#"<rect x="{L}" y="{top:.1}" width="{}" height="{:.1}" fill="{color}" opacity="0.09"/>"#,
                    w - L - R,
                    (bottom - top).max(0.0)
                );
            }
            let step = (y1 - y0) / 4.0;
            let digits = if step >= 5.0 {
                0
            } else if step >= 0.5 {
                1
            } else if step >= 0.05 {
                2
            } else {
                3
            };
            let label = |v: f64| match self.format {
                Some(f) => f(v),
                None => format!("{v:.digits$}"),
            };
            for k in 0..=4 {
                let v = y0 + (y1 - y0) * f64::from(k) / 4.0;
                let y = sy(v);
                let _ = write!(
                    svg,
                    r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e7ee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                    w - R,
                    L - 6.0,
                    y + 4.0,
                    escape(&label(v))
                );
            }
            let days = (x1 - x0) / DAY_MS;
            let ticks = days.clamp(2, 6);
            for k in 0..=ticks {
                let x = x0 + (x1 - x0) * k / ticks;
                let anchor = match k {
                    0 => "start",
                    k if k == ticks => "end",
                    _ => "middle",
                };
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{}" text-anchor="{anchor}">{}</text>"#,
                    sx(x),
                    h - 8.0,
                    &date(x, &self.zone)[5..]
                );
            }
            for s in &self.series {
                let mut d = String::new();
                let mut pen = false;
                for (x, y) in &s.points {
                    if !y.is_finite() {
                        pen = false;
                        continue;
                    }
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1}",
                        if pen { 'L' } else { 'M' },
                        sx(*x),
                        sy(*y)
                    );
                    pen = true;
                }
                if !d.is_empty() {
                    let _ = write!(
                        svg,
                        r#"<path class="series" data-series="{}" d="{d}" fill="none" stroke="{}" stroke-width="{}"{}/>"#,
                        escape(&s.name),
                        s.color,
                        if s.dashed { 1.5 } else { 2.0 },
                        if s.dashed {
                            r#" stroke-dasharray="6,4""#
                        } else {
                            ""
                        }
                    );
                }
                for (x, y, color) in &s.marks {
                    if y.is_finite() {
                        let _ = write!(
                            svg,
                            r#"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="{color}"/>"#,
                            sx(*x),
                            sy(*y)
                        );
                    }
                }
            }
        }
        svg.push_str("</svg>");
        let mut legend = String::from(r#"<div class="legend">"#);
        for s in &self.series {
            let _ = write!(
                legend,
                r#"<span><i style="background:{}{}"></i>{}</span>"#,
                s.color,
                if s.dashed { ";opacity:.6" } else { "" },
                escape(&s.name)
            );
        }
        legend.push_str("</div>");
        svg + &legend
    }
}

/// `YYYY-MM-DD` of a time in `zone`: a customer's day is dated by its local
/// date (a Berlin day starts at 23:00 UTC the day before).
pub fn date(at: EventTime, zone: &TimeZone) -> String {
    i64::try_from(at)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || fleetpulse_sim::calendar::date_of(at),
            |t| t.to_zoned(zone.clone()).date().to_string(),
        )
}

/// Escapes text for HTML and SVG.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_draws_each_series_and_breaks_at_gaps() {
        let day = |d: u64| 1_767_571_200_000 + d * DAY_MS;
        let chart = LineChart::new(
            "t<1>",
            vec![
                Series::line(
                    "a & b",
                    color::BLUE,
                    vec![
                        (day(0), 1.0),
                        (day(1), f64::NAN),
                        (day(2), 3.0),
                        (day(3), 2.0),
                    ],
                ),
                Series::line("target", color::GREY, vec![(day(0), 2.0), (day(3), 2.0)]).dashed(),
            ],
        )
        .render();
        assert!(chart.contains(r#"data-chart="t&lt;1&gt;""#));
        assert!(chart.contains(r#"data-series="a &amp; b""#));
        // The gap starts a new sub-path.
        let a = chart
            .split(r#"data-series="a &amp; b" d=""#)
            .nth(1)
            .unwrap();
        let d = &a[..a.find('"').unwrap()];
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(chart.contains("stroke-dasharray"));
        assert!(LineChart::new("e", vec![]).render().contains("no data"));
    }

    #[test]
    fn short_labels() {
        assert_eq!(short(0.0), "0");
        assert_eq!(short(12.0), "12");
        assert_eq!(short(2.5), "2.5");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(25_000.0), "25k");
        assert_eq!(percent(0.25), "25%");
    }
}
