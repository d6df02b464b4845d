//! The simulated fleet: customers with their profile, segment, contract,
//! sites, operators and devices. Generating it is cheap; the telemetry is
//! produced lazily by [`Fleet::messages`].

use std::ops::Range;
use std::sync::Arc;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::SimError;
use crate::calendar::{DAY_MS, EventTime};
use crate::device::{Adoption, Counters, DeviceModel};
use crate::ground_truth::GroundTruth;
use crate::machine::MachineKind;
use crate::profile::Profile;
use crate::random::{Domain, chance, mix, rng_for, uniform};
use crate::spec::FleetSpec;
use crate::stream::{Messages, SimMessage};

/// Customer Success coverage model, assigned by ARR rank: the top third of
/// the fleet's customers by ARR is high-touch, the middle third low-touch,
/// the rest tech-touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Segment {
    /// A named CS manager.
    HighTouch,
    /// A pooled CS team.
    LowTouch,
    /// Automated nudges only.
    TechTouch,
}

impl Segment {
    /// Kebab-case name, as in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::HighTouch => "high-touch",
            Self::LowTouch => "low-touch",
            Self::TechTouch => "tech-touch",
        }
    }
}

/// The subscription contract of a customer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contract {
    /// Annual recurring revenue, whole currency units.
    pub arr: u64,
    /// 00:00 UTC of the day the contract began (before the simulation).
    pub start_ms: EventTime,
    /// 00:00 UTC of the renewal day (`start_ms` + 365 days); falls inside a
    /// 90-day simulation for declining-usage customers.
    pub renewal_ms: EventTime,
    /// Machines bought; utilisation's denominator. A slow-onboarding customer
    /// brings only some of them online.
    pub devices_purchased: u32,
    /// Operator seats licensed (at least the operators in the pool).
    pub operator_seats: u32,
}

/// A place where a customer's machines work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// Id, unique within the customer; the `{site}` topic level.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Latitude of the site centre, degrees.
    pub latitude: f64,
    /// Longitude of the site centre, degrees.
    pub longitude: f64,
    /// Altitude, metres.
    pub altitude_m: f64,
}

/// A customer (account) of the manufacturer.
#[derive(Debug, Clone)]
pub struct Customer {
    /// Position in [`Fleet::customers`].
    pub index: usize,
    /// Ascii slug, e.g. `c01-northwind-quarry`; the `{customer}` topic level.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Behaviour over the simulation.
    pub profile: Profile,
    /// CS coverage model (by ARR rank).
    pub segment: Segment,
    /// Subscription contract.
    pub contract: Contract,
    /// 1 to 3 sites.
    pub sites: Vec<Site>,
    /// Indices of the customer's devices in [`Fleet::devices`].
    pub devices: Range<usize>,
    /// The operator pool (badge ids); crews of `operators.len() /
    /// shifts_per_day` operators, one crew per shift.
    pub operators: Vec<String>,
    /// The champion (power user) of a champion-leaves customer: works the
    /// most hours until `turn_day`, never appears from then on.
    pub champion: Option<String>,
    /// The day (counted from [`FleetSpec::start`], day 0 = the first day) on
    /// which the profile's problem begins; `None` for healthy-growing. What
    /// begins that day:
    /// - slow-onboarding: the rollout stalls, no device comes online after it;
    /// - declining-usage: operating hours start falling;
    /// - champion-leaves: the champion's last day was the day before;
    /// - devices-going-dark: devices go silent or are parked within 2 days;
    /// - fault-prone: the fault rate starts rising (15x within 3 days).
    pub turn_day: Option<u32>,
    /// Event time of 00:00 UTC on `turn_day`.
    pub turn_at: Option<EventTime>,
    /// Local time offset of the customer's sites from UTC; shifts follow
    /// local time (day shift 06:00-14:00, late shift 14:00-22:00).
    pub utc_offset_hours: i32,
    /// Shifts worked on weekdays (1 or 2); Saturday has a thin day shift,
    /// Sunday almost nothing.
    pub shifts_per_day: u32,
    /// Operators per crew.
    pub(crate) crew_size: usize,
    /// When each advanced feature is adopted, and how much it is used.
    pub(crate) adoption: [Option<Adoption>; crate::ADVANCED_FEATURES.len()],
    /// Key of the stateless crew rotation.
    pub(crate) rotation_key: u64,
    /// CS touchpoints planted with known effects (`FleetSpec::activities`).
    pub touchpoints: Vec<crate::activity::SimTouchpoint>,
}

