// fleetpulse dashboard: plain JavaScript, no build step, no CDN. Routes:
//   #/              at-risk list and portfolio tiles
//   #/customer/ID   one customer: health, usage and outcome charts, journey
//   #/alerts        alert episodes with filters
// It polls /api/status and redraws the current page whenever the data's
// version changes, so it follows a running service (or demo) live.
// It asks /api/me who the user is: a viewer sees the portfolio only, a CSM
// their own customers (the API filters; the page only adapts), and a 401
// from any call sends the browser to the login page.
"use strict";

const POLL_MS = 2000;
const DAY_MS = 86400000;
const COLORS = {
  red: "#d64545", yellow: "#e0a000", green: "#2f9e44", grey: "#8a94a6",
  blue: "#2b6cb0", teal: "#0c8599", violet: "#7048e8", orange: "#e8590c",
};
const SERIES = [COLORS.blue, COLORS.orange, COLORS.teal, COLORS.violet, COLORS.green];

let lastVersion = null;
let me = null;
let rendering = false;

// ---- formatting -----------------------------------------------------------

function esc(value) {
  return String(value == null ? "" : value)
    .replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

function money(n) {
  if (n == null || !isFinite(n)) return "–";
  return Math.round(n).toLocaleString("en-US");
}

function num(n, digits) {
  if (n == null || !isFinite(n)) return "–";
  return Number(n).toFixed(digits == null ? 0 : digits);
}

// Money on a chart's axis, where six digits do not fit: 194k, 1.2M.
function moneyShort(n) {
  const a = Math.abs(n);
  if (a >= 1e6) return num(n / 1e6, a >= 1e7 ? 0 : 1) + "M";
  if (a >= 1e3) return num(n / 1e3, a >= 1e4 ? 0 : 1) + "k";
  return money(n);
}

function pct(n, digits) {
  if (n == null || !isFinite(n)) return "–";
  return (n * 100).toFixed(digits == null ? 0 : digits) + "%";
}

function signed(n, digits) {
  if (n == null || !isFinite(n)) return "–";
  let s = Number(n).toFixed(digits == null ? 0 : digits);
  if (Number(s) === 0) return s.replace("-", "");
  return n > 0 ? "+" + s : s;
}

// A customer's days are its local days (`timezone` from customers.toml):
// its windows, alerts and milestones are dated in ZONE, which the customer's
// page sets, so a Berlin day that starts at 23:00 UTC is not dated by the
// day before. Dates entered as dates (touchpoints, contract dates) are kept
// as UTC midnight and shown in UTC.
let ZONE = "UTC";
const CLOCKS = new Map();

// One formatter per zone; a zone this browser does not know reads as UTC.
function clock(zone) {
  let c = CLOCKS.get(zone);
  if (!c) {
    try {
      c = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23" });
    } catch (e) {
      c = clock("UTC");
    }
    CLOCKS.set(zone, c);
  }
  return c;
}

function clockParts(ms, zone) {
  const parts = {};
  for (const p of clock(zone).formatToParts(new Date(ms))) parts[p.type] = p.value;
  return parts;
}

function date(ms, zone) {
  if (ms == null) return "–";
  const p = clockParts(ms, zone || ZONE);
  return `${p.year}-${p.month}-${p.day}`;
}

// The day a transition took place at the end of (`opened_at`, `resolved_at`
// and `reached_at` are the exclusive end of the customer's day): dated by
// the end itself, an alert raised during a day read "since" the next one.
function dayOf(end, zone) {
  return end == null ? "–" : date(end - 1, zone);
}

function dateTime(ms, zone) {
  if (ms == null) return "–";
  const p = clockParts(ms, zone || ZONE);
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}`;
}

function band(b) {
  return `<span class="band ${esc(b || "none")}">${esc(b || "no data")}</span>`;
}

// Late data: a window record with revision > 0 was restated (telemetry that
// arrived after the window closed, within the correction horizon, changed
// it); an alert episode with status "retracted" never happened.
function restatedTitle(revision) {
  return `restated (revision ${revision}): telemetry arrived after the window closed`;
}

function restatedBadge(revision) {
  if (!(revision > 0)) return "";
  return ` <span class="restated" data-revision="${esc(revision)}" title="${esc(restatedTitle(revision))}">restated</span>`;
}

const RETRACTED_TEXT = "retracted: telemetry that arrived late showed it did not happen";
// An alert raised from the open day (devices dark within a minute) before the
// day closed; the day's close confirms it or retracts it.
const PROVISIONAL_TEXT = "provisional: raised before the day closed, which confirms or retracts it";
const UNCONFIRMED_TEXT = "retracted: the day's close did not confirm it";
const retractedText = (a) => a.provisional ? UNCONFIRMED_TEXT : RETRACTED_TEXT;
// A health score of the open day: its hours so far, read at their pace.
const PROVISIONAL_SCORE_TEXT = "provisional: today so far, read at its pace; the day's close replaces it";
const provisionalScore = (h) => h && h.provisional
  ? ` <span class="provisional-label" title="${esc(PROVISIONAL_SCORE_TEXT)}">provisional</span>` : "";
const provisionalLabel = (a) => a.provisional && a.status === "open"
  ? `<span class="provisional-label" title="${esc(PROVISIONAL_TEXT)}">provisional</span>` : "";

// ---- charts: small hand-written SVG ----------------------------------------

// A sparkline of health scores, coloured by the latest band.
function sparkline(points, width, height) {
  width = width || 120;
  height = height || 28;
  const valid = points.filter((p) => p.score != null);
  if (valid.length < 2) {
    return `<svg class="spark" data-chart="sparkline" width="${width}" height="${height}"></svg>`;
  }
  const x0 = valid[0].window_start, x1 = valid[valid.length - 1].window_start;
  // Scaled to the customer's own range (at least 20 points), so the trend shows.
  const scores = valid.map((p) => p.score);
  const mid = (Math.max(...scores) + Math.min(...scores)) / 2;
  const span = Math.max(20, Math.max(...scores) - Math.min(...scores));
  const lo = Math.max(0, Math.min(100 - span, mid - span / 2)), hi = lo + span;
  const sx = (x) => 2 + (width - 4) * (x - x0) / Math.max(1, x1 - x0);
  const sy = (y) => height - 3 - (height - 6) * (Math.min(Math.max(y, lo), hi) - lo) / (hi - lo);
  const d = valid.map((p, i) => `${i ? "L" : "M"}${sx(p.window_start).toFixed(1)},${sy(p.score).toFixed(1)}`).join("");
  const last = valid[valid.length - 1];
  const color = COLORS[last.band] || COLORS.grey;
  return `<svg class="spark" data-chart="sparkline" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}">` +
    (lo < 50 && hi > 50 ? `<line x1="0" x2="${width}" y1="${sy(50)}" y2="${sy(50)}" stroke="#f1c4c4" stroke-dasharray="2,2"/>` : "") +
    `<path d="${d}" fill="none" stroke="${color}" stroke-width="1.6"/>` +
    `<circle cx="${sx(last.window_start).toFixed(1)}" cy="${sy(last.score).toFixed(1)}" r="2.2" fill="${color}"/></svg>`;
}

