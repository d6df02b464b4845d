//! Proves the real-server fixtures in `support::servers`: each server starts
//! on free loopback ports, takes a write, gives it back, and keeps its data
//! across `stop()` + `restart()` on the same port.

mod support;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::servers::{
    InfluxDb1, Mosquitto, VictoriaMetrics, find_binary, free_port, free_ports, http_post,
};

/// A tag value that needs every line-protocol tag escape (space, comma,
/// equals sign) and is not ASCII.
const CUSTOMER: &str = "Müller Maschinenbau, Werk=Süd";
/// `CUSTOMER` escaped for line protocol.
const CUSTOMER_ESCAPED: &str = r"Müller\ Maschinenbau\,\ Werk\=Süd";
/// 2019-06-01T00:00:00Z: simulated history lies years in the past.
const T_2019_S: i64 = 1_559_347_200;
/// 1995-01-01T00:00:00Z: far past, to prove the stores' retention.
const T_1995_S: i64 = 788_918_400;

fn kpi_lines() -> String {
    format!(
        "machine_kpi,customer={CUSTOMER_ESCAPED},site=Zürich uptime=0.5,cycles=42i {t1}000000000\n\
         machine_kpi,customer={CUSTOMER_ESCAPED},site=Zürich uptime=0.75,cycles=7i {t2}000000000\n",
        t1 = T_1995_S,
        t2 = T_2019_S,
    )
}

/// Starts a server, printing how long `start()` took and how long the
/// server took to answer.
fn started<S>(name: &str, start: fn() -> S, ready_in: fn(&S) -> Duration) -> S {
    let started = Instant::now();
    let server = start();
    let took = started.elapsed();
    eprintln!(
        "{name} ready in {:?} (start() took {took:?})",
        ready_in(&server)
    );
    server
}

/// Restarts a server with `restart`, printing how long that took.
fn restarted(name: &str, restart: impl FnOnce()) {
    let started = Instant::now();
    restart();
    eprintln!("{name} restarted in {:?}", started.elapsed());
}

fn connects(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(2),
    )
    .is_ok()
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    let ports = free_ports(3);
    assert_eq!(ports.len(), 3);
    assert!(ports[0] != ports[1] && ports[1] != ports[2] && ports[0] != ports[2]);
    let port = free_port();
    std::net::TcpListener::bind(("127.0.0.1", port)).expect("a free port binds");
}

/// A restarted server gets its port back only if no outgoing connection
/// can be handed it meanwhile: the fixtures' ports lie below the kernel's
/// ephemeral range.
#[test]
fn free_ports_lie_outside_the_ephemeral_range() {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap();
    let mut bounds = range.split_whitespace().map(|s| s.parse::<u16>().unwrap());
    let (start, end) = (bounds.next().unwrap(), bounds.next().unwrap());
    for port in free_ports(50) {
        assert!(
            !(start..=end).contains(&port),
            "port {port} lies in the ephemeral range {start}..={end}"
        );
    }
}

#[test]
#[should_panic(expected = "run ./deploy/test.sh")]
fn a_missing_binary_fails_with_the_install_hint() {
    find_binary("fleetpulse-no-such-server", "FLEETPULSE_NO_SUCH_SERVER");
}

#[test]
fn mosquitto_delivers_and_keeps_queued_messages_across_restart() {
    let mut broker = started("mosquitto", Mosquitto::start, Mosquitto::ready_in);
    let port = broker.port();
    let topic = "fleet/acme/site-1/dev-1/telemetry";
    // Binary payload, as protobuf batches are.
    let payload = [0x08, 0x00, 0xff, b'\n', b' ', 0x96, 0x01];

    broker.subscribe_session("fp-fixture-test", "fleet/#");
    broker.publish(topic, &payload, 1);
    let got = broker.receive("fp-fixture-test", "fleet/#", 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "one message expected\n{}", broker.log_tail());
    assert_eq!(got[0].topic, topic);
    assert_eq!(got[0].payload, payload);

    // Queued for the offline persistent session, saved on a graceful stop.
    broker.publish(topic, b"after-restart", 1);
    broker.stop();
    assert!(!broker.is_running());
    assert!(!connects(port), "nothing listens while stopped");
    restarted("mosquitto", || broker.restart());
    assert_eq!(broker.port(), port);
    assert!(broker.is_running());
    let got = broker.receive("fp-fixture-test", "fleet/#", 1, Duration::from_secs(10));
    assert_eq!(got.len(), 1, "queued message lost\n{}", broker.log_tail());
    assert_eq!(got[0].payload, b"after-restart");

    // restart() while running stops first.
    broker.restart();
    assert!(connects(port));
}

#[test]
fn mosquitto_start_with_config_appends_lines() {
    let second = free_port();
    let broker = Mosquitto::start_with_config(&format!("listener {second} 127.0.0.1\n"));
    assert!(connects(broker.port()));
    assert!(
        connects(second),
        "extra listener missing\n{}",
        broker.log_tail()
    );
}

