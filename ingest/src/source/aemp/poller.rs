//! The poll loop of one AEMP source: every `poll_interval`, read the fleet
//! snapshot (discovery, `snapshotTime`), then for each mapped machine the
//! time series of its elements since its position, convert them
//! ([`super::convert`]), hand the messages to the intake lanes as if they
//! came from MQTT, wait until the WAL made them durable (the lanes' acks),
//! and only then write the machine's new position. This loop only moves
//! data; a failure is counted and the machine (or the poll) is left for
//! the next round, never stopping the service or the other sources.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::client::{Client, FetchError};
use super::config::{Addressing, AempConfig, Element};
use super::convert::{self, Refusal, Target};
use super::mapping::{AempEquipment, EquipmentMap};
use super::metrics::{AempError, SourceMetrics};
use super::parse::{self, EquipmentHeader, Reading};
use super::position::{MachinePosition, Position, PositionFile};
use crate::delivery::intake::wall_clock_ms;
use crate::delivery::route::Router;
use crate::source::mqtt::{AckToken, Message};

/// Empty time ranges skipped in one poll of a machine (one after the
/// other, e.g. weeks a machine stood still) before waiting for the next.
const EMPTY_SPANS_PER_POLL: usize = 64;

/// Empty pages one chain of `next` links may hold: a cursor API may send
/// one now and then, a vendor's loop sends them without end.
const EMPTY_PAGES_PER_CHAIN: u32 = 8;

/// One source, ready to run.
pub struct Poller {
    config: Arc<AempConfig>,
    map: EquipmentMap,
    file: PositionFile,
    position: Position,
    client: Client,
    metrics: Arc<SourceMetrics>,
    max_future_ms: u64,
    claims: Claims,
}

/// Which source polls a machine whose `[[aemp_equipment]]` entry names
/// none: one source only. Two OEM accounts that both list it (a dealer's
/// and the manufacturer's) each counted its readings, under unit epochs of
/// their own, so neither repeat was refused: cycles and samples doubled.
/// A source an entry names holds the machine; else the source that polled
/// it before (its position file), else the first to list it; a source
/// whose fleet no longer lists it lets it go (a machine moved to another
/// account). A source that takes a machine over starts from where the
/// last one stopped (its position), not `history` back: polled again from
/// there under its own unit epoch, the history counted twice.
///
/// A machine is its key and the device the customers file reports it as
/// ([`claim_of`]): two entries with the same PIN or serial number (two
/// OEMs' serials may clash), each naming its source, are two machines,
/// and neither takes the other's position (taken, one source began where
/// the other's machine stood and counted its meters backwards).
#[derive(Debug, Clone, Default)]
pub struct Claims(Arc<std::sync::Mutex<Shared>>);

/// The machine of `entry` in [`Claims`].
fn claim_of(entry: &AempEquipment) -> String {
    format!("{} {}/{}", entry.key(), entry.customer, entry.device)
}

/// The entries of each machine key.
fn by_key(equipment: &[AempEquipment]) -> HashMap<String, Vec<&AempEquipment>> {
    let mut by_key: HashMap<String, Vec<&AempEquipment>> = HashMap::new();
    for e in equipment {
        by_key.entry(e.key()).or_default().push(e);
    }
    by_key
}

/// The entry `source` polled the machine `key` for, as the customers file
/// maps it now (`by_key`): its own, else one for any source, else the only
/// entry of that machine (named for another source: it takes it over).
fn polled_as<'a>(
    by_key: &HashMap<String, Vec<&'a AempEquipment>>,
    key: &str,
    source: &str,
) -> Option<&'a AempEquipment> {
    let entries = by_key.get(key)?;
    (entries.iter().find(|e| e.source.as_deref() == Some(source)))
        .or_else(|| entries.iter().find(|e| e.source.is_none()))
        .or_else(|| entries.first().filter(|_| entries.len() == 1))
        .copied()
}

#[derive(Debug, Default)]
struct Shared {
    /// Machine ([`claim_of`]) to the source that polls it.
    owners: HashMap<String, String>,
    /// (source, machine) pairs already said to be another's.
    said: HashSet<(String, String)>,
    /// Each machine's newest position of any source.
    latest: HashMap<String, MachinePosition>,
}

