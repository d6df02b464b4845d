#!/usr/bin/env python3
"""How precise can any rule on the daily health score be, and how early?

Reads the runs `fleetpulse backtest --runs FILE` writes and scores families
of alarm rules on the score alone, each tuned on the very runs it is scored
on (in-sample: an upper bound on what such a rule does on fleets it has not
seen). The scoring is the backtest's (`ingest/src/backtest.rs`): an episode
opens on a day the rule holds and no episode opened in the `forecast_days`
before; it came true when health_red opens within `forecast_days` after it;
the lead is counted for customers that turned red after settling, from
their first episode that came true.

    fleetpulse backtest --seeds 40 --runs runs.json
    python3 benches/forecast/front.py runs.json

Standard library only.
"""

import json
import statistics
import sys

RED_LINE = 50.5
# Fewer episodes than this say nothing about a rule's precision.
MIN_EPISODES = 10


def load(path):
    customers = []
    for run in json.load(open(path)):
        scores = {round(day): score for day, score in run["scores"]}
        customers.append((run, scores))
    return customers


def evaluate(customers, rule):
    episodes = came_true = 0
    leads, caught, healthy_alarmed = [], set(), 0
    for index, (run, scores) in enumerate(customers):
        red = [round(d) for d in run["red_opened"]]
        horizon = run["forecast_days"]
        settled = run["settled_day"] if run["settled_day"] is not None else 0
        last = None
        for day in sorted(scores):
            if day < settled or not rule(scores, day):
                continue
            if last is None or day - last > horizon:
                episodes += 1
                after = [r for r in red if day < r <= day + horizon]
                if after:
                    came_true += 1
                    if index not in caught and red[0] > settled:
                        caught.add(index)
                        leads.append(after[0] - day)
            last = day
        if run["profile"] == "healthy-growing" and last is not None:
            healthy_alarmed += 1
    turned_red = sum(
        1 for run, _ in customers
        if run["red_opened"] and run["red_opened"][0] > (run["settled_day"] or 0)
    )
    healthy = sum(1 for run, _ in customers if run["profile"] == "healthy-growing")
    return {
        "episodes": episodes,
        "precision": came_true / episodes if episodes else 0.0,
        "median_lead": statistics.median(leads) if leads else 0.0,
        "caught": len(caught),
        "turned_red": turned_red,
        "healthy_fp": healthy_alarmed / healthy if healthy else 0.0,
    }


def fall(drop, level, window):
    """Not red today, at or under `level`, `drop` points under the highest
    of the `window` days before."""
    def rule(scores, day):
        before = [scores[d] for d in range(day - window, day) if d in scores]
        today = scores[day]
        return bool(before) and RED_LINE < today <= level and today - max(before) <= -drop
    return rule


def peak_known(drop, peak):
    """A fall under way from a peak (the highest of the last 14 days) under
    `peak`: a rule that knows how far the simulator's falls go."""
    def rule(scores, day):
        before = [scores[d] for d in range(day - 5, day) if d in scores]
        fortnight = [scores[d] for d in range(day - 14, day) if d in scores]
        today = scores[day]
        return (bool(before) and today > RED_LINE and today - max(before) <= -drop
                and max(fortnight) < peak)
    return rule


def main():
    customers = load(sys.argv[1])
    families = {
        "a fall to a level (drop 0-20 points in 3-10 days, level 51-75)": [
            fall(d, l, w)
            for d in (0, 2, 4, 6, 8, 10, 12, 15, 20)
            for l in (51, 52, 53, 54, 55, 56, 58, 60, 62, 64, 66, 68, 70, 72, 75)
            for w in (3, 5, 7, 10)
        ],
        "a fall from a peak under 78-84 (drop 4-12 points in 5 days)": [
            peak_known(d, p) for d in (4, 6, 8, 10, 12) for p in (78, 80, 82, 84)
        ],
    }
    print(f"{len(customers)} customers; for each median lead, the most precise rule "
          f"of each family with at least {MIN_EPISODES} episodes")
    for name, rules in families.items():
        results = [evaluate(customers, r) for r in rules]
        print(f"\n{name}: {len(rules)} rules")
        for lead in range(1, 11):
            fit = [r for r in results
                   if r["median_lead"] >= lead and r["episodes"] >= MIN_EPISODES]
            best = max(fit, key=lambda r: r["precision"]) if fit else None
            print(f"  lead >= {lead:>2} d: " + (show(best) if best else "none"))


def show(r):
    return (f"precision {r['precision']:.2f} ({r['episodes']} episodes), median lead "
            f"{r['median_lead']:.1f} d, red customers caught {r['caught']}/{r['turned_red']}, "
            f"healthy-growing alarmed {r['healthy_fp']:.3f}")


if __name__ == "__main__":
    main()
