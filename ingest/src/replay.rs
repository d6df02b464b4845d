//! `fleetpulse replay`: refused messages back in. A dead letter of a reason
//! that may go away (`too_late` beyond a correction horizon since raised,
//! `unknown_customer` since added to the customers file, ...) keeps its
//! whole payload; replay publishes those again to the service's broker, as
//! the device would have, and the running service takes them in: late data
//! within the horizon restates its windows and journey. What is still
//! refused is dead-lettered again.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use fleetpulse_sim::{PublishOptions, PublishReport};

use crate::config::ServiceConfig;
use crate::dead_letter::{DeadLetterRecord, read_file_counting};
use crate::metrics::RejectReason;
use crate::progress::Progress;

/// `fleetpulse replay` arguments.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Dead-letter files (`limits.dead_letter_file`, and its `.1`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// The service's configuration: its broker is where the messages go.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Reasons to replay (default: every reason that may go away:
    /// too_late, unknown_customer, device_limit, before_start,
    /// future_timestamp).
    #[arg(long, value_delimiter = ',')]
    pub reason: Vec<String>,
    /// The broker user (`fleetpulse-replay` with deploy/mosquitto's access
    /// control: the letters go to the devices' telemetry topics).
    #[command(flatten)]
    pub publish_as: crate::handover::PublishAs,
    /// Send letters older than a store's retention all the same (that
    /// store drops their windows; the others keep them).
    #[arg(long)]
    pub beyond_retention: bool,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Letters read.
    pub letters: usize,
    /// Letters sent again.
    pub sent: usize,
    /// Letters of another reason.
    pub other_reason: usize,
    /// Letters that kept only part of their payload (not replayable).
    pub incomplete: usize,
    /// Lines that are not dead letters (one cut by a crash, or the service
    /// writing it while it was read), skipped.
    pub not_letters: usize,
    /// The publisher's report.
    pub published: Option<PublishReport>,
}

/// A message to publish: topic and payload.
pub type Message = (String, Vec<u8>);

/// The letters of `files` to send again: those of `reasons` whose whole
/// payload was kept, in the order they were refused.
pub fn letters(
    files: &[PathBuf],
    reasons: &[RejectReason],
) -> anyhow::Result<(Vec<Message>, Replayed)> {
    let mut all: Vec<DeadLetterRecord> = Vec::new();
    let mut not_letters = 0;
    for file in files {
        if !file.exists() {
            bail!("{}: no such dead-letter file", file.display());
        }
        let (letters, skipped) =
            read_file_counting(file).with_context(|| format!("{}", file.display()))?;
        if letters.is_empty() && skipped > 0 {
            bail!(
                "{}: none of its {skipped} lines is a dead letter (the JSON lines that \
                 limits.dead_letter_file names)",
                file.display()
            );
        }
        not_letters += skipped;
        all.extend(letters);
    }
    all.sort_by_key(|l| l.received_ms);
    let mut replayed = Replayed {
        letters: all.len(),
        not_letters,
        ..Replayed::default()
    };
    let mut messages = Vec::new();
    for letter in all {
        if !reasons.iter().any(|r| r.as_str() == letter.reason) {
            replayed.other_reason += 1;
            continue;
        }
        match letter.payload() {
            Some(payload) => messages.push((letter.topic, payload)),
            None => replayed.incomplete += 1,
        }
    }
    replayed.sent = messages.len();
    Ok((messages, replayed))
}

/// How replay reaches the service's broker: its host, port and user, under
/// the client id `{client_id}-replay`.
pub fn publish_options(config: &ServiceConfig) -> anyhow::Result<PublishOptions> {
    let mqtt = &config.mqtt;
    if mqtt.tls_ca_file.is_some() {
        bail!(
            "mqtt.tls_ca_file is set: replay publishes over plain MQTT only; \
             replay through a listener without TLS"
        );
    }
    let password = match &mqtt.password_env {
        Some(var) => Some(
            std::env::var(var).with_context(|| format!("mqtt.password_env: ${var} is not set"))?,
        ),
        None => None,
    };
    Ok(PublishOptions {
        host: mqtt.host.clone(),
        port: mqtt.port,
        client_id: format!("{}-replay", mqtt.client_id),
        username: mqtt.username.clone(),
        password,
        ..PublishOptions::default()
    })
}