/// A connected machine (its telematics unit).
#[derive(Debug, Clone)]
pub struct Device {
    /// Position in [`Fleet::devices`]; also seeds the device's random stream.
    pub index: usize,
    /// Id, e.g. `c01-exc-007`; the `{device}` topic level.
    pub id: String,
    /// Index of the owner in [`Fleet::customers`].
    pub customer: usize,
    /// Index of the device's site in the owner's [`Customer::sites`].
    pub site: usize,
    /// Machine kind.
    pub kind: MachineKind,
    /// Event time of the device's first sample (a power-on heartbeat); `None`
    /// when it never comes online during the simulation.
    pub online_from: Option<EventTime>,
    /// Event time from which the device sends nothing at all (telematics unit
    /// silent); `None` when it reports until the end.
    pub dark_from: Option<EventTime>,
    /// Event time from which the machine is parked: it keeps sending OFF
    /// heartbeats but does no work; `None` when it is never parked.
    pub parked_from: Option<EventTime>,
    /// Event time of the first message of its replacement telematics unit
    /// ([`FleetSpec::unit_replacements`]): sequence back at 1, higher unit
    /// epoch; `None` when the unit is never replaced.
    pub replaced_from: Option<EventTime>,
    /// Its loss of coverage ([`FleetSpec::store_and_forward`]), if any.
    pub outage: Option<crate::coverage::Outage>,
    /// Whether the unit has GNSS (samples carry a location).
    pub has_gnss: bool,
    /// Simulation parameters.
    pub(crate) model: DeviceModel,
}

impl Device {
    /// Topic the device publishes on.
    pub fn topic(&self) -> &str {
        &self.model.topic
    }

    /// Site id (the `{site}` topic level).
    pub fn site_id(&self) -> &str {
        &self.model.site_id
    }

    /// Messages the device sends over the whole simulation.
    pub fn message_count(&self, spec: &FleetSpec) -> u64 {
        let batches = self.model.batches(spec);
        batches.end - batches.start
    }

    /// Samples the device sends over the whole simulation.
    pub fn sample_count(&self, spec: &FleetSpec) -> u64 {
        let per = u64::from(spec.samples_per_batch);
        let batches = self.model.batches(spec);
        let end = (batches.end * per).min(spec.samples_per_device());
        end.saturating_sub(batches.start * per)
    }
}

/// A generated fleet: everything fixed up front, telemetry on demand.
/// Cloning is cheap (the customers and devices are shared).
#[derive(Debug, Clone)]
pub struct Fleet {
    spec: FleetSpec,
    customers: Arc<[Customer]>,
    devices: Arc<[Device]>,
}

impl Fleet {
    /// Generates the fleet a spec describes.
    ///
    /// # Panics
    /// When the spec is invalid (see [`FleetSpec::validate`]); use
    /// [`Fleet::try_generate`] for specs that come from users.
    pub fn generate(spec: &FleetSpec) -> Fleet {
        match Self::try_generate(spec) {
            Ok(fleet) => fleet,
            Err(e) => panic!("{e}"),
        }
    }

    /// Generates the fleet a spec describes, or says which field is invalid.
    pub fn try_generate(spec: &FleetSpec) -> Result<Fleet, SimError> {
        spec.validate()?;
        let mut customers = Vec::with_capacity(spec.customers);
        let mut devices = Vec::with_capacity(spec.devices);
        for index in 0..spec.customers {
            let customer = build_customer(spec, index, &mut devices);
            customers.push(customer);
        }
        assign_segments(&mut customers);
        Ok(Fleet {
            spec: spec.clone(),
            customers: customers.into(),
            devices: devices.into(),
        })
    }

    /// The spec the fleet was generated from.
    pub fn spec(&self) -> &FleetSpec {
        &self.spec
    }

    /// All customers, in index order.
    pub fn customers(&self) -> &[Customer] {
        &self.customers
    }

    /// All devices, grouped by customer.
    pub fn devices(&self) -> &[Device] {
        &self.devices
    }

