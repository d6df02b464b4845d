//! The report's HTML: a plain function of [`ReportData`].

use std::fmt::Write;

use fleetpulse_engine::config::date_start;
use fleetpulse_engine::kpi::health::Band;
use fleetpulse_engine::kpi::milestone::MilestoneStatus;
use fleetpulse_engine::kpi::outcome::Direction;
use fleetpulse_engine::kpi::risk::AlertStatus;
use fleetpulse_engine::kpi::touchpoint::TouchpointKind;
use fleetpulse_engine::{CustomerKpi, EventTime, HealthRecord, OutcomeRecord};

use super::svg::{self, LineChart, Series, color, date, escape};
use super::{DAY_MS, ReportData};
use crate::alerts::format::money;

const STYLE: &str = r#"
:root { --red:#d64545; --yellow:#e0a000; --green:#2f9e44; --grey:#8a94a6; --ink:#1d2433; --muted:#647086; --line:#e3e7ee; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--ink); margin: 0; background: #f5f7fa; font-size: 14px; }
.page { max-width: 1100px; margin: 0 auto; padding: 28px 36px 40px; background: #fff; }
header { border-bottom: 3px solid var(--ink); padding-bottom: 12px; margin-bottom: 18px; }
h1 { font-size: 26px; margin: 0; }
h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin: 14px 0 4px; }
.sub { color: var(--muted); }
.cards { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; margin: 14px 0; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; }
.card .label { font-size: 11px; text-transform: uppercase; letter-spacing: .4px; color: var(--muted); }
.card .value { font-size: 22px; font-weight: 650; margin-top: 2px; }
.card .note { font-size: 12px; color: var(--muted); }
.band { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff; font-size: 12px; font-weight: 600; vertical-align: middle; }
.band.red { background: var(--red); } .band.yellow { background: var(--yellow); } .band.green { background: var(--green); }
.up { color: var(--green); } .down { color: var(--red); }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-size: 11px; text-transform: uppercase; color: var(--muted); letter-spacing: .3px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.chart { width: 100%; height: auto; display: block; }
.chart text { font-size: 11px; fill: var(--muted); font-family: inherit; }
.legend { display: flex; gap: 14px; flex-wrap: wrap; font-size: 12px; color: var(--muted); margin: 2px 0 8px; }
.legend i { display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 4px; }
.two { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.status { font-weight: 600; }
.status.reached { color: var(--green); } .status.overdue { color: var(--red); } .status.pending { color: var(--muted); }
.alert { border-left: 3px solid var(--red); background: #fff6f5; padding: 8px 12px; margin: 6px 0; border-radius: 4px; }
.alert.resolved { border-left-color: var(--green); background: #f3f6f4; }
.alert.retracted { border-left: 3px dashed var(--grey); background: #f4f4f6; color: var(--muted); }
.footnote { font-size: 12px; color: var(--muted); margin: 4px 0; }
.rule { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-weight: 600; }
.next { color: var(--muted); font-size: 12px; margin-top: 2px; }
.summary { font-size: 15px; line-height: 1.5; }
footer { margin-top: 28px; font-size: 11px; color: var(--muted); border-top: 1px solid var(--line); padding-top: 8px; }
@media print { body { background: #fff; } .page { padding: 0; } h2 { break-after: avoid; } .chart, table, .alert { break-inside: avoid; } }
"#;

fn band_html(band: Band) -> String {
    format!(r#"<span class="band {0}">{0}</span>"#, band.as_str())
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values
        .filter(|v| v.is_finite())
        .fold((0.0, 0u32), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / f64::from(n))
}

/// Mean of `f` over the first and the last 14 days of the period.
fn first_last(kpis: &[CustomerKpi], f: fn(&CustomerKpi) -> f64) -> (Option<f64>, Option<f64>) {
    let n = kpis.len();
    let head = &kpis[..n.min(14)];
    let tail = &kpis[n.saturating_sub(14)..];
    (mean(head.iter().map(f)), mean(tail.iter().map(f)))
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{v:.digits$}"))
}

fn pct(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite())
        .map_or("–".into(), |v| format!("{:.0}%", v * 100.0))
}

fn change(before: Option<f64>, after: Option<f64>, ratio: bool) -> String {
    match (before, after) {
        (Some(b), Some(a)) if b.is_finite() && a.is_finite() => {
            let d = a - b;
            let class = if d > 0.0 {
                "up"
            } else if d < 0.0 {
                "down"
            } else {
                ""
            };
            let text = if ratio {
                format!("{:+.0} pts", d * 100.0)
            } else {
                format!("{d:+.1}")
            };
            format!(r#"<span class="{class}">{text}</span>"#)
        }
        _ => "–".into(),
    }
}

fn section_summary(out: &mut String, d: &ReportData) {
    let first = d.health.first();
    let last = d.health.last();
    let open: Vec<_> = d
        .alerts
        .iter()
        .filter(|a| a.status == AlertStatus::Open)
        .collect();
    let outcome_windows: usize = d
        .outcomes
        .values()
        .map(|v| v.iter().filter(|o| o.value.is_finite()).count())
        .sum();
    let outcome_met: usize = d
        .outcomes
        .values()
        .map(|v| v.iter().filter(|o| o.met).count())
        .sum();
    let (util_before, util_after) = first_last(&d.kpis, |k| k.utilisation);
    let active = mean(d.kpis.iter().map(|k| f64::from(k.active_devices)));
    let purchased = d.kpis.last().map(|k| k.devices_purchased);

    let _ = write!(out, r#"<section id="summary"><div class="cards">"#);
    let card = |out: &mut String, label: &str, value: String, note: String| {
        let _ = write!(
            out,
            r#"<div class="card"><div class="label">{label}</div><div class="value">{value}</div><div class="note">{note}</div></div>"#
        );
    };
    card(
        out,
        "Health score",
        last.map_or("–".into(), |h| {
            format!("{:.0} {}", h.score, band_html(h.band))
        }),
        match (first, last) {
            (Some(f), Some(l)) => format!(
                "{} over the period (from {:.0})",
                change(Some(f.score), Some(l.score), false),
                f.score
            ),
            _ => "no health record in the period".into(),
        },
    );
    card(
        out,
        "Outcome attainment",
        if outcome_windows > 0 {
            format!(
                "{:.0}%",
                100.0 * outcome_met as f64 / outcome_windows as f64
            )
        } else {
            "–".into()
        },
        format!("{outcome_met} of {outcome_windows} outcome-days met target"),
    );
    card(
        out,
        "Utilisation",
        pct(util_after),
        format!(
            "last 14 days; {} against the first 14",
            change(util_before, util_after, true)
        ),
    );
    card(
        out,
        "Active machines",
        format!(
            "{} / {}",
            fmt(active, 0),
            purchased.map_or("–".into(), |p| p.to_string())
        ),
        "daily mean of machines that worked, of machines purchased".into(),
    );
    card(
        out,
        "Time to value",
        last.and_then(|h| h.time_to_value_days)
            .map_or("not yet".into(), |t| format!("{t:.1} days")),
        d.activation().map_or(String::new(), |a| {
            format!("from activation on {}", date(a, &d.zone))
        }),
    );
    card(
        out,
        "Milestones",
        last.map_or("–".into(), |h| {
            format!("{} / {}", h.milestones_reached, h.milestones_total)
        }),
        format!(
            "{} overdue",
            d.milestones
                .iter()
                .filter(|m| m.status == MilestoneStatus::Overdue)
                .count()
        ),
    );
    card(
        out,
        "Stage",
        last.map_or("–".into(), |h| h.stage.as_str().to_string()),
        last.map_or(String::new(), |h| {
            format!("{:.0} days to renewal", h.days_to_renewal)
        }),
    );
    card(
        out,
        "ARR at risk",
        last.map_or("–".into(), |h| money(h.arr_at_risk)),
        format!(
            "{} open alert{}",
            open.len(),
            if open.len() == 1 { "" } else { "s" }
        ),
    );
    out.push_str("</div>");

    // The story in two sentences.
    let mut story = String::new();
    if let Some(l) = last {
        let _ = write!(
            story,
            "{} ends the period in the <b>{}</b> band with a health score of {:.0}",
            escape(&d.name),
            l.band.as_str(),
            l.score
        );
        if let Some(f) = first {
            let _ = write!(
                story,
                " ({:+.0} since {})",
                l.score - f.score,
                date(f.window_start, &d.zone)
            );
        }
        story.push_str(". ");
    }
    if outcome_windows > 0 {
        let _ = write!(
            story,
            "Its outcome targets were met on {:.0}% of evaluated days. ",
            100.0 * outcome_met as f64 / outcome_windows as f64
        );
    }
    if open.is_empty() {
        story.push_str("No risk signal is open.");
    } else {
        let rules: Vec<&str> = open.iter().map(|a| a.rule.as_str()).collect();
        let _ = write!(
            story,
            "Open risk signals: <b>{}</b>; the actions are listed at the end.",
            rules.join(", ")
        );
    }
    let _ = write!(out, r#"<p class="summary">{story}</p></section>"#);
}

fn outcome_chart(
    name: &str,
    records: &[OutcomeRecord],
    index: usize,
    zone: &jiff::tz::TimeZone,
) -> String {
    let palette = [color::BLUE, color::ORANGE, color::TEAL, color::VIOLET];
    let mut line = Series::line(
        name,
        palette[index % palette.len()],
        records.iter().map(|o| (o.window_start, o.value)).collect(),
    );
    line.marks = records
        .iter()
        .map(|o| {
            (
                o.window_start,
                o.value,
                if o.met { color::GREEN } else { color::RED },
            )
        })
        .collect();
    let target = records.last().map_or(f64::NAN, |o| o.target);
    let direction = records.last().map_or("target", |o| match o.direction {
        Direction::AtMost => "target (at most)",
        Direction::AtLeast => "target (at least)",
    });
    LineChart::new(
        format!("outcome-{name}"),
        vec![
            line,
            Series::line(
                format!("{direction} {}", svg::short(target)),
                color::GREY,
                records.iter().map(|o| (o.window_start, o.target)).collect(),
            )
            .dashed(),
        ],
    )
    .in_zone(zone)
    .render()
}

fn section_outcomes(out: &mut String, d: &ReportData) {
    out.push_str(r#"<section id="outcomes"><h2>Outcomes against targets</h2>"#);
    if d.outcomes.is_empty() {
        out.push_str(r#"<p class="sub">No outcome was judged in this period: none is defined for this customer in customers.toml, or the store holds no day of the period.</p></section>"#);
        return;
    }
    out.push_str(r#"<p class="sub">The results the customer defined as success, day by day: green dots met the target, red ones missed it.</p>"#);
    out.push_str(r#"<table><thead><tr><th>outcome</th><th>target</th><th class="num">days met</th><th class="num">attainment</th><th class="num">first 14 days</th><th class="num">last 14 days</th><th class="num">latest</th></tr></thead><tbody>"#);
    for (name, records) in &d.outcomes {
        let evaluated = records.iter().filter(|o| o.value.is_finite()).count();
        let met = records.iter().filter(|o| o.met).count();
        let n = records.len();
        let head = mean(records[..n.min(14)].iter().map(|o| o.value));
        let tail = mean(records[n.saturating_sub(14)..].iter().map(|o| o.value));
        let last = records.last();
        let _ = write!(
            out,
            r#"<tr><td><b>{}</b></td><td>{} {}</td><td class="num">{met} / {evaluated}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(name),
            last.map_or("", |o| o.direction.symbol()),
            last.map_or("–".into(), |o| svg::short(o.target)),
            if evaluated > 0 {
                format!("{:.0}%", 100.0 * met as f64 / evaluated as f64)
            } else {
                "–".into()
            },
            fmt(head, 3),
            fmt(tail, 3),
            fmt(last.map(|o| o.value), 3),
        );
    }
    out.push_str("</tbody></table>");
    out.push_str(r#"<div class="two">"#);
    for (i, (name, records)) in d.outcomes.iter().enumerate() {
        let _ = write!(
            out,
            "<div><h3>{}</h3>{}</div>",
            escape(name),
            outcome_chart(name, records, i, &d.zone)
        );
    }
    out.push_str("</div></section>");
}

fn section_adoption(out: &mut String, d: &ReportData) {
    let at = |k: &CustomerKpi| k.window_start;
    out.push_str(r#"<section id="adoption"><h2>Adoption</h2><p class="sub">Depth (how fully the machines are used), breadth (how far use spreads through the organisation), per day.</p>"#);
    let mut depth = LineChart::new(
        "adoption-depth",
        vec![
            Series::line(
                "utilisation",
                color::BLUE,
                d.kpis.iter().map(|k| (at(k), k.utilisation)).collect(),
            ),
            Series::line(
                "advanced features used",
                color::VIOLET,
                d.kpis
                    .iter()
                    .map(|k| (at(k), k.advanced_feature_share))
                    .collect(),
            ),
        ],
    );
    depth.zone = d.zone.clone();
    depth.y_min = Some(0.0);
    depth.format = Some(svg::percent);
    let mut breadth = LineChart::new(
        "adoption-breadth",
        vec![
            Series::line(
                "machines purchased",
                color::GREY,
                d.kpis
                    .iter()
                    .map(|k| (at(k), f64::from(k.devices_purchased)))
                    .collect(),
            )
            .dashed(),
            Series::line(
                "machines reporting",
                color::TEAL,
                d.kpis
                    .iter()
                    .map(|k| (at(k), f64::from(k.reporting_devices)))
                    .collect(),
            ),
            Series::line(
                "machines working",
                color::BLUE,
                d.kpis
                    .iter()
                    .map(|k| (at(k), f64::from(k.active_devices)))
                    .collect(),
            ),
            Series::line(
                "operators",
                color::ORANGE,
                d.kpis
                    .iter()
                    .map(|k| (at(k), f64::from(k.distinct_operators)))
                    .collect(),
            ),
        ],
    );
    breadth.zone = d.zone.clone();
    breadth.y_min = Some(0.0);
    let _ = write!(
        out,
        r#"<div class="two"><div><h3>Depth: utilisation and advanced features</h3>{}</div><div><h3>Breadth: machines and operators</h3>{}</div></div>"#,
        depth.render(),
        breadth.render()
    );
    out.push_str(r#"<table><thead><tr><th>measure (daily mean)</th><th class="num">first 14 days</th><th class="num">last 14 days</th><th class="num">change</th></tr></thead><tbody>"#);
    type Row = (&'static str, fn(&CustomerKpi) -> f64, bool);
    let rows: [Row; 6] = [
        ("utilisation", |k| k.utilisation, true),
        (
            "advanced features used (share)",
            |k| k.advanced_feature_share,
            true,
        ),
        ("operating hours", |k| k.totals.operating_hours, false),
        ("machines working", |k| f64::from(k.active_devices), false),
        ("operators", |k| f64::from(k.distinct_operators), false),
        ("faults", |k| k.totals.fault_count as f64, false),
    ];
    for (label, f, ratio) in rows {
        let (b, a) = first_last(&d.kpis, f);
        let show = |v| if ratio { pct(v) } else { fmt(v, 1) };
        let _ = write!(
            out,
            r#"<tr><td>{label}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            show(b),
            show(a),
            change(b, a, ratio)
        );
    }
    out.push_str("</tbody></table>");
    out.push_str(&restated_note(&d.kpis, &d.zone));
    out.push_str("</section>");
}

/// Dates listed in the restatement footnote before "and n more".
const RESTATED_DATES_LISTED: usize = 10;

/// The footnote under the per-day figures: how many of the period's daily
/// windows telemetry that arrived late restated (`revision` above 0), and
/// which; empty when none was.
fn restated_note(kpis: &[CustomerKpi], zone: &jiff::tz::TimeZone) -> String {
    let restated: Vec<&CustomerKpi> = kpis.iter().filter(|k| k.revision > 0).collect();
    if restated.is_empty() {
        return String::new();
    }
    let mut days: Vec<String> = (restated.iter().take(RESTATED_DATES_LISTED))
        .map(|k| date(k.window_start, zone))
        .collect();
    if restated.len() > RESTATED_DATES_LISTED {
        days.push(format!(
            "and {} more",
            restated.len() - RESTATED_DATES_LISTED
        ));
    }
    format!(
        r#"<p class="footnote" id="restated-windows">{n} of {total} daily window{s} restated by late telemetry ({days}): readings that arrived after the day closed were counted in the day they were taken, and the figures above include them.</p>"#,
        n = restated.len(),
        total = kpis.len(),
        s = if kpis.len() == 1 { "" } else { "s" },
        days = days.join(", "),
    )
}

fn section_health(out: &mut String, d: &ReportData) {
    out.push_str(r#"<section id="health"><h2>Health</h2><p class="sub">The weighted health score (0-100; red up to 50, yellow to 75, green above) and the parts it is made of.</p>"#);
    let mut chart = LineChart::new(
        "health",
        vec![Series::line(
            "health score",
            color::BLUE,
            d.health.iter().map(|h| (h.window_start, h.score)).collect(),
        )],
    );
    chart.zone = d.zone.clone();
    chart.y_min = Some(0.0);
    chart.y_max = Some(100.0);
    chart = chart.full_width();
    chart.bands = vec![
        (0.0, 50.0, color::RED),
        (50.0, 75.0, color::YELLOW),
        (75.0, 100.0, color::GREEN),
    ];
    out.push_str(&chart.render());
    if let (Some(f), Some(l)) = (d.health.first(), d.health.last()) {
        out.push_str(r#"<table><thead><tr><th>component (0-100)</th><th class="num">period start</th><th class="num">period end</th><th class="num">change</th><th class="num">score points</th></tr></thead><tbody>"#);
        type Part = (&'static str, fn(&HealthRecord) -> Option<f64>);
        let parts: [Part; 7] = [
            ("adoption depth", |h| Some(h.components.depth)),
            ("adoption breadth", |h| Some(h.components.breadth)),
            ("utilisation", |h| Some(h.components.utilisation)),
            ("outcome attainment", |h| h.components.outcome),
            ("reliability", |h| Some(h.components.reliability)),
            ("usage trend", |h| Some(h.components.trend)),
            ("maturity", |h| h.components.maturity),
        ];
        // What each component won or lost the score over the period: the
        // days' moves add up to the score's change.
        let mut moved = [0.0; 7];
        for h in d.health.iter().skip(1) {
            for (sum, (_, points)) in moved.iter_mut().zip(h.moved_1d.named()) {
                *sum += points;
            }
        }
        for ((label, get), points) in parts.into_iter().zip(moved) {
            let _ = write!(
                out,
                r#"<tr><td>{label}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{points:+.1}</td></tr>"#,
                fmt(get(f), 0),
                fmt(get(l), 0),
                change(get(f), get(l), false)
            );
        }
        let _ = write!(
            out,
            r#"<tr><td><b>score</b></td><td class="num">{:.0}</td><td class="num">{:.0}</td><td class="num">{}</td><td class="num">{:+.1}</td></tr>"#,
            f.score,
            l.score,
            change(Some(f.score), Some(l.score), false),
            moved.iter().sum::<f64>()
        );
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
}

fn section_journey(out: &mut String, d: &ReportData) {
    out.push_str(r#"<section id="journey"><h2>Milestones and time to value</h2>"#);
    let activation = d.activation();
    let ttv = d.health.last().and_then(|h| h.time_to_value_days);
    let _ = write!(
        out,
        r#"<p class="summary">{}</p>"#,
        match (activation, ttv) {
            (Some(a), Some(t)) => format!(
                "Activated on <b>{}</b>; first value reached after <b>{t:.1} days</b>.",
                date(a, &d.zone)
            ),
            (Some(a), None) => format!(
                "Activated on <b>{}</b>; the first value milestone is not reached yet.",
                date(a, &d.zone)
            ),
            (None, _) if !d.health.is_empty() => "Not activated: none of the customer's machines has sent telemetry yet (see onboarding_stalled).".into(),
            _ => "No health record in this period, so no activation to tell of: the customer sent no telemetry yet, or the store holds no day of the period.".into(),
        }
    );
    if d.milestones.is_empty() {
        out.push_str(r#"<p class="sub">No milestone is defined for this customer.</p></section>"#);
        return;
    }
    out.push_str(&journey_svg(d));
    out.push_str(r#"<table><thead><tr><th>#</th><th>milestone</th><th>status</th><th>due</th><th>reached</th><th class="num">days from activation</th></tr></thead><tbody>"#);
    for m in &d.milestones {
        let days = match (activation, m.reached_at) {
            (Some(a), Some(r)) => format!("{:.0}", r.saturating_sub(a) as f64 / DAY_MS as f64),
            _ => "–".into(),
        };
        let _ = write!(
            out,
            r#"<tr><td>{}</td><td><b>{}</b>{}</td><td><span class="status {}">{}</span></td><td>{}</td><td>{}</td><td class="num">{days}</td></tr>"#,
            m.position,
            escape(&m.milestone),
            if m.value_milestone {
                " <span class=\"sub\">(value)</span>"
            } else {
                ""
            },
            m.status.as_str(),
            m.status.as_str(),
            date(m.due_at, &d.zone),
            m.reached_at.map_or("–".into(), |r| date(r - 1, &d.zone)),
        );
    }
    out.push_str("</tbody></table></section>");
}

/// The journey as a timeline: each milestone's due date (hollow) and the
/// day it was reached (filled), on one time axis.
fn journey_svg(d: &ReportData) -> String {
    const W: f64 = svg::FULL_WIDTH;
    const L: f64 = 180.0;
    const R: f64 = 20.0;
    const ROW: f64 = 26.0;
    let h = 30.0 + ROW * d.milestones.len() as f64;
    let mut times: Vec<u64> = d
        .milestones
        .iter()
        .flat_map(|m| [Some(m.due_at), m.reached_at])
        .flatten()
        .collect();
    times.extend(d.activation());
    times.push(d.to);
    let x0 = times.iter().copied().min().unwrap_or(0);
    let x1 = times.iter().copied().max().unwrap_or(1).max(x0 + DAY_MS);
    let sx = |t: u64| L + (W - L - R) * (t - x0) as f64 / (x1 - x0) as f64;
    let mut s = format!(
        r#"<svg class="chart" data-chart="journey" viewBox="0 0 {W} {h}" xmlns="http://www.w3.org/2000/svg" role="img">"#
    );
    if let Some(a) = d.activation() {
        let _ = write!(
            s,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="4" y2="{1}" stroke="#8a94a6" stroke-dasharray="3,3"/><text x="{0:.1}" y="{2}" text-anchor="middle">activation {3}</text>"##,
            sx(a),
            h - 18.0,
            h - 4.0,
            &date(a, &d.zone)[5..]
        );
    }
    for (i, m) in d.milestones.iter().enumerate() {
        let y = 16.0 + ROW * i as f64;
        let color = match m.status {
            MilestoneStatus::Reached => color::GREEN,
            MilestoneStatus::Overdue => color::RED,
            MilestoneStatus::Pending => color::GREY,
        };
        let _ = write!(
            s,
            r##"<text x="{}" y="{:.1}" text-anchor="end">{}. {}</text><line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#e3e7ee"/>"##,
            L - 8.0,
            y + 4.0,
            m.position,
            escape(&m.milestone),
            W - R
        );
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{y:.1}" r="6" fill="none" stroke="{color}" stroke-width="2"><title>due {}</title></circle>"#,
            sx(m.due_at),
            date(m.due_at, &d.zone)
        );
        if let Some(r) = m.reached_at {
            let _ = write!(
                s,
                r#"<circle cx="{:.1}" cy="{y:.1}" r="5" fill="{color}"><title>reached {}</title></circle>"#,
                sx(r),
                date(r - 1, &d.zone)
            );
        }
    }
    s.push_str("</svg>");
    s.push_str(r#"<div class="legend"><span>○ due date</span><span>● reached</span><span style="color:#2f9e44">reached</span><span style="color:#d64545">overdue</span><span>pending</span></div>"#);
    s
}

fn section_risks(out: &mut String, d: &ReportData) {
    out.push_str(r#"<section id="risks"><h2>Risks and next actions</h2>"#);
    if d.alerts.is_empty() {
        out.push_str(r#"<p class="sub">No at-risk signal in the period.</p></section>"#);
        return;
    }
    let mut alerts: Vec<_> = d.alerts.iter().collect();
    alerts.sort_by_key(|a| {
        (
            a.status != AlertStatus::Open,
            std::cmp::Reverse(a.opened_at),
        )
    });
    for a in alerts {
        if a.status == AlertStatus::Retracted {
            let _ = write!(
                out,
                r#"<div class="alert retracted"><span class="rule">{}</span> · retracted: telemetry that arrived late showed it did not happen ({})</div>"#,
                a.rule.as_str(),
                date(a.opened_at - 1, &d.zone),
            );
            continue;
        }
        let resolved = a.status == AlertStatus::Resolved;
        let _ = write!(
            out,
            r#"<div class="alert{}"><span class="rule">{}</span> · {} · since {}{}<div>{}</div><div class="next">{}</div></div>"#,
            if resolved { " resolved" } else { "" },
            a.rule.as_str(),
            a.stage.as_str(),
            // Transitions are dated by the end of their day: the day is
            // the one before it.
            date(a.opened_at - 1, &d.zone),
            a.resolved_at.map_or(String::new(), |r| format!(
                ", resolved {}",
                date(r - 1, &d.zone)
            )),
            escape(&a.evidence),
            if resolved {
                "resolved".to_string()
            } else {
                format!("Next action: {}", escape(&a.next_action))
            },
        );
    }
    out.push_str("</section>");
}

/// The CS team's touchpoints as a timeline against operating hours, and
/// the list: what was done, when, and whether a decision-maker was there.
fn section_touchpoints(out: &mut String, d: &ReportData) {
    out.push_str(r#"<section id="touchpoints"><h2>Touchpoints</h2><p class="sub">What the customer success team did with you in the period, against the machines' operating hours per day.</p>"#);
    if d.touchpoints.is_empty() {
        out.push_str(r#"<p class="sub">No touchpoints recorded in the period.</p></section>"#);
        return;
    }
    let hours_on = |at: EventTime| {
        d.kpis
            .iter()
            .find(|k| (k.window_start..k.window_end).contains(&(at + DAY_MS / 2)))
            .map_or(0.0, |k| k.totals.operating_hours)
    };
    let mut hours = Series::line(
        "operating hours",
        color::BLUE,
        d.kpis
            .iter()
            .map(|k| (k.window_start, k.totals.operating_hours))
            .collect(),
    );
    // A touchpoint's date is the customer's local date: marked at the start
    // of that day, as the day's hours are.
    hours.marks = d
        .touchpoints
        .iter()
        .map(|t| date_start(&d.zone, t.at))
        .zip(&d.touchpoints)
        .map(|(day, t)| (day, hours_on(day), touchpoint_color(t.kind)))
        .collect();
    let mut chart = LineChart::new("touchpoints-timeline", vec![hours]).in_zone(&d.zone);
    chart.y_min = Some(0.0);
    chart.width = svg::FULL_WIDTH;
    out.push_str(&chart.render());
    out.push_str(r#"<table><thead><tr><th>day</th><th>touchpoint</th><th>CSM</th><th>attendees</th><th>decision-maker</th><th>notes</th></tr></thead><tbody>"#);
    for t in &d.touchpoints {
        let _ = write!(
            out,
            r#"<tr data-touchpoint="{kind}"><td>{}</td><td><span style="color:{}">&#9679;</span> {kind}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>"#,
            date(t.at, &jiff::tz::TimeZone::UTC),
            touchpoint_color(t.kind),
            escape(&t.csm),
            escape(&t.attendees),
            if t.decision_maker_present {
                "yes"
            } else {
                "no"
            },
            escape(&t.notes),
            kind = t.kind.as_str(),
        );
    }
    out.push_str("</tbody></table></section>");
}

fn touchpoint_color(kind: TouchpointKind) -> &'static str {
    match kind {
        TouchpointKind::Kickoff => color::GREY,
        TouchpointKind::Training => color::ORANGE,
        TouchpointKind::OnsiteVisit => color::TEAL,
        TouchpointKind::HealthCheckCall => color::BLUE,
        TouchpointKind::BusinessReview => color::VIOLET,
        TouchpointKind::Webinar => color::GREEN,
        TouchpointKind::Escalation => color::RED,
    }
}

/// The whole document.
pub fn render(d: &ReportData) -> String {
    let mut out = String::with_capacity(64 * 1024);
    let period = format!("{} to {}", date(d.from, &d.zone), date(d.to - 1, &d.zone));
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>Business review: {name}, {period}</title><style>{STYLE}</style></head><body><div class="page">"#,
        name = escape(&d.name),
    );
    let _ = write!(
        out,
        r#"<header><div class="sub">Business review · {period}</div><h1>{}</h1><div class="sub">{} · {} · ARR {}{}</div></header>"#,
        escape(&d.name),
        escape(&d.customer),
        d.segment.map_or("segment unknown", |s| s.as_str()),
        d.arr.map_or("–".into(), money),
        d.renewal
            .as_ref()
            .map_or(String::new(), |r| format!(" · renewal {}", escape(r))),
    );
    section_summary(&mut out, d);
    section_outcomes(&mut out, d);
    section_adoption(&mut out, d);
    section_health(&mut out, d);
    section_journey(&mut out, d);
    section_touchpoints(&mut out, d);
    section_risks(&mut out, d);
    let _ = write!(
        out,
        r#"<footer>Generated by <code>fleetpulse report</code> from {}. Days are the customer's local days; KPI definitions: docs/KPIS.md and docs/CUSTOMER_SUCCESS.md of fleetpulse.</footer></div></body></html>"#,
        escape(&d.source)
    );
    out
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::health::{HealthComponents, Stage};
    use fleetpulse_engine::kpi::risk::Rule;
    use fleetpulse_engine::kpi::touchpoint::Touchpoint;
    use fleetpulse_engine::{AlertRecord, MilestoneRecord, Segment};

    use super::*;

    const DAY0: u64 = 1_767_571_200_000;

    fn data() -> ReportData {
        let day = |d: u64| DAY0 + d * DAY_MS;
        let health = (0..30)
            .map(|d| HealthRecord {
                customer: "c".into(),
                window_start: day(d),
                window_end: day(d + 1),
                score: 40.0 + d as f64,
                band: Band::of(40.0 + d as f64),
                score_trend: 1.0,
                components: HealthComponents::default(),
                moved_1d: Default::default(),
                moved_7d: Default::default(),
                stage: Stage::Adopt,
                segment: Segment::LowTouch,
                arr: 1000.0,
                arr_at_risk: 1000.0,
                open_alerts: 1,
                days_since_activation: 10.0 + d as f64,
                days_to_renewal: 100.0,
                time_to_value_days: Some(7.5),
                usage_growth: 0.1,
                milestones_reached: 1,
                milestones_total: 2,
                provisional: false,
            })
            .collect();
        let kpis = (0..30)
            .map(|d| CustomerKpi {
                customer: "c".into(),
                window: "1d".into(),
                window_start: day(d),
                window_end: day(d + 1),
                devices_purchased: 10,
                active_devices: 5,
                utilisation: 0.1 + d as f64 / 100.0,
                ..CustomerKpi::default()
            })
            .collect();
        let outcome = (0..30)
            .map(|d| OutcomeRecord {
                customer: "c".into(),
                outcome: "rate".into(),
                window: "1d".into(),
                window_start: day(d),
                window_end: day(d + 1),
                value: if d == 3 {
                    f64::NAN
                } else {
                    0.1 + d as f64 / 100.0
                },
                target: 0.2,
                direction: Direction::AtMost,
                met: d < 10,
                consecutive_met: 0,
                consecutive_missed: 0,
            })
            .collect();
        ReportData {
            customer: "c".into(),
            name: "Acme <Quarry>".into(),
            segment: Some(Segment::LowTouch),
            arr: Some(1000.0),
            renewal: Some("2027-01-01".into()),
            from: day(0),
            to: day(30),
            health,
            kpis,
            outcomes: [("rate".to_string(), outcome)].into_iter().collect(),
            milestones: vec![MilestoneRecord {
                customer: "c".into(),
                milestone: "first_100_hours".into(),
                position: 1,
                value_milestone: true,
                window_start: day(29),
                window_end: day(30),
                due_at: day(5),
                reached_at: Some(day(3)),
                status: MilestoneStatus::Reached,
            }],
            alerts: vec![AlertRecord {
                customer: "c".into(),
                customer_name: "Acme".into(),
                rule: Rule::UsageDrop,
                episode: 1,
                status: AlertStatus::Open,
                provisional: false,
                opened_at: day(20),
                resolved_at: None,
                evidence: "hours 31% below baseline".into(),
                metric: 0.31,
                threshold: 0.25,
                stage: Stage::Adopt,
                segment: Segment::LowTouch,
                arr_at_risk: 1000.0,
                next_action: "Call the sponsor".into(),
            }],
            touchpoints: vec![Touchpoint {
                customer: "c".into(),
                kind: TouchpointKind::Training,
                at: day(12),
                csm: "alice".into(),
                attendees: "12 <operators>".into(),
                decision_maker_present: false,
                notes: String::new(),
                recorded_by: "alice".into(),
            }],
            source: "kpi.sqlite".into(),
            zone: jiff::tz::TimeZone::UTC,
        }
    }

    #[test]
    fn the_document_is_self_contained_and_has_every_section() {
        let html = render(&data());
        for id in [
            "summary",
            "outcomes",
            "adoption",
            "health",
            "journey",
            "touchpoints",
            "risks",
        ] {
            assert!(html.contains(&format!(r#"<section id="{id}">"#)), "{id}");
        }
        for chart in [
            "outcome-rate",
            "adoption-depth",
            "adoption-breadth",
            "health",
            "journey",
            "touchpoints-timeline",
        ] {
            assert!(
                html.contains(&format!(r#"data-chart="{chart}""#)),
                "{chart}"
            );
        }
        assert!(html.contains("Acme &lt;Quarry&gt;"));
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "no external resources"
        );
        assert!(html.contains("hours 31% below baseline"));
        assert!(html.contains("Call the sponsor"));
        assert!(html.contains("7.5 days"));
        // 10 of 29 evaluated days met.
        assert!(html.contains("10 / 29"), "attainment row");
        assert!(html.contains(r#"<tr data-touchpoint="training">"#));
        assert!(html.contains("12 &lt;operators&gt;"));
        // Nothing restated: no footnote.
        assert!(!html.contains("restated by late telemetry"));
    }

    #[test]
    fn restated_days_get_a_footnote_and_retracted_alerts_say_so() {
        let mut d = data();
        for day in [4, 5, 6] {
            d.kpis[day].revision = 2;
        }
        let retracted = AlertRecord {
            rule: Rule::DevicesDark,
            status: AlertStatus::Retracted,
            opened_at: d.kpis[4].window_start,
            ..d.alerts[0].clone()
        };
        d.alerts.push(retracted);
        let html = render(&d);
        let days: Vec<String> = [4, 5, 6]
            .iter()
            .map(|&i| date(d.kpis[i].window_start, &d.zone))
            .collect();
        assert!(
            html.contains(&format!(
                "3 of 30 daily windows restated by late telemetry ({})",
                days.join(", ")
            )),
            "footnote"
        );
        let adoption = &html[html.find(r#"<section id="adoption">"#).unwrap()..];
        let adoption = &adoption[..adoption.find("</section>").unwrap()];
        assert!(adoption.contains(r#"id="restated-windows""#));
        assert!(html.contains(
            "devices_dark</span> · retracted: telemetry that arrived late showed it did not happen"
        ));
        // The summary counts the open episode only.
        assert!(html.contains("1 open alert<"), "summary card");

        // Many restated days: ten dates, then how many more.
        for k in &mut d.kpis {
            k.revision = 1;
        }
        let html = render(&d);
        assert!(html.contains("30 of 30 daily windows restated"));
        assert!(html.contains(", and 20 more)"));
    }
}