impl Claims {
    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `source` polled the machine `key` ([`claim_of`]) up to `position`.
    fn note(&self, key: &str, source: &str, position: &MachinePosition) {
        let mut shared = self.shared();
        shared
            .owners
            .entry(key.to_owned())
            .or_insert_with(|| source.to_owned());
        let newer = (shared.latest.get(key)).is_none_or(|p| p.polled_to <= position.polled_to);
        if newer {
            shared.latest.insert(key.to_owned(), position.clone());
        }
    }

    /// Where another source left the machine of `entry`, if one polled it.
    fn position_of(&self, entry: &AempEquipment) -> Option<MachinePosition> {
        self.shared().latest.get(&claim_of(entry)).cloned()
    }

    /// Whether `source` polls the machine of `entry` (always, when the
    /// entry names its source); the first time another one lists it, says
    /// so.
    fn polls(&self, entry: &AempEquipment, source: &str) -> bool {
        let mut shared = self.shared();
        let machine = claim_of(entry);
        if entry.source.is_some() {
            shared.owners.insert(machine, source.to_owned());
            return true;
        }
        let owner = (shared.owners.entry(machine.clone()))
            .or_insert_with(|| source.to_owned())
            .clone();
        if owner == source {
            return true;
        }
        if shared.said.insert((source.to_owned(), machine)) {
            tracing::warn!(
                machine = %entry.key(),
                source,
                polled_by = %owner,
                "an AEMP machine whose [[aemp_equipment]] entry names no source is listed by two \
                 sources: only the one that polls it counts its readings (twice, they would \
                 double); name its `source` to choose (it goes on from where the other stopped)"
            );
        }
        false
    }

    /// `source`'s fleet lists only the machines `listed` ([`claim_of`]):
    /// those of its claims it no longer lists go to whichever source lists
    /// them next.
    fn listed(&self, source: &str, listed: &HashSet<String>) {
        let mut shared = self.shared();
        (shared.owners).retain(|key, owner| owner != source || listed.contains(key));
    }
}

/// The time range the next request of a machine polled up to `polled_to`
/// asks for at `now`: from `history` back on its first poll, else from
/// where the last stopped, less the vendor's `delay` (what it showed since,
/// dated before that), and at most `span` forward.
fn asked(polled_to: u64, now: u64, history: u64, delay: u64, span: u64) -> (u64, u64) {
    let from = match polled_to {
        0 => now.saturating_sub(history),
        at => at,
    };
    (
        from.saturating_sub(delay),
        now.min(from.saturating_add(span)),
    )
}

/// Where a poller's messages go and its acknowledgements come from.
pub struct Intake {
    /// The intake lanes.
    pub router: Router,
    /// Acks of this source's messages (once durable); `None` without a
    /// WAL: a message counts as taken once handed over.
    pub acks: Option<mpsc::UnboundedReceiver<AckToken>>,
    /// This source's index in the ack tokens.
    pub source: usize,
}

/// Why polling stopped short.
enum Interrupted {
    Stopped,
    Failed(AempError, String),
}

impl From<FetchError> for Interrupted {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Stopped => Self::Stopped,
            FetchError::Failed {
                reason,
                url,
                message,
            } => Self::Failed(reason, format!("{url}: {message}")),
        }
    }
}

impl Poller {
    /// Sets up a source: its position file is read (a damaged one fails
    /// the start), its secrets taken from the environment.
    pub fn new(
        config: AempConfig,
        equipment: &[AempEquipment],
        file: PositionFile,
        metrics: Arc<SourceMetrics>,
        max_future_ms: u64,
        claims: Claims,
    ) -> Result<Self, super::AempSetupError> {
        let config = Arc::new(config);
        let epoch = wall_clock_ms() / 1000;
        let position = file.load_or_new(epoch)?;
        // The machines it polled before stay its own.
        let entries = by_key(equipment);
        for (key, machine) in &position.machines {
            if let Some(entry) = polled_as(&entries, key, &config.name) {
                claims.note(&claim_of(entry), &config.name, machine);
            }
        }
        let client = Client::new(config.clone(), metrics.clone())?;
        let map = EquipmentMap::for_source(equipment, &config.name);
        if map.is_empty() {
            tracing::warn!(
                source = %config.name,
                "AEMP source has no [[aemp_equipment]] in the customers file: nothing will be polled"
            );
        }
        Ok(Self {
            config,
            map,
            file,
            position,
            client,
            metrics,
            max_future_ms,
            claims,
        })
    }