    /// The customer with id `id`.
    pub fn customer(&self, id: &str) -> Option<&Customer> {
        self.customers.iter().find(|c| c.id == id)
    }

    /// The device with id `id`.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.id == id)
    }

    /// The devices of a customer.
    pub fn devices_of(&self, customer: &Customer) -> &[Device] {
        &self.devices[customer.devices.clone()]
    }

    /// The owner of a device.
    pub fn customer_of(&self, device: &Device) -> &Customer {
        &self.customers[device.customer]
    }

    /// The site of a device.
    pub fn site_of(&self, device: &Device) -> &Site {
        &self.customers[device.customer].sites[device.site]
    }

    /// Messages [`Fleet::messages`] yields, without generating them.
    pub fn message_count(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| d.message_count(&self.spec))
            .sum()
    }

    /// Samples [`Fleet::messages`] yields, without generating them.
    pub fn sample_count(&self) -> u64 {
        self.devices
            .iter()
            .map(|d| d.sample_count(&self.spec))
            .sum()
    }

    /// The telemetry of the whole fleet, generated lazily, ordered by publish
    /// time (the event time of a message's last sample), devices interleaved
    /// within each batch slot in [`Fleet::devices`] order. The iterator owns
    /// a (cheap) clone of the fleet, so it can move to another task.
    pub fn messages(&self) -> Messages {
        Messages::new(self.clone(), true)
    }

    /// The same messages in event-time order, as if no device ever lost
    /// coverage ([`FleetSpec::store_and_forward`]): what a run without the
    /// fault takes in.
    pub fn messages_in_event_time(&self) -> Messages {
        Messages::new(self.clone(), false)
    }

    /// [`Fleet::messages`] encoded with prost: `(topic, payload)` ready to
    /// publish.
    pub fn encoded_messages(&self) -> impl Iterator<Item = (String, Vec<u8>)> + Send + use<> {
        self.messages().map(SimMessage::into_encoded)
    }

    /// The ground truth of the whole stream (every message observed).
    pub fn ground_truth(&self) -> GroundTruth {
        let mut truth = GroundTruth::default();
        for message in self.messages_in_event_time() {
            truth.observe(&message.batch);
        }
        truth
    }
}

/// Where a customer of a given slot is and what it is called.
struct CustomerTemplate {
    name: &'static str,
    slug: &'static str,
    latitude: f64,
    longitude: f64,
    altitude_m: f64,
    utc_offset_hours: i32,
}

const fn template(
    name: &'static str,
    slug: &'static str,
    latitude: f64,
    longitude: f64,
    altitude_m: f64,
    utc_offset_hours: i32,
) -> CustomerTemplate {
    CustomerTemplate {
        name,
        slug,
        latitude,
        longitude,
        altitude_m,
        utc_offset_hours,
    }
}

const CUSTOMERS: [CustomerTemplate; 12] = [
    template(
        "Northwind Quarry",
        "northwind-quarry",
        53.38,
        -1.47,
        150.0,
        0,
    ),
    template(
        "Bluestone Aggregates",
        "bluestone-aggregates",
        50.45,
        3.95,
        90.0,
        1,
    ),
    template("Redrock Mining", "redrock-mining", -30.75, 121.47, 370.0, 8),
    template(
        "Cascade Earthworks",
        "cascade-earthworks",
        47.61,
        -122.33,
        50.0,
        -8,
    ),
    template(
        "Granite Ridge Construction",
        "granite-ridge",
        39.74,
        -104.99,
        1600.0,
        -7,
    ),
    template("Fjordline Civil", "fjordline-civil", 60.39, 5.32, 40.0, 1),
    template("Sierra Haulage", "sierra-haulage", 40.42, -3.70, 650.0, 1),
    template(
        "Lakeshore Excavation",
        "lakeshore-excavation",
        43.65,
        -79.38,
        80.0,
        -5,
    ),
    template(
        "Alpine Tunnelling",
        "alpine-tunnelling",
        47.26,
        11.39,
        570.0,
        1,
    ),
    template(
        "Delta Dredge and Fill",
        "delta-dredge",
        29.95,
        -90.07,
        2.0,
        -6,
    ),
    template(
        "Highveld Minerals",
        "highveld-minerals",
        -26.20,
        28.05,
        1750.0,
        2,
    ),
    template("Baltic Port Services", "baltic-port", 54.35, 18.65, 10.0, 1),
];