/// After a start that took in `customers`, new in the customers file: their
/// telemetry refused before as `unknown_customer`, kept in the service's
/// dead letters (`limits.dead_letter_file` and its `.1`), is sent again,
/// once `subscribed` says the service takes it in (a broker without the
/// service's session would drop it). Returns the messages sent; none
/// without a dead-letter file. A message the service has is refused again
/// as a replay, so sending twice doubles nothing.
pub async fn onboarded(
    config: &ServiceConfig,
    customers: &[String],
    subscribed: impl Fn() -> bool,
) -> anyhow::Result<usize> {
    let Some(file) = &config.limits.dead_letter_file else {
        return Ok(0);
    };
    let files: Vec<PathBuf> = [crate::dead_letter::previous_path(file), file.clone()]
        .into_iter()
        .filter(|f| f.exists())
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    let (mut messages, _) = letters(&files, &[RejectReason::UnknownCustomer])?;
    messages.retain(|(topic, _)| {
        fleetpulse_proto::TopicIds::parse(topic)
            .is_ok_and(|ids| customers.iter().any(|c| c == ids.customer))
    });
    if messages.is_empty() {
        return Ok(0);
    }
    let started = std::time::Instant::now();
    while !subscribed() {
        if started.elapsed() > std::time::Duration::from_secs(120) {
            bail!("not subscribed 120 s after the start: run `fleetpulse replay` once it is");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let sent = messages.len();
    let options = publish_options(config)?;
    crate::handover::publish(options, messages, |_| {}).await?;
    Ok(sent)
}

/// [`onboarded`] for a start in place that took in `customers`, once
/// `metrics` say it is subscribed; logs what it sent.
pub async fn resend_onboarded(
    config: ServiceConfig,
    customers: Vec<String>,
    metrics: std::sync::Arc<crate::metrics::IngestMetrics>,
) {
    let subscribed = || {
        metrics
            .subscribed
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    match onboarded(&config, &customers, subscribed).await {
        Ok(sent) => tracing::info!(
            ?customers,
            sent,
            "telemetry of the added customers refused before, sent again from the dead \
             letters; what is older than the correction horizon is refused again as too_late: \
             `fleetpulse backfill <the dead-letter file> --customer ...` takes it in"
        ),
        Err(e) => tracing::error!(
            ?customers,
            error = format!("{e:#}"),
            "cannot send the added customers' refused telemetry again: run `fleetpulse replay`"
        ),
    }
}

/// Sends the chosen letters of `args.files` again; prints what it did.
pub async fn run(args: &ReplayArgs) -> anyhow::Result<Replayed> {
    let config = ServiceConfig::load(&args.config)?;
    let reasons: Vec<RejectReason> = if args.reason.is_empty() {
        RejectReason::ALL
            .into_iter()
            .filter(|r| r.replayable())
            .collect()
    } else {
        (args.reason.iter())
            .map(|name| {
                (RejectReason::ALL.into_iter())
                    .find(|r| r.as_str() == name)
                    .with_context(|| format!("--reason: unknown reason `{name}`"))
            })
            .collect::<anyhow::Result<_>>()?
    };
    let (messages, mut replayed) = letters(&args.files, &reasons)?;
    if let Some(from) = earliest_reading(&messages) {
        crate::handover::stores_keep(
            "the dead letters' oldest reading",
            from,
            &config,
            args.beyond_retention,
        )
        .await?;
    }
    let mut options = publish_options(&config)?;
    args.publish_as.apply(&mut options)?;
    let mut progress = Progress::new("replaying", "dead letters", messages.len() as u64);
    let report = crate::handover::publish(options, messages, |p| progress.set(p.delivered)).await?;
    progress.finish(&format!(
        "{} of {} dead letters sent again ({} of other reasons, {} without their whole \
         payload{})",
        replayed.sent,
        replayed.letters,
        replayed.other_reason,
        replayed.incomplete,
        match replayed.not_letters {
            0 => String::new(),
            n => format!("; {n} lines that are not dead letters skipped"),
        }
    ));
    replayed.published = Some(report);
    Ok(replayed)
}

/// The earliest reading among the telemetry batches of `messages` (a
/// letter that does not decode has none).
fn earliest_reading(messages: &[(String, Vec<u8>)]) -> Option<i64> {
    use prost::Message as _;
    (messages.iter())
        .filter_map(|(_, payload)| fleetpulse_proto::v1::TelemetryBatch::decode(&payload[..]).ok())
        .flat_map(|batch| batch.samples.into_iter().map(|s| s.event_time_ms))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of a letter of `reason` with the whole payload `AB01`.
    fn letter(reason: &str, received_ms: u64) -> String {
        format!(
            r#"{{"received_ms":{received_ms},"reason":"{reason}","topic":"fleet/a/s/d/telemetry","detail":"","payload_bytes":2,"payload_hex":"ab01"}}"#
        )
    }

    /// The reason labels of the build of 2026-12-05, in the order its
    /// fixture holds one letter of each.
    const V1_REASONS: [&str; 13] = [
        "topic",
        "too_large",
        "decode",
        "id_mismatch",
        "empty_batch",
        "too_many_samples",
        "invalid_sample",
        "unknown_customer",
        "too_late",
        "future_timestamp",
        "sequence_replayed",
        "device_limit",
        "before_start",
    ];

    /// The topic and payload of the fixture's letter of `label`: 300 bytes,
    /// more than a letter of a reason that cannot go away keeps.
    fn refused(label: &str) -> Message {
        let payload = label.bytes().cycle().take(300).collect();
        (format!("fleet/c-{label}/s/d/telemetry"), payload)
    }

    /// A dead-letter file the build of 2026-12-05 wrote (checked in,
    /// `tests/fixtures/dead-letters-v1.jsonl`: a letter of every reason, in
    /// [`V1_REASONS`] order) replays with this one: by default the letters
    /// of the reasons that may go away, each with its whole payload, in the
    /// order they were refused; the others counted as of other reasons (or
    /// incomplete: a reason replayable since whose letter kept a prefix). A
    /// reason label renamed or a line changed fails this, where an upgrade
    /// would leave the data refused before it unsent ("of other reasons",
    /// or lines that are not letters): read the earlier form too, and never
    /// bless this file again.
    #[test]
    fn a_dead_letter_file_an_earlier_build_wrote_replays_with_this_one() {
        use crate::dead_letter::{DeadLetter, DeadLetterOptions, DeadLetterStore};
        let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/dead-letters-v1.jsonl");
        let reason = |label: &str| {
            (RejectReason::ALL.into_iter())
                .find(|r| r.as_str() == label)
                .unwrap_or_else(|| panic!("no reason `{label}` any more"))
        };
        if std::env::var_os("FLEETPULSE_BLESS").is_some() && !fixture.exists() {
            let dir = tempfile::tempdir().unwrap();
            let file = dir.path().join("dead-letters.jsonl");
            let mut store = DeadLetterStore::open(&file, DeadLetterOptions::default()).unwrap();
            for (i, label) in V1_REASONS.into_iter().enumerate() {
                let (topic, payload) = refused(label);
                store
                    .record(&DeadLetter {
                        topic: &topic,
                        reason: reason(label),
                        detail: &format!("refused as {label}"),
                        received_ms: 1_796_400_000_000 + i as u64,
                        payload: &payload,
                    })
                    .unwrap();
            }
            store.sync().unwrap();
            std::fs::copy(&file, &fixture).unwrap();
        }
        let replayable: Vec<RejectReason> = (RejectReason::ALL.into_iter())
            .filter(|r| r.replayable())
            .collect();
        let (messages, replayed) = letters(&[fixture], &replayable).unwrap();
        // Those that build kept whole; its `future_timestamp` letter kept a
        // prefix (that reason became replayable later): incomplete.
        let kept_whole = [
            "unknown_customer",
            "too_late",
            "device_limit",
            "before_start",
        ];
        let want: Vec<Message> = kept_whole.into_iter().map(refused).collect();
        assert_eq!(messages, want);
        let counts = (replayed.letters, replayed.sent, replayed.other_reason);
        assert_eq!(counts, (13, 4, 8));
        assert_eq!((replayed.incomplete, replayed.not_letters), (1, 0));
    }

    /// A file of something else (a log, a CSV) is refused, named; a line
    /// cut in a real dead-letter file is skipped and counted.
    #[test]
    fn a_file_that_is_not_dead_letters_is_named_and_cut_lines_are_counted() {
        let dir = tempfile::tempdir().unwrap();
        let wrong = dir.path().join("service.log");
        std::fs::write(
            &wrong,
            "2026-12-02T10:00:00Z INFO started\nsomething else\n",
        )
        .unwrap();
        let reasons = [RejectReason::TooLate];
        let e = letters(&[wrong], &reasons).unwrap_err();
        assert!(
            format!("{e:#}").contains("service.log: none of its 2 lines is a dead letter"),
            "{e:#}"
        );
        let real = dir.path().join("dead-letters.jsonl");
        let text = format!(
            "{}\n{}\n{}",
            letter("too_late", 2),
            letter("decode", 1),
            &letter("too_late", 3)[..40]
        );
        std::fs::write(&real, text).unwrap();
        let (messages, replayed) = letters(&[real], &reasons).unwrap();
        assert_eq!(
            messages,
            [("fleet/a/s/d/telemetry".to_string(), vec![0xab, 0x01])]
        );
        assert_eq!(
            (
                replayed.letters,
                replayed.other_reason,
                replayed.not_letters
            ),
            (2, 1, 1)
        );
    }
}