// A time-series line chart. series: [{name, color, dashed, points: [[ms, y]]}].
// opts: {title, id, yMin, yMax, format, bands: [{from, to, color}], height,
// restated: [[ms, revision]] (windows marked with a triangle on top)}.
function lineChart(series, opts) {
  const W = 640, H = opts.height || 220, L = 48, R = 12, T = 12, B = 26;
  const all = [];
  series.forEach((s) => s.points.forEach((p) => { if (p[1] != null && isFinite(p[1])) all.push(p); }));
  let fmt = opts.format;
  let body = "";
  if (all.length === 0) {
    body = `<text x="${W / 2}" y="${H / 2}" text-anchor="middle">no data yet</text>`;
  } else {
    const xs = all.map((p) => p[0]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x1 === x0) { x0 -= DAY_MS; x1 += DAY_MS; }
    const ys = all.map((p) => p[1]);
    let y0 = opts.yMin != null ? opts.yMin : Math.min(0, ...ys);
    let y1 = opts.yMax != null ? opts.yMax : Math.max(...ys);
    if (opts.yMax == null) y1 = y1 + (y1 - y0) * 0.08;
    if (y1 <= y0) y1 = y0 + 1;
    if (!fmt) {
      const step = (y1 - y0) / 4;
      const digits = step >= 5 ? 0 : step >= 0.5 ? 1 : step >= 0.05 ? 2 : 3;
      fmt = (v) => num(v, digits);
    }
    const sx = (x) => L + (W - L - R) * (x - x0) / (x1 - x0);
    const sy = (y) => T + (H - T - B) * (1 - (Math.min(Math.max(y, y0), y1) - y0) / (y1 - y0));
    (opts.bands || []).forEach((b) => {
      const top = sy(Math.min(b.to, y1)), bottom = sy(Math.max(b.from, y0));
      body += `<rect x="${L}" y="${top.toFixed(1)}" width="${W - L - R}" height="${Math.max(0, bottom - top).toFixed(1)}" fill="${b.color}" opacity="0.08"/>`;
    });
    for (let k = 0; k <= 4; k++) {
      const v = y0 + (y1 - y0) * k / 4, y = sy(v);
      body += `<line class="grid" x1="${L}" x2="${W - R}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}"/>`;
      body += `<text x="${L - 6}" y="${(y + 4).toFixed(1)}" text-anchor="end">${esc(fmt(v))}</text>`;
    }
    const ticks = Math.min(6, Math.max(2, Math.round((x1 - x0) / DAY_MS)));
    for (let k = 0; k <= ticks; k++) {
      const x = x0 + (x1 - x0) * k / ticks;
      const anchor = k === 0 ? "start" : k === ticks ? "end" : "middle";
      body += `<text x="${sx(x).toFixed(1)}" y="${H - 8}" text-anchor="${anchor}">${esc(date(x).slice(5))}</text>`;
    }
    series.forEach((s) => {
      let d = "", pen = false;
      s.points.forEach((p) => {
        if (p[1] == null || !isFinite(p[1])) { pen = false; return; }
        d += `${pen ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`;
        pen = true;
      });
      if (d) {
        body += `<path class="series" data-series="${esc(s.name)}" d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.dashed ? 1.5 : 2}"${s.dashed ? ' stroke-dasharray="6,4"' : ""}/>`;
      }
      (s.marks || []).forEach((m) => {
        body += `<circle class="mark" data-day="${esc(date(m[0]))}" data-value="${esc(m[1])}" cx="${sx(m[0]).toFixed(1)}" cy="${sy(m[1]).toFixed(1)}" r="2.5" fill="${m[2] || s.color}"/>`;
      });
    });
    (opts.restated || []).forEach((r) => {
      const x = sx(r[0]);
      body += `<g class="restated-mark" data-window-start="${r[0]}" data-revision="${esc(r[1])}"><title>${esc(date(r[0]) + ": " + restatedTitle(r[1]))}</title>` +
        `<line x1="${x.toFixed(1)}" x2="${x.toFixed(1)}" y1="${T}" y2="${H - B}" stroke="${COLORS.orange}" stroke-dasharray="2,3" opacity="0.5"/>` +
        `<path d="M${(x - 4).toFixed(1)},${T - 2}L${(x + 4).toFixed(1)},${T - 2}L${x.toFixed(1)},${T + 5}Z" fill="${COLORS.orange}"/></g>`;
    });
  }
  const legend = series.map((s) =>
    `<span><i style="background:${s.color}${s.dashed ? ";opacity:.6" : ""}"></i>${esc(s.name)}</span>`).join("") +
    ((opts.restated || []).length ? `<span class="restated-legend" title="telemetry arrived after these windows closed"><b style="color:${COLORS.orange}">▼</b> restated window</span>` : "");
  return `<div class="card"><h3>${esc(opts.title)}</h3>` +
    `<svg class="chart" data-chart="${esc(opts.id)}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="xMidYMid meet">${body}</svg>` +
    `<div class="legend">${legend}</div></div>`;
}