const SITES: [(&str, &str); 8] = [
    ("north-pit", "North Pit"),
    ("south-pit", "South Pit"),
    ("east-yard", "East Yard"),
    ("west-works", "West Works"),
    ("river-site", "River Site"),
    ("ridge-quarry", "Ridge Quarry"),
    ("harbour-depot", "Harbour Depot"),
    ("main-yard", "Main Yard"),
];

const FIRMWARE: [&str; 3] = ["4.2.1", "4.2.3", "4.3.0"];

/// Firmware an over-the-air update installs on part of the fleet.
pub(crate) const FIRMWARE_UPDATE: &str = "4.4.0";

fn build_customer(spec: &FleetSpec, index: usize, devices: &mut Vec<Device>) -> Customer {
    let mut rng = rng_for(spec.seed, Domain::Customer, index as u64);
    let profile = Profile::for_customer(index);
    let template = &CUSTOMERS[index % CUSTOMERS.len()];
    let round = index / CUSTOMERS.len();
    let number = format!("c{:02}", index + 1);
    let id = format!("{number}-{}", template.slug);
    let name = match round {
        0 => template.name.to_owned(),
        r => format!("{} {}", template.name, r + 1),
    };
    let n = spec.devices_of_customer(index);
    let days = f64::from(spec.days);

    let turn_day = profile.turn_fraction().map(|(lo, hi)| {
        let day = (uniform(&mut rng, lo, hi) * days).round() as u32;
        day.min(spec.days - 1).max(u32::from(spec.days > 1))
    });
    let turn_at = turn_day.map(|d| spec.start + u64::from(d) * DAY_MS);
    let turn = turn_day.map_or(f64::INFINITY, f64::from);

    let shifts_per_day = if chance(&mut rng, 0.7) { 2 } else { 1 };
    let sites = build_sites(&mut rng, template, n);
    let crew_size = (n as f64 * 1.4).ceil() as usize + 1;
    let operators: Vec<String> = (0..crew_size * shifts_per_day as usize)
        .map(|j| format!("{number}-op-{:03}", j + 1))
        .collect();
    let champion = (profile == Profile::ChampionLeaves).then(|| operators[0].clone());
    let adoption = profile.adoption_plan().map(|plan| {
        plan.map(|(at, share)| Adoption {
            day: if at > 0.0 {
                at * days + uniform(&mut rng, 0.0, 3.0)
            } else {
                0.0
            },
            share: (share * uniform(&mut rng, 0.85, 1.15)).min(0.95),
        })
    });

    let first = devices.len();
    let activation = plan_activation(spec, profile, n, turn, &mut rng);
    let owner = Owner {
        index,
        number: &number,
        id: &id,
        profile,
        sites: &sites,
    };
    let mut list_price = 0;
    for (local, window) in activation.into_iter().enumerate() {
        let device = build_device(spec, &owner, local, first + local, window);
        list_price += device.kind.list_price();
        devices.push(device);
    }

    let discount = uniform(&mut rng, 0.8, 1.0);
    let (age_lo, age_hi) = profile.contract_age_days();
    let age_days = u64::from(rng.random_range(age_lo..=age_hi));
    let contract_start = if spec.renewals {
        // The second draw of the contract stream (the first decides the
        // renewal, `crate::contract_events`).
        let mut draws = rng_for(spec.seed, Domain::Contract, index as u64);
        let _decision = draws.random::<f64>();
        let renewal_day = (uniform(&mut draws, 0.75, 0.95) * days).round() as u64;
        (spec.start + renewal_day * DAY_MS).saturating_sub(365 * DAY_MS)
    } else {
        spec.start.saturating_sub(age_days * DAY_MS)
    };
    let contract = Contract {
        arr: ((list_price as f64 * discount) / 100.0).round() as u64 * 100,
        start_ms: contract_start,
        renewal_ms: contract_start + 365 * DAY_MS,
        devices_purchased: n as u32,
        operator_seats: (operators.len() + rng.random_range(0..=4)) as u32,
    };

    Customer {
        index,
        id,
        name,
        profile,
        segment: Segment::TechTouch,
        contract,
        sites,
        devices: first..devices.len(),
        operators,
        champion,
        turn_day,
        turn_at,
        utc_offset_hours: template.utc_offset_hours,
        shifts_per_day,
        crew_size,
        adoption,
        rotation_key: mix(spec.seed ^ mix(index as u64)),
        touchpoints: crate::activity::plan(spec, index),
    }
}

