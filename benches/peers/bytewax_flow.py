"""The Bytewax peer of `fleetpulse bench`: the same decode + dedup +
per-customer and per-device windowed KPIs + write as a Bytewax dataflow (timely dataflow
underneath), with Bytewax's own event-time windows.

    mqtt (paho, QoS 1) -> decode -> key by device -> dedup + increments
      -> key by customer -> fold_window 1h | fold_window 1d -> line protocol
      -> (keyed by device)   fold_window 1h | fold_window 1d -> line protocol
      -> influxdb-client (VictoriaMetrics)

Lateness: Bytewax's keyed stateful operators emit a batch's items grouped by
key, so after `device_state` a customer's samples are out of event-time order
by up to one source batch (1000 messages, about 3.3 h of this capture's event
time). With fleetpulse's 2 h allowed lateness Bytewax drops about 40% of the
samples as late, so its EventClock waits 24 h (the publish run lasts seconds,
so the watermark is the newest event time minus 24 h). The output is the same
windows; Bytewax just holds more of them open. Started by the harness; speaks
its JSON-lines protocol.
"""

import queue
import threading
from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.run import cli_main

import peerlib

MEASUREMENT = "peer_bytewax_customer_kpi"
DEVICE_MEASUREMENT = "peer_bytewax_device_kpi"
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
BYTEWAX_LATENESS_HOURS = 24


class Totals:
    lock = threading.Lock()
    rejected = 0
    duplicates = 0
    samples = 0
    late = {}  # window step -> late samples
    records = 0
    written = 0
    last_write_ns = 0


class MqttPartition(StatefulSourcePartition):
    def __init__(self, messages, stopped):
        self.messages = messages
        self.stopped = stopped

    def next_batch(self):
        items = []
        try:
            items.append(self.messages.get(timeout=0.01))
            while len(items) < 1000:
                items.append(self.messages.get_nowait())
        except queue.Empty:
            pass
        if not items and self.stopped.is_set() and self.messages.empty():
            raise StopIteration()
        return items

    def snapshot(self):
        return None


class MqttSource(FixedPartitionedSource):
    """One partition: one paho client, its messages through a bounded queue
    (a full queue blocks paho's thread, so TCP pushes back on the broker)."""

    def __init__(self, args, stopped, on_ready):
        self.args = args
        self.stopped = stopped
        self.on_ready = on_ready

    def list_parts(self):
        return ["mqtt"]

    def build_part(self, step_id, for_part, resume_state):
        messages = queue.Queue(maxsize=10_000)

        def on_message(_client, _userdata, msg):
            messages.put((msg.topic, msg.payload))

        client = peerlib.mqtt_client(self.args.client_id, self.on_ready, on_message)
        client.connect(self.args.host, self.args.port, keepalive=peerlib.KEEPALIVE_S)
        client.loop_start()

        def disconnect_on_stop():
            self.stopped.wait()
            client.disconnect()
            client.loop_stop()

        threading.Thread(target=disconnect_on_stop, daemon=True).start()
        return MqttPartition(messages, self.stopped)


class VmPartition(StatelessSinkPartition):
    def __init__(self, url):
        self.writer = peerlib.Writer(url)

    def write_batch(self, items):
        with Totals.lock:
            Totals.records += len(items)
        self.writer.add(items)

    def close(self):
        self.writer.flush()
        with Totals.lock:
            Totals.written += self.writer.written
            Totals.last_write_ns = max(Totals.last_write_ns, self.writer.last_write_ns)


class VmSink(DynamicSink):
    def __init__(self, url):
        self.url = url

    def build(self, step_id, worker_index, worker_count):
        return VmPartition(self.url)


def build(args, progress, stopped, on_ready, purchased):
    flow = Dataflow("fleetpulse_peer")
    raw = op.input("mqtt", flow, MqttSource(args, stopped, on_ready))

    def decode(message):
        batch = peerlib.decode(*message)
        if batch is None:
            with Totals.lock:
                Totals.rejected += 1
            progress.count(0)
            return None
        progress.count(len(batch.samples))
        return batch

    batches = op.filter_map("decode", raw, decode)
    by_device = op.key_on("by_device", batches, lambda b: b.device_id)

    def device_state(state, batch):
        if state is None:
            state = peerlib.DeviceState()
        usage = state.usage(batch)
        with Totals.lock:
            if usage is None:
                Totals.duplicates += 1
            else:
                Totals.samples += len(usage)
        return state, usage or []

    usage = op.stateful_flat_map("device_state", by_device, device_state)
    by_customer = op.key_on("by_customer", op.key_rm("unkey", usage), lambda u: u[0])

    clock = EventClock(
        ts_getter=lambda u: datetime.fromtimestamp(u[2] / 1000, tz=timezone.utc),
        wait_for_system_duration=timedelta(hours=BYTEWAX_LATENESS_HOURS),
    )

    def folder(acc, u):
        if "at" not in acc:
            acc["at"] = u[2]
        return peerlib.add(acc, u)

    def count_late(step, _item):
        with Totals.lock:
            Totals.late[step] = Totals.late.get(step, 0) + 1

    outputs = []

    def windowed(prefix, keyed, new, fold, merge, to_line):
        """Per window length: fold `keyed` in tumbling windows, count the
        late, and turn each closed window into a line with
        `to_line(key, acc, name, length, start)`. Steps are named
        `{prefix}window_1h` and so on."""
        for name, length in peerlib.WINDOWS:
            windows = fold_window(
                f"{prefix}window_{name}",
                keyed,
                clock,
                TumblingWindower(length=timedelta(milliseconds=length), align_to=EPOCH),
                new,
                fold,
                merge,
            )

            op.inspect(f"{prefix}late_{name}", windows.late, count_late)

            def line(item, name=name, length=length):
                key, (_window_id, acc) = item
                start = acc["at"] - acc["at"] % length
                return to_line(key, acc, name, length, start)

            outputs.append(op.map(f"{prefix}line_{name}", windows.down, line))

    def customer_line(customer, acc, name, length, start):
        return peerlib.line(MEASUREMENT, customer, name, length, start, acc, purchased)

    windowed("", by_customer, peerlib.new_acc, folder, peerlib.merge, customer_line)

    def device_folder(acc, u):
        if "at" not in acc:
            acc["at"] = u[2]
            acc["customer"] = u[0]
        return peerlib.add_device(acc, u)

    def device_line(device, acc, name, length, start):
        return peerlib.device_line(
            DEVICE_MEASUREMENT, acc["customer"], device, name, length, start, acc
        )

    windowed(
        "device_", usage, peerlib.new_device_acc, device_folder, peerlib.merge_device, device_line
    )
    op.output("victoria_metrics", op.merge("all", *outputs), VmSink(args.store_url))
    return flow


def main():
    args = peerlib.parse_args()

    purchased = peerlib.devices_purchased(args.customers)
    progress = peerlib.Progress()
    stopped = threading.Event()
    ready = peerlib.Ready()
    peerlib.wait_for_stdin_eof(stopped.set)
    flow = build(args, progress, stopped, ready, purchased)
    cli_main(flow, workers_per_process=args.workers)
    progress.stop()
    counts = {
        "rejected": Totals.rejected,
        # A sample late in any of the 4 windows is lost to its KPIs.
        "samples": Totals.samples - max(Totals.late.values(), default=0),
        "duplicates": Totals.duplicates,
        "records": Totals.records,
    }
    peerlib.emit_done(progress, ready.cpu_seconds, counts, Totals.written, Totals.last_write_ns)


if __name__ == "__main__":
    main()