// ---- data -----------------------------------------------------------------

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (response.status === 401) {
    location.href = "/login";
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (e) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

// ---- pages ----------------------------------------------------------------

function alertHtml(a, zone) {
  if (a.status === "retracted") {
    return `<div class="alert retracted" data-rule="${esc(a.rule)}" data-status="retracted" title="${esc(retractedText(a))}">` +
      `<span class="rule">${esc(a.rule)}</span><span class="retracted-label">retracted</span>` +
      `<span class="evidence">${esc(a.evidence)}` +
      `<div class="next">${esc(retractedText(a))} · opened ${esc(dayOf(a.opened_at, zone))} · not counted as open or at risk</div></span></div>`;
  }
  const resolved = a.status === "resolved";
  return `<div class="alert${resolved ? " resolved" : ""}" data-rule="${esc(a.rule)}" data-status="${esc(a.status)}" data-provisional="${a.provisional ? "true" : "false"}">` +
    `<span class="rule">${esc(a.rule)}</span>${provisionalLabel(a)}` +
    `<span class="evidence">${esc(a.evidence)}` +
    `<div class="next">${resolved ? "resolved " + esc(dayOf(a.resolved_at, zone)) : "since " + esc(dayOf(a.opened_at, zone)) + " · " + esc(a.stage) + " · next: " + esc(a.next_action)}</div></span></div>`;
}

function tiles(portfolio, list) {
  const p = portfolio.latest;
  // A viewer has no list: the portfolio's own counts.
  const customers = list ? list.customers : new Array(portfolio.customers).fill(null);
  const count = (b) => list ? customers.filter((c) => c.health && c.health.band === b).length : (p ? p[b] : 0);
  const total = p ? p.arr_total : customers.reduce((s, c) => s + (c.arr || 0), 0);
  const atRisk = p ? p.arr_at_risk : customers.reduce((s, c) => s + (c.health ? c.health.arr_at_risk || 0 : 0), 0);
  const share = total > 0 ? atRisk / total : 0;
  const growth = p ? `high-touch, 7 days vs 28 · other customers ${pct(p.unmanaged_usage_growth, 1)}` : "–";
  const attain = p ? `high-touch, 0-100 · other customers ${num(p.unmanaged_outcome_attainment)}` : "–";
  return `<section class="tiles" id="portfolio">
    <div class="tile"><div class="label">Customers</div><div class="value">${customers.length}</div>
      <div class="bands"><span style="color:${COLORS.red}">${count("red")} red</span><span style="color:${COLORS.yellow}">${count("yellow")} yellow</span><span style="color:${COLORS.green}">${count("green")} green</span></div></div>
    <div class="tile"><div class="label">ARR</div><div class="value">${money(total)}</div><div class="sub">annual recurring revenue</div></div>
    <div class="tile risk"><div class="label">ARR at risk${p ? restatedBadge(p.revision) : ""}</div><div class="value" id="arr-at-risk">${money(atRisk)}</div><div class="sub">${pct(share)} of ARR · red or open alert</div></div>
    <div class="tile"><div class="label">Open alerts</div><div class="value">${portfolio.open_alerts}</div>
      <div class="sub">${portfolio.open_alerts_by_rule.map((r) => esc(r.rule) + " " + r.open_alerts).join(" · ") || "none"}</div></div>
    <div class="tile"><div class="label">Usage growth, managed</div><div class="value">${p ? pct(p.managed_usage_growth, 1) : "–"}</div><div class="sub">${esc(growth)}</div></div>
    <div class="tile"><div class="label">Outcome attainment, managed</div><div class="value">${p ? num(p.managed_outcome_attainment) : "–"}</div><div class="sub">${esc(attain)}</div></div>
  </section>`;
}

// ARR at risk per date over the period, against the ARR: dates whose figures
// late telemetry or a changed definition restated are marked, like windows.
function portfolioChart(portfolio) {
  const days = portfolio.history;
  if (!days.length) return "";
  return `<div id="portfolio-history">` + lineChart([
    { name: "ARR at risk", color: COLORS.red, points: days.map((d) => [d.window_start, d.arr_at_risk]) },
    { name: "ARR", color: COLORS.grey, dashed: true, points: days.map((d) => [d.window_start, d.arr_total]) },
  ], { title: `ARR at risk per day, last ${days.length} days`, id: "portfolio-history", yMin: 0, format: moneyShort, restated: restatedWindows(days) }) + "</div>";
}

// Revenue against logo retention, per group, for the latest periods: logo
// retention alone flatters, so NRR and GRR stand beside it.
function retentionTable(retention) {
  const periods = retention.periods.slice(-4);
  if (!periods.length) return '<p class="muted" id="retention">No contract events yet.</p>';
  const groups = periods[periods.length - 1].groups.map((g) => g.group);
  const cell = (p, group) => {
    const g = p.groups.find((x) => x.group === group);
    if (!g || g.logos_start === 0) {
      return `<td class="muted" data-period="${esc(p.label)}" data-group="${esc(group)}">–${g && g.new_logos ? `<div class="small">${g.new_logos} new</div>` : ""}</td>`;
    }
    return `<td data-period="${esc(p.label)}" data-group="${esc(group)}">` +
      `<div>NRR <b class="nrr">${pct(g.nrr)}</b> · GRR <b class="grr">${pct(g.grr)}</b> · logos <b class="logos">${pct(g.logo_retention)}</b></div>` +
      `<div class="muted small">${money(g.start_arr)} → ${money(g.end_arr)}; churned ${money(g.churned_arr)} (${g.logos_churned} of ${g.logos_start})${g.new_logos ? `; ${g.new_logos} new, ${money(g.new_arr)}` : ""}</div></td>`;
  };
  return `<h2>Revenue retention</h2>
    <p class="muted">Per ${esc(retention.period)}: the customers with ARR at its start; net (NRR) and gross (GRR) revenue retention next to logo retention. Managed accounts: ${esc(retention.managed)}.</p>
    <div class="list"><table id="retention">
      <thead><tr><th>group</th>${periods.map((p) => `<th>${esc(p.label)}${p.complete ? "" : " <span class=\"muted small\">so far</span>"}</th>`).join("")}</tr></thead>
      <tbody>${groups.map((group) => `<tr data-group="${esc(group)}"><td><b>${esc(group)}</b></td>${periods.map((p) => cell(p, group)).join("")}</tr>`).join("")}
      <tr data-group="risk-check"><td><b>ARR at risk then, lost later</b></td>${periods.map((p) => p.risk
        ? `<td data-period="${esc(p.label)}" data-group="risk-check">at risk on day 1: ${money(p.risk.arr_at_risk)} (${p.risk.customers_at_risk} of ${p.risk.customers})<div class="muted small">lost: ${money(p.risk.lost_at_risk)} of them, ${money(p.risk.lost_elsewhere)} elsewhere</div></td>`
        : '<td class="muted">–</td>').join("")}</tr></tbody>
    </table></div>`;
}

// What each kind of CS activity did to operating hours and to outcome
// attainment, against customers without any touchpoint in the same days.
function impactTable(impact) {
  if (!impact.kinds.length) return "";
  const sign = (v) => (v >= 0 ? "+" : "");
  const significant = (lo, hi) => lo != null && (lo > 0 || hi < 0);
  const verdict = (lo, hi) => `<span class="${significant(lo, hi) ? "up" : "muted"}">${significant(lo, hi) ? "significant" : "not significant"}</span>`;
  const points = (v) => sign(v) + num(v, 1) + " pts";
  const row = (i) => `<tr data-kind="${esc(i.kind)}"><td><b>${esc(i.kind)}</b></td>
    <td class="num effect">${i.cases ? sign(i.effect) + pct(i.effect) : "–"}</td>
    <td class="num ci">${i.ci_low == null ? "–" : `[${sign(i.ci_low) + pct(i.ci_low)}, ${sign(i.ci_high) + pct(i.ci_high)}]`}</td>
    <td class="num cases">${i.cases}</td><td class="num">${num(i.controls, 1)}</td><td class="num">${i.left_out}</td>
    <td>${verdict(i.ci_low, i.ci_high)}</td>
    <td class="num outcome-effect">${i.outcome_effect == null ? "–" : points(i.outcome_effect)}</td>
    <td class="num outcome-ci">${i.outcome_ci_low == null ? "–" : `[${points(i.outcome_ci_low)}, ${points(i.outcome_ci_high)}]`}</td>
    <td class="num outcome-cases">${i.outcome_cases}</td>
    <td>${verdict(i.outcome_ci_low, i.outcome_ci_high)}</td></tr>`;
  return `<h2>Impact of CS activities</h2>
    <p class="muted">Over the ${impact.window_days} days after each touchpoint against the ${impact.window_days} before, minus the same for customers of the same segment and stage without any touchpoint then (difference in differences): the change of operating hours, and of outcome attainment (share of the customer's outcomes met each day, in points); 95% confidence interval, n cases.</p>
    <div class="list"><table id="impact"><thead>
      <tr><th></th><th colspan="6">operating hours</th><th colspan="4">outcome attainment</th></tr>
      <tr><th>activity</th><th class="num">effect</th><th class="num">95% CI</th><th class="num">n</th><th class="num">controls per case</th><th class="num">left out</th><th></th>
      <th class="num">effect</th><th class="num">95% CI</th><th class="num">n</th><th></th></tr></thead>
    <tbody>${impact.kinds.map(row).join("")}</tbody></table></div>`;
}

// Is the health score any good? Its ROC AUC some days before each churn
// or renewal, and how often each band churned: the evidence for tuning
// the weights.
function validationTable(v) {
  if (!v.decisions) return "";
  const rate = (b) => b.cases
    ? `${pct(b.churn_rate)}<div class="muted small">${b.churned} of ${b.cases}</div>`
    : '<span class="muted">–</span>';
  const row = (h) => `<tr data-horizon="${h.horizon_days}"><td><b>${h.horizon_days} days before</b></td>
    <td class="num auc">${h.auc == null ? "–" : h.auc.toFixed(2)}</td>
    <td class="num churned">${h.churned}</td><td class="num renewed">${h.renewed}</td><td class="num left-out">${h.without_history}</td>
    ${h.bands.map((b) => `<td class="num band-${esc(b.band)}">${rate(b)}</td>`).join("")}</tr>`;
  return `<h2>Is the health score any good?</h2>
    <p class="muted">${v.decisions} renewal decisions (churn or renewal) in the contract events of ${v.customers_with_decisions} customers, against each customer's health score that many days before. AUC: the chance that a churned customer scored below a renewed one (0.5 is a coin, 1 is perfect; – without both). Churn rate of each band then: red should churn most. Left out: no score that day.</p>
    <div class="list"><table id="health-validation"><thead><tr><th>horizon</th><th class="num">AUC</th><th class="num">churned</th><th class="num">renewed</th><th class="num">left out</th><th class="num">green: churned</th><th class="num">yellow: churned</th><th class="num">red: churned</th></tr></thead>
    <tbody>${v.horizons.map(row).join("")}</tbody></table></div>`;
}

async function homePage() {
  if (me && me.role === "viewer") {
    const [portfolio, retention, impact, validation] = await Promise.all([getJson("/api/portfolio?days=30"), getJson("/api/retention"), getJson("/api/impact"), getJson("/api/health-validation")]);
    return `<h1>Portfolio</h1>
      <p class="muted">Figures over all customers. Your role (viewer) does not show customers by name.</p>
      ${tiles(portfolio, null)}
      ${portfolioChart(portfolio)}
      ${retentionTable(retention)}
      ${impactTable(impact)}
      ${validationTable(validation)}`;
  }
  const [list, portfolio, retention, impact, validation] = await Promise.all([getJson("/api/customers"), getJson("/api/portfolio?days=30"), getJson("/api/retention"), getJson("/api/impact"), getJson("/api/health-validation")]);
  const rows = list.customers.map((c) => {
    const h = c.health;
    const b = h ? h.band : "none";
    const trend = h ? h.score_trend : null;
    return `<tr class="customer-row" data-customer="${esc(c.customer)}" data-band="${esc(b)}">
      <td class="bar ${esc(b)}"></td>
      <td class="num">${c.rank}</td>
      <td class="who"><a href="#/customer/${encodeURIComponent(c.customer)}"><b>${esc(c.name)}</b></a><div class="muted small">${esc(c.customer)} · ${esc(c.segment || "")}</div></td>
      <td>${band(h && h.band)}</td>
      <td class="num score" data-provisional="${h && h.provisional ? "true" : "false"}">${h ? num(h.score) : "–"}${provisionalScore(h)}</td>
      <td>${sparkline(c.health_history)}</td>
      <td class="num ${trend > 0 ? "up" : trend < 0 ? "down" : ""}">${signed(trend)}</td>
      <td>${h ? esc(h.stage) : "–"}</td>
      <td class="num">${h ? num(h.days_to_renewal) : "–"}</td>
      <td class="num">${h && h.time_to_value_days != null ? num(h.time_to_value_days, 1) : "–"}</td>
      <td class="num"><b>${h ? money(h.arr_at_risk) : "–"}</b><div class="muted small">of ${money(c.arr)}</div></td>
      <td class="num">${c.alerts.length}</td></tr>` +
      (c.alerts.length ? `<tr class="alerts-row" data-customer="${esc(c.customer)}"><td class="bar ${esc(b)}"></td><td></td><td colspan="10">${c.alerts.map((a) => alertHtml(a, c.timezone)).join("")}</td></tr>` : "");
  }).join("");
  return `<h1>Customers at risk</h1>
    <p class="muted">Ranked: revenue at stake first, then red before yellow before green, then the lowest health score.${list.as_of ? " Data up to " + esc(date(list.as_of - 1)) + "." : ""}</p>
    ${tiles(portfolio, list)}
    ${portfolioChart(portfolio)}
    <h2>Ranked list</h2>
    <div class="list"><table id="at-risk">
      <thead><tr><th class="bar"></th><th class="num">#</th><th>customer</th><th>band</th><th class="num">health</th><th>30 days</th><th class="num">7d</th><th>stage</th><th class="num">renewal in (days)</th><th class="num">TTV days</th><th class="num">ARR at risk</th><th class="num">alerts</th></tr></thead>
      <tbody>${rows || '<tr><td colspan="12" class="muted">No customers yet.</td></tr>'}</tbody>
    </table></div>
    ${retentionTable(retention)}
    ${impactTable(impact)}
      ${validationTable(validation)}`;
}

function journey(milestones) {
  if (!milestones.length) return '<p class="muted">No milestones defined.</p>';
  return `<div class="journey" id="journey">${milestones.map((m) => `
    <div class="step ${esc(m.status)}" data-milestone="${esc(m.milestone)}">
      <div class="node" title="${esc(m.status)}"></div>
      <div class="name">${m.position}. ${esc(m.milestone)}${m.value_milestone ? ' <span class="chip">value</span>' : ""}</div>
      <div class="dates">${m.status === "reached" ? "reached " + esc(dayOf(m.reached_at)) : esc(m.status)} · due ${esc(date(m.due_at))}</div>
    </div>`).join("")}</div>`;
}

// The CS team's touchpoints as a timeline against operating hours, the
// coverage cadences of the segment and where each stands, and the list.
const TOUCHPOINT_COLORS = {
  kickoff: COLORS.grey, training: COLORS.orange, onsite_visit: COLORS.teal, health_check_call: COLORS.blue,
  business_review: COLORS.violet, webinar: COLORS.green, escalation: COLORS.red,
};

// The restated windows of KPI records, as [[window_start, revision]].
function restatedWindows(records) {
  return records.filter((k) => k.revision > 0).map((k) => [k.window_start, k.revision]);
}

// How many of the shown windows were restated, for the customer page.
function restatedSummary(window, kpis, devices) {
  const windows = kpis.filter((k) => k.revision > 0);
  const deviceDays = devices.reduce((n, d) => n + (d.restated_days || 0), 0);
  const held = devices.reduce((n, d) => n + (d.daily_records || 0), 0);
  if (!kpis.length && !held) return "";
  const latest = Math.max(0, ...windows.map((k) => k.revision));
  const text = `${windows.length} of ${kpis.length} ${window} windows shown restated by late telemetry` +
    (windows.length ? ` (latest revision ${latest}; marked ▼ on the charts)` : "") +
    ` · device days: ${deviceDays} of ${held} restated`;
  return `<p id="restated-windows" class="${windows.length || deviceDays ? "restated-note" : "muted small"}" data-restated="${windows.length}" data-windows="${kpis.length}" data-device-days-restated="${deviceDays}"` +
    ` title="telemetry arrived after these windows closed, within the correction horizon, and they were computed again">${esc(text)}</p>`;
}

function touchpointsSection(tp, kpis) {
  // A touchpoint's date (kept as UTC midnight) is the customer's local date:
  // marked on that day, at its start and with its hours, in any zone.
  const days = new Map(kpis.map((k) => [date(k.window_start), k]));
  const marks = tp.touchpoints.map((t) => {
    const day = days.get(date(t.at, "UTC"));
    return [day ? day.window_start : t.at, day ? day.operating_hours : 0, TOUCHPOINT_COLORS[t.kind] || COLORS.grey];
  });
  const timeline = lineChart([
    { name: "operating hours", color: COLORS.blue, points: kpis.map((k) => [k.window_start, k.operating_hours]), marks },
  ], { title: "Touchpoints against operating hours per day", id: "touchpoints-timeline", yMin: 0, restated: restatedWindows(kpis) });
  const kinds = [...new Set(tp.touchpoints.map((t) => t.kind))];
  const legend = kinds.map((k) => `<span class="chip" style="border:2px solid ${TOUCHPOINT_COLORS[k] || COLORS.grey}">${esc(k)}</span>`).join(" ");
  const cadences = tp.coverage.map((c) => `<tr data-cadence="${esc(c.kind)}" data-status="${esc(c.status)}">
    <td>${esc(c.kind)}${c.decision_maker ? " <span class=\"muted small\">with a decision-maker</span>" : ""}</td>
    <td class="num">${c.every_days}</td><td class="num">${c.first_within_days}</td>
    <td>${esc(date(c.last_at, "UTC"))}</td><td>${esc(date(c.due_at, "UTC"))}</td>
    <td class="${c.status === "overdue" ? "down" : c.status === "ok" ? "up" : "muted"}"><b>${esc(c.status)}</b></td></tr>`).join("");
  const rows = tp.touchpoints.slice().reverse().map((t) => `<tr data-touchpoint="${esc(t.kind)}" data-at="${t.at}">
    <td class="nowrap">${esc(date(t.at, "UTC"))}</td><td><span class="chip" style="border:2px solid ${TOUCHPOINT_COLORS[t.kind] || COLORS.grey}">${esc(t.kind)}</span></td>
    <td>${esc(t.csm)}</td><td>${esc(t.attendees)}</td><td>${t.decision_maker_present ? "yes" : "no"}</td><td>${esc(t.notes)}</td></tr>`).join("");
  const gaps = tp.coverage_gaps.filter((a) => a.status === "open");
  const kindOptions = Object.keys(TOUCHPOINT_COLORS).map((k) => `<option value="${k}">${k}</option>`).join("");
  const form = me && me.role === "viewer" ? "" : `<form id="touchpoint-form" class="touchpoint-form" data-customer="${esc(tp.customer)}">
      <select name="kind">${kindOptions}</select>
      <input type="date" name="date" required value="${esc(date(tp.as_of ? tp.as_of - DAY_MS : Date.now()))}">
      <input name="attendees" placeholder="attendees (;-separated)">
      <label><input type="checkbox" name="decision_maker_present"> decision-maker present</label>
      <input name="notes" placeholder="notes">
      <button type="submit">Record touchpoint</button>
      <span id="touchpoint-message" class="muted small"></span></form>`;
  return `<h2>Touchpoints and coverage</h2>
    <div id="coverage-gaps">${gaps.map((a) => alertHtml(a)).join("")}</div>
    <div class="grid2">${timeline}<div class="card"><h3>Coverage cadences (${esc(tp.coverage.length ? "segment model" : "none")})</h3>
      <table id="coverage"><thead><tr><th>touchpoint</th><th class="num">every (days)</th><th class="num">first within</th><th>last</th><th>due</th><th>status</th></tr></thead>
      <tbody>${cadences || '<tr><td colspan="6" class="muted">No cadence for this segment.</td></tr>'}</tbody></table>
      <div class="legend">${legend}</div></div></div>
    ${form}
    <div class="list"><table id="touchpoints"><thead><tr><th>day</th><th>kind</th><th>CSM</th><th>attendees</th><th>decision-maker</th><th>notes</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="6" class="muted">No touchpoints recorded.</td></tr>'}</tbody></table></div>`;
}

// The latest health forecast: the score in 30 days with its 80% band, the
// days until red and the probability of red within forecast_days.
// The health record's components, as its `moved_*` fields name them.
const COMPONENTS = [["depth", "depth"], ["breadth", "breadth"], ["utilisation", "utilisation"], ["outcome", "outcomes"], ["reliability", "reliability"], ["trend", "trend"], ["maturity", "maturity"]];

// Why the score moved over `span` ("1d" or "7d"): the score before, the
// score now, and the points each component gained or lost, largest first
// (they sum to the change).
function movedText(h, span) {
  const parts = COMPONENTS.map(([key, label]) => [label, Number(h[`moved_${span}_${key}`] || 0)]);
  const before = h.score - parts.reduce((sum, [, p]) => sum + p, 0);
  const shown = parts.filter(([, p]) => Math.abs(p) >= 0.05).sort((a, b) => Math.abs(b[1]) - Math.abs(a[1]));
  return `${num(before, 1)} → ${num(h.score, 1)}: ${shown.length ? shown.map(([label, p]) => `${label} ${signed(p, 1)}`).join(", ") : "no component moved"}`;
}

function movedFacts(h) {
  if (!h) return "";
  if (h.days_since_activation == null) {
    return `<div id="health-moved" class="wide">why it moved<b><span id="moved-1d">no telemetry yet: none of its machines has reported</span></b></div>`;
  }
  const day = h.days_since_activation >= 1 ? movedText(h, "1d") : "first day";
  const week = h.days_since_activation >= 7 ? movedText(h, "7d") : "not a week yet";
  return `<div id="health-moved" class="wide">why it moved<b><span id="moved-1d">since yesterday ${esc(day)}</span><br><span id="moved-7d" class="small">over 7 days ${esc(week)}</span></b></div>`;
}

function forecastFacts(f) {
  if (!f) return `<div id="forecast">forecast<b>not yet</b></div>`;
  const red = f.days_to_red == null ? "not within 30 d" : `in ${num(f.days_to_red)} d`;
  return `<div id="forecast" title="${esc(`80% band; ${f.method}, fitted to ${f.fitted_days} days`)}">forecast in 30 d<b>${num(f.expected_30)} <span class="small">(${num(f.low_30)}–${num(f.high_30)})</span></b></div>
      <div id="forecast-red">red<b>${esc(red)} <span class="small">p ${num(f.probability_red * 100)}% in ${f.forecast_days} d</span></b></div>`;
}

async function customerPage(id) {
  let c, tp;
  try {
    [c, tp] = await Promise.all([
      getJson(`/api/customers/${encodeURIComponent(id)}?days=120`),
      getJson(`/api/customers/${encodeURIComponent(id)}/touchpoints`),
    ]);
  } catch (e) {
    if (e.status === 404) return `<h1>Unknown customer</h1><p class="muted">No customer <code>${esc(id)}</code>. <a href="#/">Back to the list</a></p>`;
    throw e;
  }
  ZONE = c.timezone || "UTC";
  const h = c.health;
  const kpis = c.kpis;
  const at = (k) => k.window_start;
  const purchased = c.devices_purchased || (kpis.length ? kpis[kpis.length - 1].devices_purchased : null);
  const open = c.alerts.filter((a) => a.status === "open");
  const retracted = c.alerts.filter((a) => a.status === "retracted");
  const resolved = c.alerts.filter((a) => a.status === "resolved");
  const restated = restatedWindows(kpis);
  const healthChart = lineChart([
    { name: "health score", color: COLORS.blue, points: c.health_history.map((x) => [x.window_start, x.score]) },
  ], { title: "Health score", id: "health", yMin: 0, yMax: 100, format: (v) => num(v),
    bands: [{ from: 0, to: 50, color: COLORS.red }, { from: 50, to: 75, color: COLORS.yellow }, { from: 75, to: 100, color: COLORS.green }] });
  const usageChart = lineChart([
    { name: "utilisation", color: COLORS.blue, points: kpis.map((k) => [at(k), k.utilisation * 100]) },
    { name: "advanced features", color: COLORS.violet, points: kpis.map((k) => [at(k), k.advanced_feature_share * 100]) },
    { name: "utilisation target (health 100)", color: COLORS.grey, dashed: true, points: kpis.length ? [[at(kpis[0]), 20], [at(kpis[kpis.length - 1]), 20]] : [] },
  ], { title: "Adoption depth: utilisation and advanced features (%)", id: "usage", yMin: 0, format: (v) => num(v) + "%", restated });
  const breadthChart = lineChart([
    { name: "devices purchased", color: COLORS.grey, dashed: true, points: kpis.map((k) => [at(k), k.devices_purchased]) },
    { name: "reporting devices", color: COLORS.teal, points: kpis.map((k) => [at(k), k.reporting_devices]) },
    { name: "active devices", color: COLORS.blue, points: kpis.map((k) => [at(k), k.active_devices]) },
    { name: "operators", color: COLORS.orange, points: kpis.map((k) => [at(k), k.distinct_operators]) },
  ], { title: "Adoption breadth: devices and operators per day", id: "breadth", yMin: 0, restated });
  const hoursChart = lineChart([
    { name: "operating hours", color: COLORS.blue, points: kpis.map((k) => [at(k), k.operating_hours]) },
    { name: "idle hours", color: COLORS.grey, points: kpis.map((k) => [at(k), k.idle_hours]) },
  ], { title: "Operating and idle hours per day", id: "hours", yMin: 0, restated });
  const faultsChart = lineChart([
    { name: "faults", color: COLORS.red, points: kpis.map((k) => [at(k), k.fault_count]) },
  ], { title: "Reliability: faults per day", id: "faults", yMin: 0, restated });
  const outcomeCharts = c.outcomes.map((o, i) => {
    const marks = o.history.filter((r) => r.value != null).map((r) => [r.window_start, r.value, r.met ? COLORS.green : COLORS.red]);
    const attainment = o.evaluated_windows ? `${o.met_windows}/${o.evaluated_windows} windows met` : "not evaluated yet";
    return lineChart([
      { name: o.outcome, color: SERIES[i % SERIES.length], points: o.history.map((r) => [r.window_start, r.value]), marks },
      { name: `target (${o.direction === "at_most" ? "at most" : "at least"} ${num(o.target, 2)})`, color: COLORS.grey, dashed: true, points: o.history.map((r) => [r.window_start, r.target]) },
    ], { title: `Outcome: ${o.outcome} (${o.window}) · ${attainment}`, id: "outcome-" + o.outcome });
  }).join("");
  const devices = c.devices.slice().sort((a, b) => (b.faults_7d - a.faults_7d) || (a.last_seen - b.last_seen));
  const newest = Math.max(0, ...devices.map((d) => d.last_seen));
  const deviceRows = devices.map((d) => {
    const stale = newest - d.last_seen > 2 * DAY_MS;
    const week = d.restated_days > 0
      ? ` <span class="restated" data-restated-days="${d.restated_days}" title="${esc(`${d.restated_days} of these ${d.daily_records} days restated: telemetry arrived after the day closed`)}">${d.restated_days} restated</span>`
      : "";
    return `<tr data-device="${esc(d.device)}" data-revision="${esc(d.revision == null ? "" : d.revision)}"><td>${esc(d.device)}</td><td>${esc(d.site)}</td>
      <td class="${stale ? "stale" : ""}">${esc(dateTime(d.last_seen))}${stale ? " (dark)" : ""}</td>
      <td><span class="state ${esc(d.last_state)}">${esc(d.last_state)}</span></td>
      <td class="num">${num(d.operating_hours, 1)}${restatedBadge(d.revision)}</td><td class="num">${pct(d.utilisation)}</td>
      <td class="num">${d.fault_count == null ? "–" : d.fault_count}</td><td class="num">${d.faults_7d}${week}</td></tr>`;
  }).join("");
  return `<p><a href="#/">← all customers</a></p>
    <h1>${esc(c.name)} ${band(h && h.band)}</h1>
    <div class="muted">${esc(c.customer)} · ${esc(c.segment || "")} · <span id="customer-zone" title="the customer's days and dates">${esc(ZONE)}</span></div>
    <div class="kv" id="customer-facts">
      <div id="health-score" data-provisional="${h && h.provisional ? "true" : "false"}">health<b>${h ? num(h.score) : "–"} <span class="small ${h && h.score_trend < 0 ? "down" : "up"}">${h ? signed(h.score_trend) : ""}</span>${provisionalScore(h)}</b></div>
      <div>stage<b>${h ? esc(h.stage) : "–"}</b></div>
      <div>ARR<b>${money(c.arr)}</b></div>
      <div>ARR at risk<b>${h ? money(h.arr_at_risk) : "–"}</b></div>
      <div>time to value<b>${c.time_to_value_days != null ? num(c.time_to_value_days, 1) + " days" : "not yet"}</b></div>
      <div>milestones<b>${h ? h.milestones_reached + " / " + h.milestones_total : "–"}</b></div>
      <div>renewal<b>${esc(date(c.renewal, "UTC"))}${h ? " (" + num(h.days_to_renewal) + " d)" : ""}</b></div>
      <div>devices purchased<b>${purchased == null ? "–" : purchased}</b></div>
      <div>usage growth<b>${h ? pct(h.usage_growth, 1) : "–"}</b></div>
      ${forecastFacts(c.forecast)}
      ${movedFacts(h)}
    </div>
    <h2>Open alerts</h2>
    <div id="open-alerts">${open.length ? open.map((a) => alertHtml(a)).join("") : '<p class="muted">None.</p>'}</div>
    ${retracted.length ? `<h2>Retracted alerts (${retracted.length})</h2><p class="muted small">Raised, then withdrawn: ${esc(RETRACTED_TEXT.replace("retracted: ", ""))}. Not counted as open or at risk.</p><div id="retracted-alerts">${retracted.map((a) => alertHtml(a)).join("")}</div>` : ""}
    <h2>Journey</h2>${journey(c.milestones)}
    <h2>Health and adoption</h2>
    ${restatedSummary(c.window, kpis, c.devices)}
    <div class="grid2">${healthChart}${usageChart}${breadthChart}${hoursChart}${faultsChart}</div>
    <h2>Outcomes against targets</h2>
    <div class="grid2">${outcomeCharts || '<p class="muted">No outcomes defined.</p>'}</div>
    ${touchpointsSection(tp, kpis)}
    <h2>Devices (${devices.length})</h2>
    <div class="list"><table id="devices"><thead><tr><th>device</th><th>site</th><th>last seen (UTC)</th><th>state</th><th class="num">hours (day)</th><th class="num">utilisation</th><th class="num">faults (day)</th><th class="num">faults (7 days)</th></tr></thead>
    <tbody>${deviceRows || '<tr><td colspan="8" class="muted">No device data yet.</td></tr>'}</tbody></table></div>
    ${resolved.length ? '<h2>Resolved alerts</h2><div id="resolved-alerts">' + resolved.map((a) => alertHtml(a)).join("") + "</div>" : ""}`;
}

const RULES = ["usage_drop", "devices_dark", "champion_lost", "outcome_missed", "onboarding_stalled", "fault_spike", "health_red", "forecast_red", "renewal_at_risk"];

async function alertsPage(query) {
  const params = new URLSearchParams(query);
  const status = params.get("status") || "open";
  const api = new URLSearchParams({ status });
  ["segment", "rule"].forEach((k) => { if (params.get(k)) api.set(k, params.get(k)); });
  const list = await getJson("/api/alerts?" + api.toString());
  // Each episode is dated in its customer's time zone.
  const zones = {};
  try {
    for (const c of (await getJson("/api/customers")).customers) zones[c.customer] = c.timezone;
  } catch (e) {
    if (e.status === 401) throw e;
  }
  // Retracted episodes are not open: say how many there are, so none is
  // lost from sight.
  let retractedNote = "";
  if (status === "open") {
    const other = new URLSearchParams(api);
    other.set("status", "retracted");
    const retracted = (await getJson("/api/alerts?" + other.toString())).alerts.length;
    if (retracted) {
      retractedNote = `<p id="retracted-note" class="muted" data-retracted="${retracted}">${retracted} episode${retracted === 1 ? "" : "s"} retracted (telemetry that arrived late showed ${retracted === 1 ? "it" : "they"} did not happen), not counted as open: <a href="#/alerts?status=retracted">show</a></p>`;
    }
  }
  const select = (name, values, current) => `<select data-filter="${name}"><option value="">${name}: all</option>${values.map((v) =>
    `<option value="${esc(v)}"${v === current ? " selected" : ""}>${esc(v)}</option>`).join("")}</select>`;
  const rows = list.alerts.map((a) => {
    const retracted = a.status === "retracted";
    return `<tr data-customer="${esc(a.customer)}" data-status="${esc(a.status)}" data-provisional="${a.provisional ? "true" : "false"}"${retracted ? ` class="retracted" title="${esc(retractedText(a))}"` : ""}>
    <td><a href="#/customer/${encodeURIComponent(a.customer)}">${esc(a.customer_name)}</a><div class="muted small">${esc(a.segment)}</div></td>
    <td class="rule">${esc(a.rule)}</td><td>${retracted ? '<span class="retracted-label">retracted</span>' : esc(a.status) + provisionalLabel(a)}</td><td class="nowrap">${esc(dayOf(a.opened_at, zones[a.customer]))}</td><td class="nowrap">${esc(dayOf(a.resolved_at, zones[a.customer]))}</td>
    <td>${esc(a.stage)}</td><td class="num">${retracted ? '<span class="muted" title="a retracted episode puts nothing at risk">–</span>' : money(a.arr_at_risk)}</td>
    <td class="evidence">${esc(a.evidence)}<div class="next">${retracted ? esc(retractedText(a)) : esc(a.next_action)}</div></td></tr>`;
  }).join("");
  return `<h1>Alerts</h1>
    <div class="filters">${select("status", ["open", "resolved", "retracted", "all"], status).replace('<option value="">status: all</option>', "")}
      ${select("segment", ["high-touch", "low-touch", "tech-touch"], params.get("segment"))}
      ${select("rule", RULES, params.get("rule"))}</div>
    ${retractedNote}
    <div class="list"><table id="alerts"><thead><tr><th>customer</th><th>rule</th><th>status</th><th>opened</th><th>resolved</th><th>stage</th><th class="num">ARR at risk</th><th>evidence and next action</th></tr></thead>
    <tbody>${rows || '<tr><td colspan="8" class="muted">No alerts.</td></tr>'}</tbody></table></div>`;
}

// ---- routing and live updates ---------------------------------------------

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const customer = path.match(/^\/customer\/(.+)$/);
  if (customer) return { name: "customer", render: () => customerPage(decodeURIComponent(customer[1])) };
  if (path === "/alerts") return { name: "alerts", render: () => alertsPage(query || "") };
  return { name: "home", render: homePage };
}