fn build_sites(rng: &mut ChaCha8Rng, template: &CustomerTemplate, devices: usize) -> Vec<Site> {
    let count = rng.random_range(1..=3).min(devices);
    let mut names = SITES;
    // Partial Fisher-Yates: distinct site names.
    for i in 0..count {
        let j = rng.random_range(i..names.len());
        names.swap(i, j);
    }
    names[..count]
        .iter()
        .map(|(id, name)| Site {
            id: (*id).to_owned(),
            name: format!("{} {name}", template.name),
            latitude: template.latitude + uniform(rng, -0.3, 0.3),
            longitude: template.longitude + uniform(rng, -0.3, 0.3),
            altitude_m: (template.altitude_m + uniform(rng, -40.0, 40.0))
                .max(0.0)
                .round(),
        })
        .collect()
}

/// When a device reports, in batch slots: from `online` (if ever) until
/// `dark` (exclusive), parked (OFF heartbeats only) from `parked`.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    online: Option<u64>,
    dark: Option<u64>,
    parked: Option<u64>,
}

/// Decides, per profile, when each of a customer's devices comes online,
/// goes dark or is parked.
fn plan_activation(
    spec: &FleetSpec,
    profile: Profile,
    n: usize,
    turn: f64,
    rng: &mut ChaCha8Rng,
) -> Vec<Window> {
    let days = f64::from(spec.days);
    let at_day = |day: f64| spec.batch_at_or_after(spec.start + (day * DAY_MS as f64) as u64);
    let mut windows = vec![Window::default(); n];
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = rng.random_range(0..=i);
        order.swap(i, j);
    }
    match profile {
        Profile::HealthyGrowing => {
            for w in &mut windows {
                w.online = Some(at_day(uniform(rng, 0.0, 3.0_f64.min(days))));
            }
        }
        Profile::SlowOnboarding => {
            let never = share_of(n, uniform(rng, 0.25, 0.4), 1);
            let pilot = share_of(n - never, 0.2, 1);
            for (rank, &local) in order.iter().enumerate() {
                windows[local].online = if rank < never {
                    None
                } else if rank < never + pilot {
                    Some(at_day(uniform(rng, 0.0, 5.0_f64.min(turn))))
                } else {
                    Some(at_day(uniform(rng, 5.0_f64.min(turn), turn)))
                };
            }
        }
        _ => {
            for w in &mut windows {
                w.online = Some(0);
            }
        }
    }
    if profile == Profile::DevicesGoingDark && spec.batches_per_device() > 1 {
        let dark = share_of(n, uniform(rng, 0.3, 0.4), 1);
        let parked = share_of(n - dark, uniform(rng, 0.25, 0.35), usize::from(n >= 3));
        for (rank, &local) in order.iter().enumerate() {
            let from = at_day(turn + uniform(rng, 0.0, 2.0)).max(1);
            if rank < dark {
                windows[local].dark = Some(from);
            } else if rank < dark + parked {
                windows[local].parked = Some(from);
            }
        }
    }
    windows
}

/// `share` of `n`, rounded, at least `min` and leaving at least one over.
fn share_of(n: usize, share: f64, min: usize) -> usize {
    if n < 2 {
        return 0;
    }
    ((n as f64 * share).round() as usize).max(min).min(n - 1)
}

/// What a device takes from its owner.
struct Owner<'a> {
    index: usize,
    number: &'a str,
    id: &'a str,
    profile: Profile,
    sites: &'a [Site],
}