#[test]
#[should_panic(expected = "fleetpulse_no_such_option")]
fn a_server_that_does_not_start_fails_with_its_log() {
    // mosquitto refuses the unknown option and exits; the panic shows its log.
    Mosquitto::start_with_config("fleetpulse_no_such_option 1\n");
}

#[test]
fn influxdb1_round_trips_escaped_tags_and_survives_restart() {
    let mut influx = started("influxd", InfluxDb1::start, InfluxDb1::ready_in);
    let url = influx.url();
    influx.create_database("fleetpulse");
    influx.write_lines("fleetpulse", "ns", &kpi_lines());

    let query = format!(
        "SELECT uptime, cycles, customer, site FROM machine_kpi WHERE customer = '{}'",
        CUSTOMER.replace('\'', "\\'")
    );
    let check = |influx: &InfluxDb1| {
        let answer = influx.query("fleetpulse", &query);
        let series = &answer["results"][0]["series"][0];
        assert_eq!(series["name"], "machine_kpi", "{answer}");
        assert_eq!(
            series["columns"],
            serde_json::json!(["time", "uptime", "cycles", "customer", "site"])
        );
        assert_eq!(
            series["values"],
            serde_json::json!([
                ["1995-01-01T00:00:00Z", 0.5, 42, CUSTOMER, "Zürich"],
                ["2019-06-01T00:00:00Z", 0.75, 7, CUSTOMER, "Zürich"],
            ]),
            "{answer}"
        );
    };
    check(&influx);

    // Tag values come back exactly as written (SHOW TAG VALUES).
    let tags = influx.query(
        "fleetpulse",
        "SHOW TAG VALUES FROM machine_kpi WITH KEY = customer",
    );
    assert_eq!(
        tags["results"][0]["series"][0]["values"],
        serde_json::json!([["customer", CUSTOMER]])
    );

    // Same series and timestamp again: InfluxDB overwrites.
    influx.write_lines(
        "fleetpulse",
        "s",
        &format!(
            "machine_kpi,customer={CUSTOMER_ESCAPED},site=Zürich uptime=0.75,cycles=7i {T_2019_S}"
        ),
    );

    // A bad line is refused with 400 (unlike VictoriaMetrics).
    let bad = http_post(
        &format!("{url}/write?db=fleetpulse"),
        "text/plain",
        b"bad line",
    )
    .expect("POST /write");
    assert_eq!(bad.status, 400, "{}", bad.text());

    influx.stop();
    assert!(!influx.is_running());
    restarted("influxd", || influx.restart());
    assert_eq!(influx.url(), url);
    check(&influx);
}

#[test]
fn victoria_metrics_round_trips_escaped_tags_and_survives_restart() {
    let mut vm = started(
        "victoria-metrics",
        VictoriaMetrics::start,
        VictoriaMetrics::ready_in,
    );
    let url = vm.url();
    // The InfluxDB v2 write API (what the influxdb2 crate speaks) ...
    vm.write_lines("ns", &kpi_lines());
    // ... and the v1 /write API, which adds a `db` label from `?db=`.
    let v1 = http_post(
        &format!("{url}/write?db=fleetpulse&precision=s"),
        "text/plain",
        format!("v1_kpi,customer={CUSTOMER_ESCAPED} uptime=1 {T_2019_S}").as_bytes(),
    )
    .expect("POST /write");
    assert_eq!(v1.status, 204, "{}", v1.text());

    let selector = format!(
        "machine_kpi_uptime{{customer={}}}",
        serde_json::Value::from(CUSTOMER)
    );
    let check = |vm: &VictoriaMetrics| {
        let series = vm.export(&selector);
        assert_eq!(series.len(), 1, "{series:?}\n{}", vm.log_tail());
        assert_eq!(
            series[0]["metric"],
            serde_json::json!({
                "__name__": "machine_kpi_uptime",
                "customer": CUSTOMER,
                "site": "Zürich",
            })
        );
        assert_eq!(series[0]["values"], serde_json::json!([0.5, 0.75]));
        assert_eq!(
            series[0]["timestamps"],
            serde_json::json!([T_1995_S * 1000, T_2019_S * 1000])
        );
        let cycles = vm.export("machine_kpi_cycles");
        assert_eq!(cycles[0]["values"], serde_json::json!([42, 7]));
        let v1 = vm.export("v1_kpi_uptime");
        assert_eq!(
            v1[0]["metric"],
            serde_json::json!({"__name__": "v1_kpi_uptime", "customer": CUSTOMER, "db": "fleetpulse"})
        );
    };
    check(&vm);

    // The same points again (a replayed batch): with
    // -dedup.minScrapeInterval=1ms the store still holds one sample each.
    vm.write_lines("ns", &kpi_lines());
    check(&vm);

    vm.stop();
    assert!(!vm.is_running());
    restarted("victoria-metrics", || vm.restart());
    assert_eq!(vm.url(), url);
    check(&vm);
}
