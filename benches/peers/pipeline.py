"""The plain Python peer of `fleetpulse bench`: paho-mqtt (QoS 1) + protobuf +
influxdb-client, the same decode + dedup + per-customer and per-device windowed KPIs + write
as fleetpulse, written the straightforward way in one process.

Windows close on the same event-time watermark as fleetpulse (newest event
time minus 2 h allowed lateness); at stop every open window is written.
Started by the harness; speaks its JSON-lines protocol (peerlib).
"""

import threading

import peerlib


def main():
    args = peerlib.parse_args()  # --workers is ignored: one thread, paho's loop

    purchased = peerlib.devices_purchased(args.customers)
    writer = peerlib.Writer(args.store_url)
    progress = peerlib.Progress()
    devices = {}
    # (window index, start, customer) -> accumulator
    open_windows = {}
    # (window index, start, customer, device) -> accumulator
    open_devices = {}
    state = {"max_event": 0, "watermark": 0, "rejected": 0, "duplicates": 0,
             "samples": 0, "records": 0}
    measurement = "peer_python_customer_kpi"
    device_measurement = "peer_python_device_kpi"

    def close_until(watermark):
        closed = [k for k in open_windows if k[1] + peerlib.WINDOWS[k[0]][1] <= watermark]
        lines = []
        for k in closed:
            acc = open_windows.pop(k)
            name, length = peerlib.WINDOWS[k[0]]
            lines.append(peerlib.line(measurement, k[2], name, length, k[1], acc, purchased))
        closed = [k for k in open_devices if k[1] + peerlib.WINDOWS[k[0]][1] <= watermark]
        for k in closed:
            acc = open_devices.pop(k)
            name, length = peerlib.WINDOWS[k[0]]
            lines.append(
                peerlib.device_line(device_measurement, k[2], k[3], name, length, k[1], acc)
            )
        if lines:
            state["records"] += len(lines)
            writer.add(lines)

    def on_message(_client, _userdata, msg):
        batch = peerlib.decode(msg.topic, msg.payload)
        if batch is None:
            state["rejected"] += 1
            progress.count(0)
            return
        if batch.samples[0].event_time_ms < state["watermark"]:
            state["rejected"] += 1  # too late: its windows are closed
            progress.count(0)
            return
        device = devices.get(batch.device_id)
        if device is None:
            device = devices[batch.device_id] = peerlib.DeviceState()
        usage = device.usage(batch)
        if usage is None:
            state["duplicates"] += 1
            progress.count(0)
            return
        for u in usage:
            at = u[2]
            for i, (_, length) in enumerate(peerlib.WINDOWS):
                key = (i, at - at % length, u[0])
                acc = open_windows.get(key)
                if acc is None:
                    acc = open_windows[key] = peerlib.new_acc()
                peerlib.add(acc, u)
                dkey = (i, key[1], u[0], u[1])
                dacc = open_devices.get(dkey)
                if dacc is None:
                    dacc = open_devices[dkey] = peerlib.new_device_acc()
                peerlib.add_device(dacc, u)
        state["samples"] += len(usage)
        last = batch.samples[-1].event_time_ms
        if last > state["max_event"]:
            state["max_event"] = last
            watermark = last - peerlib.LATENESS_MS
            if watermark > state["watermark"]:
                state["watermark"] = watermark
                close_until(watermark)
        progress.count(len(usage))

    stopped = threading.Event()
    ready = peerlib.Ready()
    client = peerlib.mqtt_client(args.client_id, ready, on_message)
    client.connect(args.host, args.port, keepalive=peerlib.KEEPALIVE_S)
    peerlib.wait_for_stdin_eof(stopped.set)
    client.loop_start()
    stopped.wait()
    client.disconnect()
    client.loop_stop()
    close_until(float("inf"))
    writer.flush()
    progress.stop()
    peerlib.emit_done(progress, ready.cpu_seconds, state, writer.written, writer.last_write_ns)


if __name__ == "__main__":
    main()