fn build_device(
    spec: &FleetSpec,
    owner: &Owner<'_>,
    local: usize,
    index: usize,
    window: Window,
) -> Device {
    let Owner {
        number,
        profile,
        sites,
        ..
    } = *owner;
    let mut rng = rng_for(spec.seed, Domain::DeviceSetup, index as u64);
    let mut pick = rng.random::<f64>();
    let mut kind = MachineKind::Excavator;
    for (k, share) in MachineKind::MIX {
        kind = k;
        if pick < share {
            break;
        }
        pick -= share;
    }
    let site = local % sites.len();
    let id = format!("{number}-{}-{:03}", kind.code(), local + 1);
    let champion_machine = profile == Profile::ChampionLeaves && local == 0;
    let utilisation = if champion_machine {
        0.97
    } else {
        uniform(&mut rng, 0.6, 0.92)
    };
    let operating_hours = if profile.is_new_customer() {
        uniform(&mut rng, 2.0, 60.0)
    } else {
        uniform(&mut rng, 300.0, 9_000.0)
    };
    let prior = Counters {
        operating_hours,
        idle_hours: operating_hours * uniform(&mut rng, 0.2, 0.35),
        fuel_litres: operating_hours
            * (0.7 * kind.working_fuel_lph() + 0.3 * kind.idle_fuel_lph())
            * uniform(&mut rng, 0.85, 1.05),
    };
    let has_gnss = chance(&mut rng, 0.85);
    let s = &sites[site];
    let location = has_gnss.then(|| {
        (
            s.latitude + uniform(&mut rng, -0.01, 0.01),
            s.longitude + uniform(&mut rng, -0.01, 0.01),
            s.altitude_m + uniform(&mut rng, -5.0, 5.0).round(),
        )
    });
    let firmware = FIRMWARE[rng.random_range(0..FIRMWARE.len())];
    let update_day = f64::from(spec.days) * uniform(&mut rng, 0.6, 0.8);
    let firmware_update = chance(&mut rng, 0.6)
        .then(|| spec.batch_at_or_after(spec.start + (update_day * DAY_MS as f64) as u64));
    let batch_time = |b: Option<u64>| b.map(|b| spec.batch_time(b));
    let online_day = window.online.map_or(0.0, |b| {
        (spec.batch_time(b) - spec.start) as f64 / DAY_MS as f64
    });
    // The unit was installed (its sequence started) a day before the
    // machine first reports.
    let unit_epoch = (window.online.map_or(spec.start, |b| spec.batch_time(b)) - DAY_MS) / 1000;
    let replaced = replaced_unit(spec, index, &window);
    Device {
        index,
        customer: owner.index,
        site,
        kind,
        online_from: batch_time(window.online),
        dark_from: batch_time(window.dark),
        parked_from: batch_time(window.parked),
        replaced_from: batch_time(replaced.map(|(slot, _)| slot)),
        outage: window.online.and_then(|online| {
            let end = window
                .dark
                .unwrap_or(u64::MAX)
                .min(spec.batches_per_device());
            crate::coverage::outage_of(spec, index, online, end)
        }),
        has_gnss,
        model: DeviceModel {
            topic: fleetpulse_proto::telemetry_topic(owner.id, &s.id, &id),
            customer_id: owner.id.to_owned(),
            site_id: s.id.clone(),
            local_index: local,
            kind,
            utilisation,
            prior,
            location,
            firmware,
            firmware_update: firmware_update.unwrap_or(u64::MAX),
            online: window.online,
            online_day,
            dark: window.dark.unwrap_or(u64::MAX),
            parked: window.parked.unwrap_or(u64::MAX),
            champion_machine,
            unit_epoch,
            replaced,
        },
        id,
    }
}

/// Whether device `index` gets a replacement unit ([`FleetSpec::unit_replacements`],
/// spread evenly over the fleet) and from which batch slot: halfway through
/// its time online, when it is online for at least two slots.
fn replaced_unit(spec: &FleetSpec, index: usize, window: &Window) -> Option<(u64, bool)> {
    let n = spec.unit_replacements.min(spec.devices);
    if n == 0 {
        return None;
    }
    // Device indices i * devices / n for i in 0..n.
    let i = (index * n).div_ceil(spec.devices);
    if i >= n || i * spec.devices / n != index {
        return None;
    }
    let online = window.online?;
    let end = window
        .dark
        .unwrap_or(u64::MAX)
        .min(spec.batches_per_device());
    (end > online + 1).then(|| (online + (end - online) / 2, i % 2 == 1))
}

