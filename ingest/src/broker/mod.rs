//! The embedded MQTT broker (rumqttd), so the demo and a single-box setup need
//! nothing installed.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};
use thiserror::Error;

/// The embedded broker could not start.
#[derive(Debug, Error)]
pub enum BrokerError {
    /// No free port, or the port is taken.
    #[error("cannot bind the embedded broker on {addr}: {source}")]
    Bind {
        /// Address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The broker thread could not be spawned.
    #[error("cannot start the embedded broker: {0}")]
    Spawn(std::io::Error),
}

/// A running embedded broker. It lives as long as the process: rumqttd has
/// no stop call, so dropping this handle leaves it serving.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Largest payload every shipped broker config takes from a publisher:
/// `message_size_limit` in `deploy/mosquitto/*.conf`, and the embedded
/// broker's limit. Above the service's `limits.max_payload_bytes` (256 KiB),
/// so a payload between the two reaches the service and is refused there
/// with a dead letter an operator can read; bigger ones never leave the
/// broker. The client takes up to `mqtt.max_packet_bytes`, far above.
pub const MESSAGE_SIZE_LIMIT: usize = 1024 * 1024;

/// rumqttd's `max_payload_size` bounds a packet's remaining length, topic
/// and packet id included; a publisher sending more is disconnected.
const MAX_PACKET: usize = MESSAGE_SIZE_LIMIT + crate::source::mqtt::PUBLISH_OVERHEAD_BYTES;

/// Starts rumqttd on `127.0.0.1:port` (`0`: a free port).
pub fn start(port: u16) -> Result<EmbeddedBroker, BrokerError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let addr = if port == 0 {
        let probe = TcpListener::bind(addr).map_err(|source| BrokerError::Bind { addr, source })?;
        probe
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source })?
    } else {
        addr
    };
    let server = ServerSettings {
        name: "fleetpulse-embedded".into(),
        listen: addr,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 60_000,
            max_payload_size: MAX_PACKET,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    let config = Config {
        id: 0,
        router: RouterConfig {
            max_connections: 10_010,
            max_outgoing_packet_count: 1000,
            max_segment_size: 100 * 1024 * 1024,
            max_segment_count: 10,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("1".to_string(), server)])),
        v5: None,
        ws: None,
        cluster: None,
        console: None,
        bridge: None,
        prometheus: None,
        metrics: None,
    };
    let mut broker = Broker::new(config);
    std::thread::Builder::new()
        .name("embedded-broker".into())
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(error = %e, "embedded broker stopped");
            }
        })
        .map_err(BrokerError::Spawn)?;
    wait_listening(addr);
    Ok(EmbeddedBroker { addr })
}

/// Waits (up to 5 s) until the broker accepts connections.
fn wait_listening(addr: SocketAddr) {
    for _ in 0..500 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
