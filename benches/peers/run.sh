#!/usr/bin/env bash
# The peers of `fleetpulse bench`, measured side by side with fleetpulse.
#
#   benches/peers/run.sh --install      # only create .venv and generate the protobuf module
#   benches/peers/run.sh [bench args]   # install if needed, then run the whole side-by-side
#                                       # bench: broker ceiling, fleetpulse, Python, Bytewax
#
# Installs paho-mqtt, protobuf, influxdb-client and Bytewax from PyPI into
# benches/peers/.venv (gitignored), with the pinned versions of
# requirements.txt, and generates gen/fleetpulse/v1/telemetry_pb2.py from
# proto/ with grpcio-tools (no system protoc). Needs python3 (3.9 to 3.12:
# Bytewax 0.21 wheels) with venv, and for the bench mosquitto,
# mosquitto-clients and victoria-metrics (./deploy/test.sh installs them).

set -euo pipefail

PEERS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$PEERS/../.." && pwd)"
VENV="$PEERS/.venv"
PYTHON="${PYTHON:-python3}"

install() {
    if [[ ! -x $VENV/bin/python ]]; then
        "$PYTHON" -m venv "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$PEERS/requirements.txt"
    mkdir -p "$PEERS/gen"
    "$VENV/bin/python" -m grpc_tools.protoc -I "$ROOT/proto/proto" \
        --python_out="$PEERS/gen" "$ROOT/proto/proto/fleetpulse/v1/telemetry.proto"
    "$VENV/bin/python" - <<'PY'
import bytewax, google.protobuf, influxdb_client, paho.mqtt
print("peers ready: bytewax", bytewax.__version__ if hasattr(bytewax, "__version__") else "",
      "protobuf", google.protobuf.__version__, "influxdb-client", influxdb_client.__version__,
      "paho-mqtt", paho.mqtt.__version__)
PY
}

if [[ ${1:-} == --install ]]; then
    install
    exit 0
fi
if [[ ! -x $VENV/bin/python || ! -f $PEERS/gen/fleetpulse/v1/telemetry_pb2.py ]]; then
    install
fi
cd "$ROOT"
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin" \
    cargo run --release -p fleetpulse-benches --bin fleetpulse-bench -- --peers --peers-dir "$PEERS" "$@"