/// Ranks customers by ARR (ties by index) and assigns segments by thirds.
fn assign_segments(customers: &mut [Customer]) {
    let mut rank: Vec<usize> = (0..customers.len()).collect();
    rank.sort_by_key(|&i| (std::cmp::Reverse(customers[i].contract.arr), i));
    let n = customers.len();
    for (r, &i) in rank.iter().enumerate() {
        customers[i].segment = if r < n.div_ceil(3) {
            Segment::HighTouch
        } else if r < (2 * n).div_ceil(3) {
            Segment::LowTouch
        } else {
            Segment::TechTouch
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        Fleet::generate(&FleetSpec {
            days: 60,
            ..FleetSpec::default()
        })
    }

    #[test]
    fn customers_have_ids_profiles_segments_and_contracts() {
        let fleet = fleet();
        assert_eq!(fleet.customers().len(), 6);
        assert_eq!(fleet.devices().len(), 300);
        let first = &fleet.customers()[0];
        assert_eq!(first.id, "c01-northwind-quarry");
        for (i, c) in fleet.customers().iter().enumerate() {
            assert_eq!(c.profile, Profile::for_customer(i));
            assert_eq!(c.turn_day.is_some(), c.profile.is_at_risk(), "{}", c.id);
            assert!(c.id.is_ascii() && !c.id.contains(' '));
            assert!((1..=3).contains(&c.sites.len()));
            assert_eq!(c.contract.devices_purchased as usize, c.devices.len());
            assert!(c.contract.operator_seats as usize >= c.operators.len());
            assert!(c.contract.start_ms < fleet.spec().start);
            assert!(c.contract.renewal_ms > c.contract.start_ms);
            for d in fleet.devices_of(c) {
                assert!(d.id.starts_with(&c.id[..3]), "{}", d.id);
                assert!(d.topic().starts_with(&format!("fleet/{}/", c.id)));
            }
        }
        let segments: Vec<_> = fleet.customers().iter().map(|c| c.segment).collect();
        for s in [Segment::HighTouch, Segment::LowTouch, Segment::TechTouch] {
            assert_eq!(
                segments.iter().filter(|&&x| x == s).count(),
                2,
                "{segments:?}"
            );
        }
        let high = fleet
            .customers()
            .iter()
            .filter(|c| c.segment == Segment::HighTouch);
        let tech = fleet
            .customers()
            .iter()
            .filter(|c| c.segment == Segment::TechTouch);
        assert!(high.map(|c| c.contract.arr).min() > tech.map(|c| c.contract.arr).max());
    }

    #[test]
    fn device_ids_are_unique_and_well_formed() {
        let fleet = fleet();
        let mut ids: Vec<_> = fleet.devices().iter().map(|d| d.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 300);
        assert!(fleet.device("c01-exc-001").is_some() || fleet.devices()[0].id.starts_with("c01-"));
        for d in fleet.devices() {
            let parts: Vec<_> = d.id.split('-').collect();
            assert_eq!(parts.len(), 3, "{}", d.id);
            assert_eq!(parts[1], d.kind.code());
            assert_eq!(parts[2].len(), 3);
        }
    }

    #[test]
    fn slow_onboarding_never_brings_every_device_online() {
        let fleet = fleet();
        let c = &fleet.customers()[1];
        assert_eq!(c.profile, Profile::SlowOnboarding);
        let online = fleet
            .devices_of(c)
            .iter()
            .filter(|d| d.online_from.is_some())
            .count();
        assert!(online < c.contract.devices_purchased as usize);
        assert!(online > 0);
        let turn_at = c.turn_at.unwrap();
        assert!(
            fleet
                .devices_of(c)
                .iter()
                .filter_map(|d| d.online_from)
                .all(|t| t <= turn_at)
        );
    }

    #[test]
    fn counts_match_without_generating() {
        let spec = FleetSpec {
            customers: 6,
            devices: 30,
            days: 5,
            ..FleetSpec::default()
        };
        let fleet = Fleet::generate(&spec);
        let (mut messages, mut samples) = (0, 0);
        for m in fleet.messages() {
            messages += 1;
            samples += m.batch.samples.len() as u64;
        }
        assert_eq!(fleet.message_count(), messages);
        assert_eq!(fleet.sample_count(), samples);
    }
}