async function render() {
  if (rendering) return;
  rendering = true;
  const r = route();
  document.querySelectorAll("[data-nav]").forEach((a) => a.classList.toggle("active", a.dataset.nav === r.name));
  const app = document.getElementById("app");
  try {
    ZONE = "UTC";
    const html = await r.render();
    const scroll = window.scrollY;
    app.innerHTML = html;
    window.scrollTo(0, scroll);
    app.querySelectorAll("select[data-filter]").forEach((s) => s.addEventListener("change", () => {
      const params = new URLSearchParams();
      app.querySelectorAll("select[data-filter]").forEach((x) => { if (x.value) params.set(x.dataset.filter, x.value); });
      location.hash = "#/alerts?" + params.toString();
    }));
    app.querySelectorAll("form#touchpoint-form").forEach((f) => f.addEventListener("submit", recordTouchpoint));
    document.body.dataset.rendered = r.name;
  } catch (e) {
    app.innerHTML = `<p class="stale">Cannot load: ${esc(e.message)}</p>`;
  } finally {
    rendering = false;
  }
}

// POSTs the customer page's form as JSON (with the session's CSRF token),
// then draws the page again with the new touchpoint.
async function recordTouchpoint(event) {
  event.preventDefault();
  const f = event.target;
  const message = f.querySelector("#touchpoint-message");
  const body = {
    kind: f.kind.value, date: f.date.value, attendees: f.attendees.value,
    decision_maker_present: f.decision_maker_present.checked, notes: f.notes.value,
  };
  const headers = { "Content-Type": "application/json" };
  if (me && me.csrf_token) headers["X-CSRF-Token"] = me.csrf_token;
  const response = await fetch(`/api/customers/${encodeURIComponent(f.dataset.customer)}/touchpoints`,
    { method: "POST", headers, body: JSON.stringify(body), credentials: "same-origin" });
  if (response.status === 201) {
    await render();
  } else {
    let error = response.status + " " + response.statusText;
    try { error = (await response.json()).error || error; } catch (e) { /* not JSON */ }
    message.textContent = error;
    message.className = "stale small";
  }
}

