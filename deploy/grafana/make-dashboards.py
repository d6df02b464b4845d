#!/usr/bin/env python3
"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (JSON).

    python3 deploy/grafana/make-dashboards.py

The dashboards query the InfluxDB 2 measurements of docs/SCHEMA.md with Flux,
through the data source provisioned in provisioning/datasources/ (uid
`fleetpulse-influxdb`). `ingest/tests/grafana.rs` checks that every query
names only measurements, tags and fields that docs/SCHEMA.md defines: edit
here (or in Grafana, then export) and run the test.
"""

import json
import os

DS = {"type": "influxdb", "uid": "fleetpulse-influxdb"}
HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")

RANGE = '|> range(start: v.timeRangeStart, stop: v.timeRangeStop)'
BANDS = {
    "mode": "absolute",
    "steps": [
        {"color": "red", "value": None},
        {"color": "yellow", "value": 50.5},
        {"color": "green", "value": 75.5},
    ],
}


def flux(measurement, fields, where="", tail=""):
    """A query of `fields` of one measurement, filtered by `where` (Flux)."""
    if isinstance(fields, str):
        fields = [fields]
    if len(fields) == 1:
        field_filter = f'r._field == "{fields[0]}"'
    else:
        field_filter = "contains(value: r._field, set: [" + ", ".join(f'"{f}"' for f in fields) + "])"
    q = (
        'from(bucket: "${bucket}")\n'
        f"  {RANGE}\n"
        f'  |> filter(fn: (r) => r._measurement == "{measurement}")\n'
        f"  |> filter(fn: (r) => {field_filter})\n"
    )
    if where:
        q += f"  |> filter(fn: (r) => {where})\n"
    return q + tail


class Board:
    def __init__(self, uid, title, description):
        self.uid = uid
        self.title = title
        self.description = description
        self.panels = []
        self.y = 0
        self.x = 0
        self.row_h = 0
        self.variables = [
            {
                "name": "bucket",
                "type": "constant",
                "query": "fleetpulse",
                "hide": 2,
                "label": "bucket",
            }
        ]

    def var(self, name, label, query, multi=False, include_all=False, regex_all=False):
        v = {
            "name": name,
            "label": label,
            "type": "query",
            "datasource": DS,
            "query": query,
            "definition": query,
            "refresh": 2,
            "sort": 1,
            "multi": multi,
            "includeAll": include_all,
            "current": {},
            "options": [],
        }
        if include_all and regex_all:
            v["allValue"] = ".*"
        self.variables.append(v)

    def custom_var(self, name, label, values):
        self.variables.append(
            {
                "name": name,
                "label": label,
                "type": "custom",
                "query": ",".join(values),
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "current": {"text": "All", "value": "$__all"},
                "options": [],
            }
        )

    def place(self, w, h):
        if self.x + w > 24:
            self.x = 0
            self.y += self.row_h
            self.row_h = 0
        pos = {"x": self.x, "y": self.y, "w": w, "h": h}
        self.x += w
        self.row_h = max(self.row_h, h)
        return pos

    def panel(self, kind, title, queries, w=12, h=8, description="", unit=None,
              thresholds=None, options=None, overrides=None, transformations=None,
              min_=None, max_=None, custom=None):
        pid = len(self.panels) + 1
        defaults = {}
        if unit:
            defaults["unit"] = unit
        if thresholds:
            defaults["thresholds"] = thresholds
            defaults["color"] = {"mode": "thresholds"}
        if min_ is not None:
            defaults["min"] = min_
        if max_ is not None:
            defaults["max"] = max_
        if custom:
            defaults["custom"] = custom
        p = {
            "id": pid,
            "type": kind,
            "title": title,
            "description": description,
            "datasource": DS,
            "gridPos": self.place(w, h),
            "targets": [
                {"refId": chr(ord("A") + i), "datasource": DS, "query": q}
                for i, q in enumerate(queries)
            ],
            "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
            "options": options or {},
        }
        if transformations:
            p["transformations"] = transformations
        self.panels.append(p)

    def stat(self, title, query, **kw):
        opts = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "area",
            "textMode": "auto",
        }
        self.panel("stat", title, [query], options=opts, **kw)

    def timeseries(self, title, queries, **kw):
        opts = {"legend": {"displayMode": "list", "placement": "bottom"}, "tooltip": {"mode": "multi"}}
        self.panel("timeseries", title, queries, options=opts, **kw)

    def table(self, title, query, **kw):
        self.panel("table", title, [query], options={"showHeader": True}, **kw)

    def write(self):
        board = {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["fleetpulse"],
            "timezone": "utc",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "refresh": "1m",
            "time": {"from": "now-365d", "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [
                {"type": "dashboards", "tags": ["fleetpulse"], "asDropdown": True, "title": "fleetpulse"}
            ],
            "panels": self.panels,
        }
        path = os.path.join(OUT, self.uid.replace("fleetpulse-", "") + ".json")
        with open(path, "w") as f:
            json.dump(board, f, indent=2)
            f.write("\n")
        print("wrote", os.path.relpath(path))


CUSTOMER_VAR = (
    'import "influxdata/influxdb/schema"\n'
    'schema.tagValues(bucket: "${bucket}", tag: "customer", '
    'predicate: (r) => r._measurement == "health", start: -5y)'
)
ONE_CUSTOMER = 'r.customer == "${customer}"'
DAILY = 'r.window == "1d"'
LAST_BY = "  |> last()\n"


def fleet_overview():
    b = Board("fleetpulse-fleet-overview", "fleetpulse: fleet overview",
              "All customers: revenue at risk, health bands, adoption and faults (docs/SCHEMA.md measurements portfolio, health, customer_kpi).")
    b.stat("Customers", flux("portfolio", "customers"), w=4, h=4)
    b.stat("ARR", flux("portfolio", "arr_total"), w=5, h=4, unit="short")
    b.stat("ARR at risk", flux("portfolio", "arr_at_risk"), w=5, h=4, unit="short",
           thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]})
    b.stat("Red", flux("portfolio", "red"), w=3, h=4,
           thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]})
    b.stat("Yellow", flux("portfolio", "yellow"), w=3, h=4,
           thresholds={"mode": "absolute", "steps": [{"color": "yellow", "value": None}]})
    b.stat("Green", flux("portfolio", "green"), w=4, h=4,
           thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}]})
    b.timeseries("ARR at risk over time", [flux("portfolio", ["arr_total", "arr_at_risk"])], unit="short")
    b.timeseries("Customers per band", [flux("portfolio", ["red", "yellow", "green"])],
                 custom={"stacking": {"mode": "normal"}, "fillOpacity": 40},
                 overrides=[
                     {"matcher": {"id": "byName", "options": n}, "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": n}}]}
                     for n in ["red", "yellow", "green"]
                 ])
    b.timeseries("Health score by customer", [flux("health", "score",
                 tail='  |> keep(columns: ["_time", "_value", "customer"])\n')],
                 unit="none", min_=0, max_=100, thresholds=BANDS,
                 custom={"thresholdsStyle": {"mode": "area"}})
    b.timeseries("Managed vs unmanaged: usage growth", [flux("portfolio", ["managed_usage_growth", "unmanaged_usage_growth"])],
                 unit="percentunit")
    b.timeseries("Utilisation per customer (daily)", [flux("customer_kpi", "utilisation", DAILY,
                 tail='  |> keep(columns: ["_time", "_value", "customer"])\n')],
                 unit="percentunit", min_=0)
    b.timeseries("Active devices per customer (daily)", [flux("customer_kpi", "active_devices", DAILY,
                 tail='  |> keep(columns: ["_time", "_value", "customer"])\n')])
    b.timeseries("Faults per customer (daily)", [flux("customer_kpi", "fault_count", DAILY,
                 tail='  |> keep(columns: ["_time", "_value", "customer"])\n')])
    b.table("Latest health per customer", flux(
        "health", ["score", "band", "stage", "arr_at_risk", "open_alerts", "days_to_renewal"],
        tail=LAST_BY
        + '  |> pivot(rowKey: ["customer", "segment"], columnKey: ["_field"], valueColumn: "_value")\n'
        + '  |> group()\n'
        + '  |> keep(columns: ["customer", "segment", "score", "band", "stage", "arr_at_risk", "open_alerts", "days_to_renewal"])\n'
        + '  |> sort(columns: ["arr_at_risk", "score"], desc: true)\n'),
        thresholds=BANDS,
        overrides=[{"matcher": {"id": "byName", "options": "score"},
                    "properties": [{"id": "custom.cellOptions", "value": {"type": "color-background"}}]}])
    b.write()


def customer_health():
    b = Board("fleetpulse-customer-health", "fleetpulse: customer health",
              "One customer: health score and its components, its forecast, outcomes against targets, milestones, adoption (measurements health, forecast, outcome, milestone, customer_kpi).")
    b.var("customer", "customer", CUSTOMER_VAR)
    c = ONE_CUSTOMER
    b.stat("Health score", flux("health", "score", c), w=4, h=5, thresholds=BANDS, min_=0, max_=100)
    b.stat("Score change (7 days)", flux("health", "score_trend", c), w=4, h=5,
           thresholds={"mode": "absolute", "steps": [{"color": "red", "value": None}, {"color": "green", "value": 0}]})
    b.stat("ARR at risk", flux("health", "arr_at_risk", c), w=4, h=5, unit="short",
           thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]})
    b.stat("Time to value (days)", flux("health", "time_to_value_days", c), w=4, h=5, unit="d")
    b.stat("Days to renewal", flux("health", "days_to_renewal", c), w=4, h=5)
    b.stat("Stage", flux("health", "stage", c), w=4, h=5)
    b.timeseries("Health score", [flux("health", "score", c)], min_=0, max_=100, thresholds=BANDS,
                 custom={"thresholdsStyle": {"mode": "area"}})
    b.timeseries("Health components", [flux("health", ["depth", "breadth", "utilisation", "outcome_attainment", "reliability", "trend", "maturity"], c)],
                 min_=0, max_=100)
    b.timeseries("Health forecast: expected score 30 days on, 80% band", [flux("forecast", ["expected_30", "low_30", "high_30"], c)],
                 min_=0, max_=100, thresholds=BANDS, custom={"thresholdsStyle": {"mode": "area"}})
    b.timeseries("Health forecast: probability of red within forecast_days", [flux("forecast", "probability_red", c)],
                 unit="percentunit", min_=0, max_=1)
    b.timeseries("Outcomes: value", [flux("outcome", "value", c, tail='  |> keep(columns: ["_time", "_value", "outcome"])\n')])
    b.timeseries("Outcomes: target", [flux("outcome", "target", c, tail='  |> keep(columns: ["_time", "_value", "outcome"])\n')],
                 custom={"lineStyle": {"fill": "dash", "dash": [10, 10]}})
    b.table("Milestones (latest state)", flux(
        "milestone", ["position", "status", "due_at", "reached_at", "value_milestone"], c,
        tail=LAST_BY
        + '  |> pivot(rowKey: ["milestone"], columnKey: ["_field"], valueColumn: "_value")\n'
        + '  |> group()\n'
        + '  |> keep(columns: ["position", "milestone", "status", "due_at", "reached_at", "value_milestone"])\n'
        + '  |> sort(columns: ["position"])\n'),
        overrides=[{"matcher": {"id": "byRegexp", "options": "due_at|reached_at"},
                    "properties": [{"id": "unit", "value": "dateTimeAsIsoNoDateIfToday"}]}])
    b.timeseries("Milestones reached", [flux("health", ["milestones_reached", "milestones_total"], c)], min_=0)
    b.timeseries("Adoption depth: utilisation and advanced features (daily)",
                 [flux("customer_kpi", ["utilisation", "advanced_feature_share"], c + " and " + DAILY)],
                 unit="percentunit", min_=0)
    b.timeseries("Adoption breadth: devices and operators (daily)",
                 [flux("customer_kpi", ["devices_purchased", "reporting_devices", "active_devices", "distinct_operators"], c + " and " + DAILY)],
                 min_=0)
    b.timeseries("Operating hours and faults (daily)",
                 [flux("customer_kpi", ["operating_hours", "fault_count"], c + " and " + DAILY)], min_=0)
    b.timeseries("Usage growth", [flux("health", "usage_growth", c)], unit="percentunit")
    b.write()


def device_drilldown():
    b = Board("fleetpulse-device-drilldown", "fleetpulse: device drill-down",
              "One customer's machines, then one machine: last seen, state, hours, faults (measurement device_kpi).")
    b.var("customer", "customer", CUSTOMER_VAR)
    b.var("device", "device",
          'import "influxdata/influxdb/schema"\n'
          'schema.tagValues(bucket: "${bucket}", tag: "device", '
          'predicate: (r) => r._measurement == "device_kpi" and r.customer == "${customer}", start: -5y)')
    c = ONE_CUSTOMER
    b.table("Devices: last seen and faults (latest day)", flux(
        "device_kpi", ["last_seen", "last_state", "operating_hours", "fault_count"], c + " and " + DAILY,
        tail=LAST_BY
        + '  |> pivot(rowKey: ["device", "site"], columnKey: ["_field"], valueColumn: "_value")\n'
        + '  |> group()\n'
        + '  |> keep(columns: ["device", "site", "last_seen", "last_state", "operating_hours", "fault_count"])\n'
        + '  |> sort(columns: ["last_seen"])\n'),
        w=24, h=10,
        overrides=[{"matcher": {"id": "byName", "options": "last_seen"},
                    "properties": [{"id": "unit", "value": "dateTimeAsIso"}]}])
    b.panel("bargauge", "Faults per device (period)", [flux(
        "device_kpi", "fault_count", c + " and " + DAILY,
        tail='  |> group(columns: ["device"])\n  |> sum()\n  |> group()\n  |> sort(columns: ["_value"], desc: true)\n  |> limit(n: 15)\n')],
        options={"orientation": "horizontal", "displayMode": "gradient",
                 "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": True}})
    b.timeseries("Reporting devices (daily)", [flux("customer_kpi", ["reporting_devices", "active_devices", "devices_purchased"], c + " and " + DAILY)], min_=0)
    d = c + ' and r.device == "${device}"'
    b.timeseries("$device: operating and idle hours (hourly)", [flux("device_kpi", ["operating_hours", "idle_hours"], d + ' and r.window == "1h"')], min_=0)
    b.timeseries("$device: utilisation (daily)", [flux("device_kpi", "utilisation", d + " and " + DAILY)], unit="percentunit", min_=0)
    b.timeseries("$device: faults and cycles (daily)", [flux("device_kpi", ["fault_count", "cycles", "manual_interventions"], d + " and " + DAILY)], min_=0)
    b.timeseries("$device: fuel (daily)", [flux("device_kpi", "fuel_litres", d + " and " + DAILY)], unit="litre", min_=0)
    b.panel("state-timeline", "$device: machine state (hourly)", [flux("device_kpi", "last_state", d + ' and r.window == "1h"')],
            w=24, h=5, options={"showValue": "never"})
    b.write()


def alerts():
    b = Board("fleetpulse-alerts", "fleetpulse: alerts",
              "At-risk alert episodes with their evidence and next action (measurement alert).")
    b.var("customer", "customer", CUSTOMER_VAR, multi=True, include_all=True, regex_all=True)
    b.custom_var("rule", "rule", ["usage_drop", "devices_dark", "champion_lost", "outcome_missed",
                                  "onboarding_stalled", "fault_spike", "health_red", "forecast_red", "renewal_at_risk"])
    b.custom_var("segment", "segment", ["high-touch", "low-touch", "tech-touch"])
    where = 'r.customer =~ /^${customer:regex}$/ and r.rule =~ /^${rule:regex}$/ and r.segment =~ /^${segment:regex}$/'
    pivot = ('  |> pivot(rowKey: ["_time", "customer", "rule", "segment"], columnKey: ["_field"], valueColumn: "_value")\n'
             '  |> group()\n')
    episode_fields = ["customer_name", "episode", "status", "resolved_at", "evidence", "metric", "threshold",
                      "stage", "arr_at_risk", "next_action"]
    b.stat("Open alerts", flux("alert", "status", where,
           tail='  |> filter(fn: (r) => r._value == "open")\n  |> group()\n  |> count()\n'), w=6, h=5,
           thresholds={"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]})
    b.stat("ARR at risk (open alerts)", flux("alert", ["status", "arr_at_risk"], where,
           tail=pivot + '  |> filter(fn: (r) => r.status == "open")\n'
           + '  |> unique(column: "customer")\n  |> sum(column: "arr_at_risk")\n'), w=6, h=5, unit="short")
    b.timeseries("Episodes opened per week", [flux("alert", "episode", where,
                 tail='  |> group(columns: ["rule"])\n  |> aggregateWindow(every: 1w, fn: count, createEmpty: true)\n')],
                 w=12, h=5, custom={"drawStyle": "bars", "stacking": {"mode": "normal"}, "fillOpacity": 60})
    b.table("Open alerts: evidence and next action", flux(
        "alert", episode_fields, where,
        tail=pivot + '  |> filter(fn: (r) => r.status == "open")\n'
        + '  |> keep(columns: ["_time", "customer", "customer_name", "segment", "rule", "stage", "arr_at_risk", "evidence", "next_action"])\n'
        + '  |> sort(columns: ["arr_at_risk", "_time"], desc: true)\n'),
        w=24, h=10,
        overrides=[{"matcher": {"id": "byName", "options": "_time"},
                    "properties": [{"id": "displayName", "value": "opened"}, {"id": "unit", "value": "dateTimeAsIso"}]}])
    b.table("All episodes", flux(
        "alert", episode_fields, where,
        tail=pivot
        + '  |> keep(columns: ["_time", "customer", "rule", "episode", "status", "resolved_at", "metric", "threshold", "evidence"])\n'
        + '  |> sort(columns: ["_time"], desc: true)\n'),
        w=24, h=10,
        overrides=[{"matcher": {"id": "byName", "options": "_time"},
                    "properties": [{"id": "displayName", "value": "opened"}, {"id": "unit", "value": "dateTimeAsIso"}]},
                   {"matcher": {"id": "byName", "options": "resolved_at"},
                    "properties": [{"id": "unit", "value": "dateTimeAsIso"}]}])
    b.write()


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    fleet_overview()
    customer_health()
    device_drilldown()
    alerts()
