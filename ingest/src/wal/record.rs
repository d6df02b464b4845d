//! What one WAL record holds, and its compact body encoding.
//!
//! ```text
//! received_ms  u64 LE
//! topic_len    u16 LE
//! topic        topic_len bytes, UTF-8
//! payload      the rest of the body
//! ```

use bytes::Bytes;

/// Bytes of a body before the topic: `received_ms` and `topic_len`.
pub(crate) const BODY_FIXED: usize = 8 + 2;

/// One message as ingest took it in: the topic it arrived on, its payload
/// (the encoded `TelemetryBatch`, untouched) and when it was received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalRecord {
    /// MQTT topic, at most 65535 bytes (MQTT's own limit).
    pub topic: String,
    /// Message payload.
    pub payload: Bytes,
    /// Wall-clock receive time, ms since the Unix epoch.
    pub received_ms: u64,
}

impl WalRecord {
    /// Bytes of the encoded body.
    pub fn encoded_len(&self) -> usize {
        BODY_FIXED + self.topic.len() + self.payload.len()
    }

    /// Appends the body to `out`. The caller has checked that the topic fits
    /// in a `u16` length.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        debug_assert!(self.topic.len() <= u16::MAX as usize);
        out.extend_from_slice(&self.received_ms.to_le_bytes());
        out.extend_from_slice(&(self.topic.len() as u16).to_le_bytes());
        out.extend_from_slice(self.topic.as_bytes());
        out.extend_from_slice(&self.payload);
    }

    /// Decodes a body whose checksum already matched. An error here means
    /// a writer bug or a checksum collision, never a torn write.
    pub(crate) fn decode(body: Bytes) -> Result<Self, &'static str> {
        if body.len() < BODY_FIXED {
            return Err("record body shorter than its fixed fields");
        }
        let received_ms = u64::from_le_bytes(body[..8].try_into().expect("8 bytes"));
        let topic_len = u16::from_le_bytes(body[8..10].try_into().expect("2 bytes")) as usize;
        let topic_end = BODY_FIXED + topic_len;
        if body.len() < topic_end {
            return Err("record topic runs past the end of its body");
        }
        let topic = std::str::from_utf8(&body[BODY_FIXED..topic_end])
            .map_err(|_| "record topic is not UTF-8")?
            .to_owned();
        Ok(Self {
            topic,
            payload: body.slice(topic_end..),
            received_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_round_trips() {
        let record = WalRecord {
            topic: "fleet/c/s/d/telemetry".into(),
            payload: Bytes::from_static(b"\x0a\x01d\x00\xff"),
            received_ms: 1_767_571_200_123,
        };
        let mut out = Vec::new();
        record.encode(&mut out);
        assert_eq!(out.len(), record.encoded_len());
        assert_eq!(WalRecord::decode(Bytes::from(out)).unwrap(), record);
    }

    #[test]
    fn empty_topic_and_payload_round_trip() {
        let record = WalRecord {
            topic: String::new(),
            payload: Bytes::new(),
            received_ms: 0,
        };
        let mut out = Vec::new();
        record.encode(&mut out);
        assert_eq!(out.len(), BODY_FIXED);
        assert_eq!(WalRecord::decode(Bytes::from(out)).unwrap(), record);
    }

    #[test]
    fn inconsistent_bodies_are_refused() {
        assert!(WalRecord::decode(Bytes::from_static(b"short")).is_err());
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&5u16.to_le_bytes());
        body.extend_from_slice(b"ab");
        assert!(WalRecord::decode(Bytes::from(body)).is_err());
        let mut body = vec![0u8; 8];
        body.extend_from_slice(&2u16.to_le_bytes());
        body.extend_from_slice(b"\xff\xfe");
        assert!(WalRecord::decode(Bytes::from(body)).is_err());
    }
}