async function poll() {
  const box = document.getElementById("status");
  const text = document.getElementById("status-text");
  try {
    const s = await getJson("/api/status");
    box.className = "status " + (s.running ? "live" : "done");
    text.textContent = (s.running ? "live · " : "finished · ") +
      `${s.messages_received.toLocaleString("en-US")} messages · ${s.records.toLocaleString("en-US")} records` +
      (s.as_of ? ` · data to ${date(s.as_of - 1)}` : "");
    if (s.version !== lastVersion) {
      lastVersion = s.version;
      await render();
    }
  } catch (e) {
    box.className = "status down";
    text.textContent = "service unreachable";
  }
}

async function whoAmI() {
  try {
    me = await getJson("/api/me");
  } catch (e) {
    return;
  }
  const box = document.getElementById("user");
  if (!box || me.via === "anonymous") return;
  let html = `<span id="user-name">${esc(me.user)}</span> <span class="muted small">${esc(me.role)}</span>`;
  if (me.csrf_token) {
    html += `<form method="post" action="/logout" class="logout"><input type="hidden" name="csrf" value="${esc(me.csrf_token)}"><button type="submit" id="sign-out">Sign out</button></form>`;
  }
  box.innerHTML = html;
  if (me.role === "viewer") {
    document.querySelectorAll('[data-nav="alerts"]').forEach((a) => a.remove());
  }
}

window.addEventListener("hashchange", render);
whoAmI().then(() => {
  poll();
  setInterval(poll, POLL_MS);
});