    /// Polls until `stop`.
    pub async fn run(mut self, mut intake: Intake, stop: CancellationToken) {
        tracing::info!(
            source = %self.config.name,
            url = %self.config.url,
            machines = self.map.len(),
            position = %self.file.path().display(),
            "AEMP source polling"
        );
        let mut number = 0u64;
        // A new position (no file yet) is stored before anything is
        // polled: its unit epoch is what makes a restart's repeats
        // duplicates. Polled unstored (a full disk) and killed, the
        // restart drew a new epoch and counted the history twice.
        while !self.file.path().exists() {
            let Err(e) = self.file.save(&self.position) else {
                break;
            };
            self.metrics.error(
                AempError::PositionWrite,
                1,
                &format!("{e}; nothing is polled until the new position is stored"),
            );
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.config.poll_interval.min(std::time::Duration::from_secs(5))) => {}
            }
        }
        loop {
            let started = tokio::time::Instant::now();
            match self.poll(&mut intake, &mut number, &stop).await {
                Err(Interrupted::Stopped) => break,
                Err(Interrupted::Failed(reason, detail)) => {
                    self.metrics.caught_up.store(false, Relaxed);
                    self.metrics.error(reason, 1, &detail);
                }
                Ok(()) => {}
            }
            self.metrics.polls.fetch_add(1, Relaxed);
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep_until(started + self.config.poll_interval) => {}
            }
        }
    }

    /// One poll of the whole fleet.
    async fn poll(
        &mut self,
        intake: &mut Intake,
        number: &mut u64,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let (snapshot_ms, equipment) = self.fleet(stop).await?;
        let mut mapped: Vec<(EquipmentHeader, AempEquipment)> = Vec::new();
        let mut unmapped = 0;
        let mut seen = HashSet::new();
        let mut listed = HashSet::new();
        for header in equipment {
            let Some(entry) = self.map.find(&header) else {
                unmapped += 1;
                continue;
            };
            listed.insert(claim_of(entry));
            if self.claims.polls(entry, &self.config.name) && seen.insert(entry.key()) {
                mapped.push((header, entry.clone()));
            }
        }
        self.claims.listed(&self.config.name, &listed);
        self.metrics.unmapped.store(unmapped, Relaxed);
        self.metrics.machines.store(mapped.len() as u64, Relaxed);
        // A snapshot that dates its machines' sections tells the ones that
        // never reported: they are not polled until they do.
        let dated = mapped.iter().any(|(h, _)| h.latest_ms.is_some());
        let mut caught_up = true;
        for (header, entry) in &mapped {
            if dated && header.latest_ms.is_none() {
                continue;
            }
            match self.machine(header, entry, intake, number, stop).await {
                Ok(up_to_date) => caught_up &= up_to_date,
                Err(Interrupted::Stopped) => return Err(Interrupted::Stopped),
                Err(Interrupted::Failed(reason, detail)) => {
                    caught_up = false;
                    self.metrics.error(reason, 1, &detail);
                }
            }
        }
        let newest = mapped
            .iter()
            .filter_map(|(_, e)| self.position.machines.get(&e.key()))
            .filter_map(|m| m.elements.values().map(|p| p.at).max())
            .min();
        let snapshot = snapshot_ms.unwrap_or_else(wall_clock_ms);
        if let Some(newest) = newest {
            self.metrics
                .lag_ms
                .store(snapshot.saturating_sub(newest), Relaxed);
        }
        self.metrics.caught_up.store(caught_up, Relaxed);
        Ok(())
    }

    /// Every page of the fleet snapshot.
    async fn fleet(
        &mut self,
        stop: &CancellationToken,
    ) -> Result<(Option<u64>, Vec<EquipmentHeader>), Interrupted> {
        let mut url = self.url(&["Fleet", "1"]);
        let mut chain = Chain::default();
        let mut equipment = Vec::new();
        let mut snapshot = None;
        for _ in 0..self.config.max_pages {
            chain.urls.insert(url.to_string());
            let body = self.client.get(&url, stop).await?;
            let page = parse::fleet_page(&body)
                .map_err(|e| Interrupted::Failed(AempError::Malformed, format!("{url}: {e}")))?;
            chain.page(&url, page.fingerprint())?;
            snapshot = snapshot.or(page.snapshot_ms);
            equipment.extend(page.equipment);
            match self.next(&url, page.next, &chain.urls)? {
                Some(next) => url = next,
                None => return Ok((snapshot, equipment)),
            }
        }
        Err(endless(&url, self.config.max_pages))
    }

    /// Polls one machine from its position up to now, span by span while
    /// spans are empty; true when it is up to date.
    async fn machine(
        &mut self,
        header: &EquipmentHeader,
        entry: &AempEquipment,
        intake: &mut Intake,
        number: &mut u64,
        stop: &CancellationToken,
    ) -> Result<bool, Interrupted> {
        let key = entry.key();
        let target = Target {
            customer: entry.customer.clone(),
            site: entry.site.clone(),
            device: entry.device.clone(),
        };
        let span = self.config.max_span.as_millis() as u64;
        let delay = self.config.vendor_delay.as_millis() as u64;
        let known = self.position.machines.get(&key);
        let taken = known.and_then(|m| m.elements.values().map(|e| e.at).max());
        let polled_to = known.map_or(0, |m| m.polled_to);
        if header.latest_ms.is_some_and(|latest| {
            taken.is_some_and(|t| latest <= t) || latest.saturating_add(delay) <= polled_to
        }) {
            // The snapshot has nothing newer than what was taken, or
            // nothing the vendor can still be showing late (its newest
            // section may be a location fix, which is not polled).
            return Ok(true);
        }
        for _ in 0..EMPTY_SPANS_PER_POLL {
            let now = wall_clock_ms();
            let mut machine = self
                .position
                .machines
                .get(&key)
                .cloned()
                // New to this source: from where another one left it.
                .or_else(|| self.claims.position_of(entry))
                .unwrap_or_default();
            let history = self.config.history.as_millis() as u64;
            let (asked_from, to) = asked(machine.polled_to, now, history, delay, span);
            let mut readings = Vec::new();
            for element in self.config.elements.clone() {
                let url = self.series_url(header, element, asked_from, to);
                let more = self.series(element, url, readings.len(), stop).await?;
                readings.extend(more);
            }
            let fetched = readings.len();
            machine.polled_to = to;
            self.deliver(entry, &target, machine, readings, intake, number, stop)
                .await?;
            if to >= now {
                return Ok(true);
            }
            if fetched > 0 {
                return Ok(false);
            }
        }
        Ok(false)
    }

    /// Converts one machine's readings, hands them to the intake, waits
    /// until they are durable, and stores the machine's new position.
    #[allow(clippy::too_many_arguments)]
    async fn deliver(
        &mut self,
        entry: &AempEquipment,
        target: &Target,
        mut machine: MachinePosition,
        readings: Vec<(Element, Reading)>,
        intake: &mut Intake,
        number: &mut u64,
        stop: &CancellationToken,
    ) -> Result<(), Interrupted> {
        let key = &entry.key();
        let latest = wall_clock_ms().saturating_add(self.max_future_ms);
        let converted =
            convert::convert(target, self.position.epoch, &mut machine, readings, latest);
        for (refusal, n) in &converted.refused {
            let (reason, what) = match refusal {
                Refusal::CounterBackwards => (
                    AempError::CounterBackwards,
                    "a running total went below its previous value",
                ),
                Refusal::CounterJump => (
                    AempError::CounterJump,
                    "a running total gained more than the time since its previous value allows",
                ),
                Refusal::TooManyFaults => (
                    AempError::TooManyFaults,
                    "more faults at one datetime than a sample carries (max_faults_per_sample)",
                ),
                Refusal::FutureDatetime => (
                    AempError::FutureDatetime,
                    "a datetime lies beyond the clock plus limits.max_future",
                ),
            };
            self.metrics.error(
                reason,
                *n,
                &format!("machine {key} of customer `{}`: {what}", target.customer),
            );
        }
        let topic =
            fleetpulse_proto::telemetry_topic(&target.customer, &target.site, &target.device);
        let mut waiting = 0usize;
        for batch in converted.batches {
            *number += 1;
            let ack = intake
                .acks
                .is_some()
                .then(|| AckToken::new(*number, intake.source));
            let message = Message {
                topic: topic.clone(),
                payload: batch.encode_to_vec().into(),
                ack,
                budget: None,
            };
            tokio::select! {
                _ = stop.cancelled() => return Err(Interrupted::Stopped),
                sent = intake.router.send(message) => if sent.is_err() {
                    return Err(Interrupted::Stopped);
                }
            }
            self.metrics.messages.fetch_add(1, Relaxed);
            waiting += usize::from(ack.is_some());
        }
        if let Some(acks) = &mut intake.acks {
            while waiting > 0 {
                tokio::select! {
                    _ = stop.cancelled() => return Err(Interrupted::Stopped),
                    ack = acks.recv() => match ack {
                        Some(_) => waiting -= 1,
                        None => return Err(Interrupted::Stopped),
                    }
                }
            }
        }
        self.metrics.readings.fetch_add(converted.taken, Relaxed);
        self.claims
            .note(&claim_of(entry), &self.config.name, &machine);
        let before = self.position.machines.insert(key.to_owned(), machine);
        if before.as_ref() != self.position.machines.get(key)
            && let Err(e) = self.file.save(&self.position)
        {
            // Kept in memory: the next save writes it. Until then a crash
            // re-polls, and the repeats are refused as duplicates.
            self.metrics
                .error(AempError::PositionWrite, 1, &e.to_string());
        }
        Ok(())
    }

    /// Every page of one element's time series; `held`: readings of the
    /// machine's other elements already held for this time range.
    async fn series(
        &mut self,
        element: Element,
        mut url: reqwest::Url,
        held: usize,
        stop: &CancellationToken,
    ) -> Result<Vec<(Element, Reading)>, Interrupted> {
        let mut chain = Chain::default();
        let mut readings = Vec::new();
        for _ in 0..self.config.max_pages {
            chain.urls.insert(url.to_string());
            let body = self.client.get(&url, stop).await?;
            let page = parse::series_page(element, &body)
                .map_err(|e| Interrupted::Failed(AempError::Malformed, format!("{url}: {e}")))?;
            chain.page(&url, page.fingerprint())?;
            let max = self.config.max_readings;
            if held + readings.len() + page.readings.len() > max {
                return Err(Interrupted::Failed(
                    AempError::TooLarge,
                    format!(
                        "{url}: more than {max} readings for one machine and time range \
                         (max_readings); a shorter max_span (or vendor_delay, asked again each \
                         poll) asks for fewer"
                    ),
                ));
            }
            self.metrics.error(
                AempError::Malformed,
                page.unreadable,
                &format!("{url}: entries without a readable datetime or value"),
            );
            self.metrics.error(
                AempError::UnknownSeverity,
                page.unknown_severity,
                &format!("{url}: faults with a CodeSeverity not 1-3 or a known word, taken as 2"),
            );
            readings.extend(page.readings.into_iter().map(|r| (element, r)));
            match self.next(&url, page.next, &chain.urls)? {
                Some(next) => url = next,
                None => return Ok(readings),
            }
        }
        Err(endless(&url, self.config.max_pages))
    }

    /// The next page's URL: `href` resolved against the current page; a
    /// page seen before is endless paging.
    fn next(
        &self,
        current: &reqwest::Url,
        href: Option<String>,
        seen: &HashSet<String>,
    ) -> Result<Option<reqwest::Url>, Interrupted> {
        let Some(href) = href else {
            return Ok(None);
        };
        let next = current.join(&href).map_err(|e| {
            Interrupted::Failed(
                AempError::Malformed,
                format!("{current}: next link `{href}`: {e}"),
            )
        })?;
        if seen.contains(next.as_str()) {
            return Err(Interrupted::Failed(
                AempError::EndlessPaging,
                format!("{current}: the next link goes back to {next}"),
            ));
        }
        // The source's credentials go with every request: a page naming
        // another host (or scheme, or port) would be handed them, and its
        // machines merged in as the vendor's. Credentials in the link
        // itself would replace the source's.
        if next.origin() != self.config.url.origin()
            || !next.username().is_empty()
            || next.password().is_some()
        {
            return Err(Interrupted::Failed(
                AempError::Malformed,
                format!(
                    "{current}: the next link leads to another origin ({}) or carries \
                     credentials, not followed: the source's credentials go to {} only",
                    next.origin().ascii_serialization(),
                    self.config.url.origin().ascii_serialization()
                ),
            ));
        }
        Ok(Some(next))
    }

    /// `{url}/{segments...}`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> reqwest::Url {
        let mut url = self.config.url.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A time-series request of `element` for one machine.
    fn series_url(
        &self,
        header: &EquipmentHeader,
        element: Element,
        from: u64,
        to: u64,
    ) -> reqwest::Url {
        let by_pin = match self.config.addressing {
            Addressing::Pin => true,
            Addressing::Id => false,
            Addressing::Auto => header.id.is_empty() || !url_safe(&header.id),
        };
        let (kind, id) = if by_pin && !header.pin.is_empty() {
            ("PIN", header.pin.as_str())
        } else {
            ("ID", header.id.as_str())
        };
        let (from, to) = (parse::url_time(from), parse::url_time(to));
        self.url(&[
            "Fleet",
            "Equipment",
            kind,
            id,
            element.as_str(),
            &from,
            &to,
            "1",
        ])
    }
}

