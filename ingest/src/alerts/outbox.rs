//! The alert outbox: notifications waiting for a channel (MQTT, webhook), on
//! disk, so that a crash or a restart does not lose them.
//!
//! One append-only file, `outbox.jsonl`, one line per change:
//!
//! ```text
//! 1c291ca3 {"add":{"seq":7,"channel":"webhook","message":{...AlertMessage...}}}
//! 5d3b0e4f {"done":{"seq":7}}
//! ```
//!
//! Each line starts with the CRC-32 of its JSON in hex. [`Outbox::append`]
//! writes a group of `add` lines with one fsync: once it returns, the
//! notifications survive a crash. [`Outbox::delivered`] writes a `done` line
//! without fsync: if it is lost in a crash the notification is delivered
//! once more, which its stable `notification_id` lets receivers drop.
//!
//! **Recovery.** [`Outbox::open`] reads the file: the pending notifications
//! are the `add`s without a `done`. A last line without its newline (torn by
//! a crash mid-write) and lines whose CRC or JSON does not check are skipped
//! and logged. Then the file is rewritten with only the pending
//! notifications (temporary file, fsync, rename, fsync of the directory),
//! which is also done while running once enough lines are stale.
//!
//! No I/O happens outside these methods; the alerts task holds the outbox
//! behind a mutex and runs `append` on a blocking thread.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::format::AlertMessage;

/// The outbox file inside its directory.
pub const FILE: &str = "outbox.jsonl";

/// Stale lines (delivered `add`s and their `done`s) that trigger a rewrite,
/// once they also outnumber the pending notifications.
const COMPACT_AFTER: usize = 1024;

/// Where a notification goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// `{topic_prefix}/{customer}` on the broker.
    Mqtt,
    /// The webhook.
    Webhook,
}

impl Channel {
    /// `mqtt` or `webhook`.
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Mqtt => "mqtt",
            Channel::Webhook => "webhook",
        }
    }
}

/// A notification waiting for its channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Position in the outbox, increasing; delivery follows it per channel.
    pub seq: u64,
    /// Where it goes.
    pub channel: Channel,
    /// What is sent.
    pub message: Arc<AlertMessage>,
}

