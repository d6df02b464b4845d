//! The one error type of the simulator.

use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

/// Everything that can go wrong in the simulator, named after the step that
/// failed.
#[derive(Debug, Error)]
pub enum SimError {
    /// A [`crate::FleetSpec`] field cannot describe a fleet.
    #[error("invalid fleet spec: `{field}` {reason}")]
    Spec {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A [`crate::PublishOptions`] field cannot work.
    #[error("invalid publish options: `{field}` {reason}")]
    Options {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing or reading a ground-truth CSV file failed.
    #[error("ground truth file {}: {source}", path.display())]
    GroundTruthCsv {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: csv::Error,
    },
    /// Flushing a ground-truth CSV file failed.
    #[error("ground truth file {}: {source}", path.display())]
    GroundTruthIo {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A message is larger than the MQTT packet limit; sending it would only
    /// make the connection fail over and over.
    #[error("message on `{topic}` is {size} bytes, above the MQTT packet limit of {limit} bytes")]
    MessageTooLarge {
        /// Topic of the message.
        topic: String,
        /// Topic plus payload size.
        size: usize,
        /// `PublishOptions::max_packet_bytes`.
        limit: usize,
    },
    /// The broker answered the connection with a refusal (bad credentials,
    /// not authorised, ...); retrying would not help.
    #[error("broker {broker} refused the connection: {code}")]
    ConnectionRefused {
        /// `host:port`.
        broker: String,
        /// The CONNACK return code.
        code: String,
    },
    /// The broker could not be reached (or kept dropping the connection) for
    /// longer than `PublishOptions::give_up_after`.
    #[error("broker {broker} unreachable, gave up after {after:?}: {source}")]
    BrokerUnreachable {
        /// `host:port`.
        broker: String,
        /// How long it was retried.
        after: Duration,
        /// The last connection error.
        #[source]
        source: Box<rumqttc::ConnectionError>,
    },
    /// The broker stayed connected but acknowledged nothing for longer than
    /// `PublishOptions::give_up_after`.
    #[error(
        "broker {broker} acknowledged nothing for {after:?} with {outstanding} messages outstanding"
    )]
    AckTimeout {
        /// `host:port`.
        broker: String,
        /// How long nothing was acknowledged.
        after: Duration,
        /// Messages handed to the client and not yet acknowledged.
        outstanding: u64,
    },
    /// The MQTT client refused a request (invalid topic, or its event loop is
    /// gone).
    #[error("could not hand a message to the MQTT client: {0}")]
    Enqueue(#[source] Box<rumqttc::ClientError>),
}
