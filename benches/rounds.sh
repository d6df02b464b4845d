#!/bin/sh
# Configurations of the end-to-end bench side by side, in turn, round after
# round, with the means: on a shared 2-core host one run of each says
# little (the broker ceiling moves by a third between runs), the mean over
# alternating rounds does. Each configuration is one quoted string of
# `fleetpulse-bench` arguments; "" is the default.
#
#   benches/rounds.sh 6 "--correction-horizon 0s" "" "--store-and-forward 256"
#
# Needs `cargo build --release -p fleetpulse-benches` and python3. Prints a
# markdown table (one row per run) and each configuration's mean rate and
# CPU per million samples, with its ratio to the first configuration's.
set -eu
if [ $# -lt 2 ]; then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
rounds=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bench="$root/target/release/fleetpulse-bench"
[ -x "$bench" ] || { echo "$bench: build it first (cargo build --release -p fleetpulse-benches)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# Ahead of the broker and the store where allowed (root).
if nice -n -15 true 2>/dev/null; then first="nice -n -15"; else first=""; fi
echo "| fleetpulse-bench ... | round | ceiling msg/s | fleetpulse msg/s | ratio | CPU s/M | lost (msgs / samples) | passes / records restated | pub→engine p50 / p99 ms |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
round=1
while [ "$round" -le "$rounds" ]; do
    i=0
    for args in "$@"; do
        i=$((i + 1))
        # shellcheck disable=SC2086 # the arguments split on purpose
        $first "$bench" $args --json 2>/dev/null > "$out/run.json"
        python3 - "$out/run.json" "$round" "$i" "$args" "$out/runs.tsv" <<'PY'
import json, sys
path, round_, index, args, tsv = sys.argv[1:]
runs = {r["contender"].split(" ")[0]: r for r in json.load(open(path))["runs"]}
c, f = runs["mosquitto_sub"], runs["fleetpulse"]
rate, ceiling = f["messages_per_sec"], c["messages_per_sec"]
print(f'| `{args or "(default)"}` | {round_} | {ceiling:,.0f} | {rate:,.0f} | {rate / ceiling:.2f}x '
      f'| {f["cpu_per_million_samples"]:.2f} | {f["lost_messages"]} / {f["lost_samples"]} '
      f'| {f["restatements"]} / {f["records_restated"]} '
      f'| {f["input_latency"]["p50_ms"]:.0f} / {f["input_latency"]["p99_ms"]:.0f} |', flush=True)
with open(tsv, "a") as out:
    out.write(f'{index}\t{args or "(default)"}\t{rate}\t{f["cpu_per_million_samples"]}\n')
PY
    done
    round=$((round + 1))
done
python3 - "$out/runs.tsv" <<'PY'
import sys
from collections import defaultdict
rates, cpu, names = defaultdict(list), defaultdict(list), {}
for line in open(sys.argv[1]):
    index, name, rate, per_million = line.rstrip("\n").split("\t")
    names[index] = name
    rates[index].append(float(rate))
    cpu[index].append(float(per_million))
mean = lambda xs: sum(xs) / len(xs)
first = mean(rates["1"])
print()
print("| configuration | rounds | mean msg/s | mean CPU s/M | rate / first configuration's |")
print("|---|---:|---:|---:|---:|")
for index in sorted(names, key=int):
    print(f'| `{names[index]}` | {len(rates[index])} | {mean(rates[index]):,.0f} '
          f'| {mean(cpu[index]):.2f} | {mean(rates[index]) / first:.3f} |')
PY