#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum LineOut<'a> {
    Add {
        seq: u64,
        channel: Channel,
        message: &'a AlertMessage,
    },
    Done {
        seq: u64,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum LineIn {
    Add {
        seq: u64,
        channel: Channel,
        message: Box<AlertMessage>,
    },
    Done {
        seq: u64,
    },
}

/// `{crc32 hex} {json}\n`.
fn frame(line: &LineOut<'_>, out: &mut Vec<u8>) {
    let json = serde_json::to_vec(line).expect("outbox lines always serialize");
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(&json)).as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

/// The `Add` lines of `entries`, framed.
fn frame_adds<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<u8> {
    let mut buffer = Vec::new();
    for e in entries {
        frame(
            &LineOut::Add {
                seq: e.seq,
                channel: e.channel,
                message: &e.message,
            },
            &mut buffer,
        );
    }
    buffer
}

/// One line back, or `None` if its CRC or JSON does not check.
fn unframe(line: &[u8]) -> Option<LineIn> {
    let (crc, json) = (line.get(..8)?, line.get(9..)?);
    if line.get(8) != Some(&b' ') {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(crc).ok()?, 16).ok()?;
    if crc32fast::hash(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// What reading an outbox file found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Notifications still to deliver.
    pub pending: usize,
    /// A last line cut short by a crash was dropped.
    pub torn_tail: bool,
    /// Lines whose CRC or JSON did not check, skipped.
    pub corrupt: usize,
}

/// Notifications waiting for delivery, on disk or (without a directory) in
/// memory.
#[derive(Debug)]
pub struct Outbox {
    dir: Option<PathBuf>,
    file: Option<File>,
    next_seq: u64,
    pending: BTreeMap<u64, Entry>,
    /// Lines in the file that no longer describe a pending notification.
    stale: usize,
}

impl Outbox {
    /// An outbox that keeps nothing across a restart.
    pub fn in_memory() -> Self {
        Self {
            dir: None,
            file: None,
            next_seq: 1,
            pending: BTreeMap::new(),
            stale: 0,
        }
    }

    /// Opens (or creates) the outbox in `dir`, recovers what is pending and
    /// rewrites the file with only that.
    pub fn open(dir: &Path) -> io::Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        let mut recovered = Recovered::default();
        let mut pending = BTreeMap::new();
        let mut last_seq = 0;
        let mut lines = bytes.split(|b| *b == b'\n').peekable();
        while let Some(line) = lines.next() {
            let last = lines.peek().is_none();
            if last {
                // After the final newline: empty, or a line torn mid-write.
                recovered.torn_tail = !line.is_empty();
                break;
            }
            match unframe(line) {
                Some(LineIn::Add {
                    seq,
                    channel,
                    message,
                }) => {
                    last_seq = last_seq.max(seq);
                    pending.insert(
                        seq,
                        Entry {
                            seq,
                            channel,
                            message: Arc::new(*message),
                        },
                    );
                }
                Some(LineIn::Done { seq }) => {
                    last_seq = last_seq.max(seq);
                    pending.remove(&seq);
                }
                None => recovered.corrupt += 1,
            }
        }
        recovered.pending = pending.len();
        let mut outbox = Self {
            dir: Some(dir.to_owned()),
            file: None,
            next_seq: last_seq + 1,
            pending,
            stale: 0,
        };
        outbox.compact()?;
        Ok((outbox, recovered))
    }

    /// The directory, when the outbox is on disk.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Notifications waiting, all channels.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Nothing waiting.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Notifications waiting for `channel`.
    pub fn pending_for(&self, channel: Channel) -> usize {
        self.pending
            .values()
            .filter(|e| e.channel == channel)
            .count()
    }

    /// Every waiting notification, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.pending.values()
    }

    /// The oldest notification for `channel` after position `after`.
    pub fn next_for(&self, channel: Channel, after: u64) -> Option<Entry> {
        self.pending
            .range(after + 1..)
            .map(|(_, e)| e)
            .find(|e| e.channel == channel)
            .cloned()
    }

    /// Whether the same notification already waits for `channel`: a replay
    /// after a restart recomputes alerts the outbox still holds. (A
    /// restatement that moved an episode's resolution sends a resolve of
    /// another date: another `notification_id`, which goes out after the
    /// first, not dropped.)
    pub fn holds(&self, channel: Channel, message: &AlertMessage) -> bool {
        self.pending
            .values()
            .any(|e| e.channel == channel && e.message.notification_id == message.notification_id)
    }

    /// Adds notifications with one write and one fsync; once this returns
    /// `Ok` they survive a crash. On an error nothing is added (a retry
    /// writes the same positions again, which reading tolerates).
    pub fn append(
        &mut self,
        items: impl IntoIterator<Item = (Channel, Arc<AlertMessage>)>,
    ) -> io::Result<Vec<Entry>> {
        let entries: Vec<Entry> = items
            .into_iter()
            .zip(self.next_seq..)
            .map(|((channel, message), seq)| Entry {
                seq,
                channel,
                message,
            })
            .collect();
        if entries.is_empty() {
            return Ok(entries);
        }
        if let Some(file) = &mut self.file {
            let buffer = frame_adds(&entries);
            file.write_all(&buffer)?;
            file.sync_data()?;
        }
        self.next_seq += entries.len() as u64;
        for e in &entries {
            self.pending.insert(e.seq, e.clone());
        }
        Ok(entries)
    }

    /// Removes a delivered (or refused) notification. Not synced: a `done`
    /// lost in a crash means one more delivery of the same notification.
    pub fn delivered(&mut self, seq: u64) -> io::Result<()> {
        if self.pending.remove(&seq).is_none() {
            return Ok(());
        }
        if let Some(file) = &mut self.file {
            let mut buffer = Vec::new();
            frame(&LineOut::Done { seq }, &mut buffer);
            file.write_all(&buffer)?;
            self.stale += 2;
            if self.stale >= COMPACT_AFTER && self.stale > self.pending.len() {
                self.compact()?;
            }
        }
        Ok(())
    }

    /// Rewrites the file with only the pending notifications and reopens it
    /// for appending.
    fn compact(&mut self) -> io::Result<()> {
        let Some(dir) = &self.dir else {
            return Ok(());
        };
        let path = dir.join(FILE);
        crate::files::replace(&path, &frame_adds(self.pending.values()))?;
        self.file = Some(OpenOptions::new().append(true).open(&path)?);
        self.stale = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use fleetpulse_engine::kpi::risk::AlertStatus;

    use super::*;
    use crate::alerts::format::tests::record;

    fn message(opened_at: u64, status: AlertStatus) -> Arc<AlertMessage> {
        let mut record = record(status);
        record.opened_at = opened_at;
        Arc::new(AlertMessage::from_record(&record))
    }

    fn ids(outbox: &Outbox) -> Vec<(u64, Channel, String)> {
        outbox
            .pending()
            .map(|e| (e.seq, e.channel, e.message.notification_id.clone()))
            .collect()
    }

    #[test]
    fn appended_notifications_survive_a_reopen_and_delivered_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (mut outbox, recovered) = Outbox::open(dir.path()).unwrap();
        assert_eq!(recovered, Recovered::default());
        let a = message(1_000, AlertStatus::Open);
        let b = message(2_000, AlertStatus::Open);
        let entries = outbox
            .append([
                (Channel::Mqtt, a.clone()),
                (Channel::Webhook, a.clone()),
                (Channel::Mqtt, b.clone()),
            ])
            .unwrap();
        assert_eq!(entries.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(outbox.pending_for(Channel::Mqtt), 2);
        assert_eq!(outbox.next_for(Channel::Webhook, 0).unwrap().seq, 2);
        assert_eq!(outbox.next_for(Channel::Mqtt, 1).unwrap().seq, 3);
        assert!(outbox.holds(Channel::Webhook, &a));
        assert!(!outbox.holds(Channel::Webhook, &b));
        outbox.delivered(1).unwrap();
        outbox.delivered(1).unwrap();
        let before = ids(&outbox);
        drop(outbox);

        // What a crash leaves: the file as written, read by a new process.
        let (reopened, recovered) = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                pending: 2,
                ..Recovered::default()
            }
        );
        assert_eq!(ids(&reopened), before);
        assert_eq!(reopened.next_for(Channel::Mqtt, 0).unwrap().message, b);
        // Positions continue after what was written, delivered or not.
        let mut reopened = reopened;
        let next = reopened.append([(Channel::Webhook, b.clone())]).unwrap();
        assert_eq!(next[0].seq, 4);
    }

    /// An outbox the build of 2026-12-05 left (checked in,
    /// `tests/fixtures/outbox-v1.jsonl`: three notifications added, the
    /// first delivered) opens with this one: the two pending, equal to the
    /// messages written, and the numbering goes on after them. A change of
    /// the line or message format that fails this loses an upgrade's
    /// pending alerts (a line that does not read is skipped as corrupt):
    /// read the earlier format too, and never bless this file again.
    #[test]
    fn an_outbox_an_earlier_build_left_opens_with_its_pending_notifications() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/outbox-v1.jsonl");
        let a = message(1_000, AlertStatus::Open);
        let b = message(2_000, AlertStatus::Resolved);
        if std::env::var_os("FLEETPULSE_BLESS").is_some() && !fixture.exists() {
            let dir = tempfile::tempdir().unwrap();
            let (mut outbox, _) = Outbox::open(dir.path()).unwrap();
            let added = [
                (Channel::Mqtt, a.clone()),
                (Channel::Webhook, a.clone()),
                (Channel::Mqtt, b.clone()),
            ];
            outbox.append(added).unwrap();
            outbox.delivered(1).unwrap();
            drop(outbox);
            std::fs::copy(dir.path().join(FILE), &fixture).unwrap();
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(&fixture, dir.path().join(FILE)).unwrap();
        let (mut outbox, recovered) = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                pending: 2,
                ..Recovered::default()
            }
        );
        let pending: Vec<_> = (outbox.pending())
            .map(|e| (e.seq, e.channel, e.message.clone()))
            .collect();
        // Delivered as written: that build named a resolve without its date.
        let b_then = Arc::new(AlertMessage {
            notification_id: format!("{}-resolved", b.alert_id),
            ..(*b).clone()
        });
        assert_eq!(
            pending,
            [(2, Channel::Webhook, a), (3, Channel::Mqtt, b_then)]
        );
        let next = outbox.append([(Channel::Webhook, b)]).unwrap();
        assert_eq!(next[0].seq, 4);
    }

    #[test]
    fn the_file_is_rewritten_with_only_what_is_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (mut outbox, _) = Outbox::open(dir.path()).unwrap();
        let a = message(1_000, AlertStatus::Open);
        for _ in 0..COMPACT_AFTER {
            let entries = outbox.append([(Channel::Webhook, a.clone())]).unwrap();
            outbox.delivered(entries[0].seq).unwrap();
        }
        outbox.append([(Channel::Mqtt, a.clone())]).unwrap();
        let lines = || {
            std::fs::read_to_string(dir.path().join(FILE))
                .unwrap()
                .lines()
                .count()
        };
        assert!(lines() <= 2, "compacted while running: {} lines", lines());
        drop(outbox);
        let (outbox, _) = Outbox::open(dir.path()).unwrap();
        assert_eq!(lines(), 1, "only the pending one after a reopen");
        assert_eq!(outbox.len(), 1);
        assert_eq!(
            outbox.pending().next().unwrap().seq,
            COMPACT_AFTER as u64 + 1
        );
    }

    #[test]
    fn a_torn_tail_and_corrupt_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let (mut outbox, _) = Outbox::open(dir.path()).unwrap();
        let a = message(1_000, AlertStatus::Open);
        let b = message(1_000, AlertStatus::Resolved);
        let c = message(3_000, AlertStatus::Open);
        outbox.append([(Channel::Webhook, a.clone())]).unwrap();
        outbox.append([(Channel::Webhook, b.clone())]).unwrap();
        outbox.append([(Channel::Webhook, c.clone())]).unwrap();
        drop(outbox);
        let path = dir.path().join(FILE);
        let text = std::fs::read(&path).unwrap();
        let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
        assert_eq!(lines.len(), 3);
        // Line 2 has a flipped bit; line 3 was cut short by a crash.
        let mut damaged = lines[0].to_vec();
        let mut flipped = lines[1].to_vec();
        let at = flipped.len() / 2;
        flipped[at] ^= 0x04;
        damaged.extend_from_slice(&flipped);
        damaged.extend_from_slice(&lines[2][..lines[2].len() / 2]);
        std::fs::write(&path, &damaged).unwrap();

        let (mut outbox, recovered) = Outbox::open(dir.path()).unwrap();
        assert_eq!(
            recovered,
            Recovered {
                pending: 1,
                torn_tail: true,
                corrupt: 1,
            }
        );
        assert_eq!(outbox.pending().next().unwrap().message, a);
        // The rewrite dropped the damage: new lines are readable after it.
        outbox.append([(Channel::Mqtt, c.clone())]).unwrap();
        drop(outbox);
        let (outbox, recovered) = Outbox::open(dir.path()).unwrap();
        assert_eq!(recovered.pending, 2);
        assert!(!recovered.torn_tail);
        assert_eq!(recovered.corrupt, 0);
        assert_eq!(outbox.next_for(Channel::Mqtt, 0).unwrap().message, c);
    }

    #[test]
    fn an_in_memory_outbox_keeps_order_without_files() {
        let mut outbox = Outbox::in_memory();
        assert!(outbox.dir().is_none());
        let a = message(1_000, AlertStatus::Open);
        outbox
            .append([(Channel::Mqtt, a.clone()), (Channel::Mqtt, a.clone())])
            .unwrap();
        outbox.delivered(1).unwrap();
        assert_eq!(outbox.next_for(Channel::Mqtt, 0).unwrap().seq, 2);
        assert!(outbox.next_for(Channel::Webhook, 0).is_none());
        outbox.delivered(2).unwrap();
        assert!(outbox.is_empty());
    }
}