/// What one chain of `next` links has fetched. Besides a URL fetched
/// before, a page whose content repeats an earlier one is a loop (a `next`
/// link that differs only in a query the vendor ignores); pages that
/// differ only in a cursor differ in content and go on.
#[derive(Default)]
struct Chain {
    urls: HashSet<String>,
    pages: HashSet<u64>,
    empty: u32,
}

impl Chain {
    /// Takes the page at `url` with `fingerprint` (`None`: empty).
    fn page(&mut self, url: &reqwest::Url, fingerprint: Option<u64>) -> Result<(), Interrupted> {
        let why = match fingerprint {
            Some(fingerprint) if !self.pages.insert(fingerprint) => {
                "the same content as an earlier page of its chain"
            }
            Some(_) => return Ok(()),
            None => {
                self.empty += 1;
                if self.empty <= EMPTY_PAGES_PER_CHAIN {
                    return Ok(());
                }
                "more empty pages in one chain than a cursor API sends"
            }
        };
        Err(Interrupted::Failed(
            AempError::EndlessPaging,
            format!("{url}: {why}"),
        ))
    }
}

/// An id that survives a URL path as it is (vendors do not decode
/// `%23`).
pub fn url_safe(id: &str) -> bool {
    id.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~'))
}

fn endless(url: &reqwest::Url, pages: u32) -> Interrupted {
    Interrupted::Failed(
        AempError::EndlessPaging,
        format!("{url}: still a next page after {pages} pages (max_pages)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A machine whose entry names no source is polled by one source
    /// only: the one that polled it before (its position file), else the
    /// first to list it. An entry naming its source is always polled.
    #[test]
    fn a_machine_no_entry_names_a_source_for_is_polled_by_one_source() {
        let entry = |source: Option<&str>| AempEquipment {
            source: source.map(Into::into),
            pin: Some("P1".into()),
            serial: None,
            customer: "c".into(),
            site: "s".into(),
            device: "d".into(),
        };
        let claims = Claims::default();
        assert!(claims.polls(&entry(None), "a"));
        assert!(!claims.polls(&entry(None), "b"));
        assert!(
            !claims.polls(&entry(None), "b"),
            "said once, refused always"
        );
        assert!(claims.polls(&entry(None), "a"));
        assert!(claims.polls(&entry(Some("b")), "b"));
        let seeded = Claims::default();
        let left = MachinePosition {
            polled_to: 5,
            ..MachinePosition::default()
        };
        seeded.note(&claim_of(&entry(None)), "b", &left);
        assert!(!seeded.polls(&entry(None), "a"));
        assert!(seeded.polls(&entry(None), "b"));
        // Moved to another account: b's fleet no longer lists it; a takes
        // it over from where b left it.
        seeded.listed("b", &HashSet::new());
        assert!(seeded.polls(&entry(None), "a"));
        assert!(!seeded.polls(&entry(None), "b"));
        assert_eq!(seeded.position_of(&entry(None)), Some(left));
        // An entry naming its source holds the machine for it.
        let named = Claims::default();
        assert!(named.polls(&entry(Some("b")), "b"));
        assert!(!named.polls(&entry(None), "a"));
    }

    /// Two OEMs' machines with the same PIN, each entry naming its source
    /// and its own device, are two machines: each is polled, and neither
    /// starts from where the other stands. A machine whose one entry now
    /// names another source is taken over from where the first left it.
    #[test]
    fn machines_sharing_a_pin_on_two_sources_keep_apart_and_one_moved_is_taken_over() {
        let entry = |source: &str, device: &str| AempEquipment {
            source: Some(source.into()),
            pin: Some("P1".into()),
            serial: None,
            customer: "c".into(),
            site: "s".into(),
            device: device.into(),
        };
        let (a, b) = (entry("a", "d1"), entry("b", "d2"));
        let claims = Claims::default();
        assert!(claims.polls(&a, "a") && claims.polls(&b, "b"));
        let stood = MachinePosition {
            polled_to: 5,
            ..MachinePosition::default()
        };
        claims.note(&claim_of(&a), "a", &stood);
        assert_eq!(claims.position_of(&b), None, "another machine");
        assert_eq!(claims.position_of(&a), Some(stood.clone()));

        // At a start: a's position file names P1. With both entries, it is
        // a's own; with only b's entry for its device, b takes it over.
        let both = [a.clone(), b.clone()];
        let map = by_key(&both);
        assert_eq!(polled_as(&map, "PIN:P1", "a"), Some(&a));
        assert_eq!(polled_as(&map, "PIN:P1", "c"), None, "whose is not known");
        let moved = [entry("b", "d1")];
        let taken = polled_as(&by_key(&moved), "PIN:P1", "a").unwrap();
        let started = Claims::default();
        started.note(&claim_of(taken), "a", &stood);
        assert_eq!(started.position_of(&moved[0]), Some(stood));
    }

    /// Each request asks again for the vendor's delay before where the
    /// last one stopped: a reading shown late, dated there, is asked for
    /// (it was not: every request began where the last ended). A backfill
    /// still walks forward a span at a time.
    #[test]
    fn each_request_asks_again_for_the_vendor_s_delay() {
        const H: u64 = 3_600_000;
        let now = 1_000 * H;
        // A reading dated 30 minutes before the last poll stopped, shown
        // an hour after its date: in the next range.
        let (from, to) = asked(now - H / 6, now, 24 * H, H, 24 * H);
        assert!(from <= now - H / 6 - H / 2 && to == now, "{from}..{to}");
        assert_eq!(
            asked(now - H / 6, now, 24 * H, 0, 24 * H),
            (now - H / 6, now)
        );
        // First poll: the history, and the delay before it.
        assert_eq!(
            asked(0, now, 24 * H, H, 6 * H),
            (now - 25 * H, now - 18 * H)
        );
        // A backfill behind by days: a span forward from where it stopped.
        assert_eq!(
            asked(now - 72 * H, now, 0, H, 24 * H),
            (now - 73 * H, now - 48 * H)
        );
    }

    #[test]
    fn ids_with_url_characters_are_not_url_safe() {
        assert!(url_safe("CAT-0042_a.b"));
        for id in ["CAT#0042", "a/b", "a b", "a?b", "a%b"] {
            assert!(!url_safe(id), "{id}");
        }
    }
}
