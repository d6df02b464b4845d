//! Runs the dataflow on W timely workers, each on its own thread, linked to
//! the caller by bounded channels: commands in, results out. A full command
//! channel makes the sender wait (backpressure to ingest); results wait for
//! the consumer the same way. No I/O and no clock: the caller decides when
//! event time advances.
//!
//! Several processes can form one timely cluster ([`Cluster`]): each runs
//! this engine with the same dataflow, timely connects them and exchanges
//! records by device and by customer between them. Each process feeds only
//! its own workers. Every advance is also a watermark *proposal* that a
//! tiny second dataflow broadcasts to every worker of the cluster; the
//! highest proposal is [`Engine::cluster_watermark`], which a process that
//! receives no traffic follows so it does not hold the cluster's windows
//! back. Timely's networking is timely's: no socket is opened here.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::{Config, WorkerConfig};
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::config::{ConfigError, EngineConfig};
use crate::dataflow;
use crate::kpi::Output;
use crate::model::{DeviceBatch, EventTime};
use crate::operators::device_state::route_device;
use crate::operators::route;
use crate::stats::EngineStats;

/// What a worker is told to do, in order.
#[derive(Debug)]
pub enum Command {
    /// Feed a batch. Its first reading must not be older than the last advance.
    Batch(DeviceBatch),
    /// Feed several batches at once: one channel hand-over for a group.
    Batches(Vec<DeviceBatch>),
    /// Event time has provably reached this point (the watermark).
    Advance(EventTime),
}

/// What the engine hands back.
#[derive(Debug)]
pub enum EngineEvent {
    /// Closed windows.
    Records(Vec<Output>),
    /// Worker `worker` has emitted every window ending at or before
    /// `frontier` (`None`: everything, the engine is done).
    Progress {
        /// Worker index within this process (`0..workers`).
        worker: usize,
        /// Lower bound of what the worker may still emit.
        frontier: Option<EventTime>,
        /// Lower bound of the windows and journey records (all but the
        /// portfolio's) it may still emit: at or past `frontier`.
        journeys: Option<EventTime>,
    },
}

/// The engine could not start.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The configuration cannot work.
    #[error("invalid engine configuration: {0}")]
    Config(#[from] ConfigError),
    /// `workers` was 0.
    #[error("the engine needs at least one worker")]
    NoWorkers,
    /// Timely refused to start.
    #[error("timely failed to start: {0}")]
    Start(String),
    /// A worker panicked.
    #[error("engine worker failed: {0}")]
    Worker(String),
    /// The cluster settings cannot work.
    #[error("invalid cluster settings: {0}")]
    Cluster(String),
}

/// A running engine.
pub struct Engine {
    inputs: Vec<mpsc::Sender<Command>>,
    advanced_to: EventTime,
    tick_ms: u64,
    stats: Arc<EngineStats>,
    /// Highest watermark any process of the cluster proposed.
    cluster_watermark: Arc<AtomicU64>,
    /// In a mutex only so that `&Engine` is `Send` (the guards are not `Sync`).
    guards: Mutex<timely::communication::WorkerGuards<()>>,
}

/// One intake lane's part of a running engine: the workers `w` with
/// `w % lanes == lane`, fed and advanced by that lane alone
/// ([`Engine::split`]). Each lane's watermark moves its own workers; timely
/// takes the minimum over workers where windows of different lanes meet.
pub struct EngineInput {
    /// (worker index, its command queue).
    inputs: Vec<(usize, mpsc::Sender<Command>)>,
    workers: usize,
    advanced_to: EventTime,
    tick_ms: u64,
    cluster_watermark: Arc<AtomicU64>,
}

impl EngineInput {
    /// Feeds a group of batches (all owned by this lane's workers, see
    /// [`lane_of`]), one hand-over per worker.
    pub async fn send_all(&self, batches: Vec<DeviceBatch>) -> Result<(), EngineError> {
        if let [(_, input)] = self.inputs.as_slice() {
            return input
                .send(Command::Batches(batches))
                .await
                .map_err(|_| stopped());
        }
        let per_worker = by_worker(batches, self.inputs.len(), |batch| {
            let worker = worker_of(route_device(batch), self.workers);
            (self.inputs.iter())
                .position(|(w, _)| *w == worker)
                .unwrap_or(0)
        });
        for ((_, input), batches) in self.inputs.iter().zip(per_worker) {
            if !batches.is_empty() {
                input
                    .send(Command::Batches(batches))
                    .await
                    .map_err(|_| stopped())?;
            }
        }
        Ok(())
    }

    /// Advances event time on this lane's workers (no-op unless it moves a
    /// tick).
    pub async fn advance(&mut self, watermark: EventTime) -> Result<(), EngineError> {
        let Some(tick) = next_tick(&mut self.advanced_to, watermark, self.tick_ms) else {
            return Ok(());
        };
        for (_, input) in &self.inputs {
            input
                .send(Command::Advance(tick))
                .await
                .map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// The highest watermark any lane of any process has advanced to.
    pub fn cluster_watermark(&self) -> EventTime {
        self.cluster_watermark.load(Relaxed)
    }
}

/// The lane (of `lanes`) whose workers own the device `(customer, device)`
/// when the engine has `workers` workers: computed from the ids alone, so
/// a message can be routed before it is decoded.
pub fn lane_of(customer: &str, device: &str, workers: usize, lanes: usize) -> usize {
    worker_of(route(&(customer, device)), workers) % lanes.max(1)
}

/// The tick `watermark` falls in, if it lies past `advanced_to` (which then
/// moves to it): inputs advance in whole ticks.
fn next_tick(advanced_to: &mut EventTime, watermark: EventTime, tick_ms: u64) -> Option<EventTime> {
    let tick = watermark - watermark % tick_ms;
    (tick > *advanced_to).then(|| {
        *advanced_to = tick;
        tick
    })
}

/// `batches` split into `slots` groups by `slot_of`, each in arrival order.
fn by_worker(
    batches: Vec<DeviceBatch>,
    slots: usize,
    slot_of: impl Fn(&DeviceBatch) -> usize,
) -> Vec<Vec<DeviceBatch>> {
    let mut per_worker: Vec<Vec<DeviceBatch>> = vec![Vec::new(); slots];
    for batch in batches {
        per_worker[slot_of(&batch)].push(batch);
    }
    per_worker
}

fn worker_of(route: u64, workers: usize) -> usize {
    (route % workers.max(1) as u64) as usize
}

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Commands buffered per worker before senders wait.
    pub command_capacity: usize,
    /// Run as one process of a timely cluster; `None`: this process alone.
    pub cluster: Option<Cluster>,
}

/// Timely's cluster mode: `addresses.len()` processes, each with the same
/// number of workers, connected by timely over TCP. Every process must be
/// started with the same addresses and its own index; they wait for each
/// other at start. A cluster does not survive the loss of a member: the
/// others stop, and the whole cluster is started again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// This process's index in `addresses`.
    pub process: usize,
    /// `host:port` of every process, in process order; timely listens on
    /// this process's own entry.
    pub addresses: Vec<String>,
}

impl Cluster {
    /// Checks the settings.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.addresses.is_empty() {
            return Err(EngineError::Cluster("no process addresses".into()));
        }
        if self.process >= self.addresses.len() {
            return Err(EngineError::Cluster(format!(
                "process index {} is not below the number of processes {}",
                self.process,
                self.addresses.len()
            )));
        }
        Ok(())
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            command_capacity: 1024,
            cluster: None,
        }
    }
}

impl Engine {
    /// Starts the workers. Results arrive on `events`; the channel closes
    /// after the last worker finished.
    pub fn start(
        config: EngineConfig,
        options: &EngineOptions,
        events: mpsc::Sender<EngineEvent>,
    ) -> Result<Self, EngineError> {
        config.validate()?;
        if options.workers == 0 {
            return Err(EngineError::NoWorkers);
        }
        let tick_ms = config.tick_ms;
        let config = Arc::new(config);
        let stats = Arc::new(EngineStats::default());
        let (inputs, receivers): (Vec<_>, Vec<_>) = (0..options.workers)
            .map(|_| mpsc::channel(options.command_capacity.max(1)))
            .unzip();
        let receivers = Arc::new(Mutex::new(
            receivers.into_iter().map(Some).collect::<Vec<_>>(),
        ));
        let worker_stats = stats.clone();
        let cluster_watermark = Arc::new(AtomicU64::new(0));
        let worker_watermark = cluster_watermark.clone();
        let (communication, first_worker) = match &options.cluster {
            Some(cluster) if cluster.addresses.len() > 1 => {
                cluster.validate()?;
                (
                    timely::CommunicationConfig::Cluster {
                        threads: options.workers,
                        process: cluster.process,
                        addresses: cluster.addresses.clone(),
                        report: false,
                        zerocopy: false,
                    },
                    cluster.process * options.workers,
                )
            }
            Some(cluster) => {
                cluster.validate()?;
                (timely::CommunicationConfig::Process(options.workers), 0)
            }
            None => (timely::CommunicationConfig::Process(options.workers), 0),
        };
        let timely_config = Config {
            communication,
            worker: WorkerConfig::default(),
        };
        let guards = timely::execute(timely_config, move |worker| {
            let local = worker.index() - first_worker;
            let commands = receivers.lock().expect("receiver list poisoned")[local]
                .take()
                .expect("each worker takes its own receiver once");
            run_worker(
                worker,
                local,
                commands,
                config.clone(),
                worker_stats.clone(),
                worker_watermark.clone(),
                events.clone(),
            );
        })
        .map_err(EngineError::Start)?;
        Ok(Self {
            inputs,
            advanced_to: 0,
            tick_ms,
            stats,
            cluster_watermark,
            guards: Mutex::new(guards),
        })
    }

    /// The highest watermark any process of the cluster has advanced to
    /// (this one included), as far as it has reached this process. Alone,
    /// this process's own.
    pub fn cluster_watermark(&self) -> EventTime {
        self.cluster_watermark.load(Relaxed)
    }

    /// Counters, summed over workers.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Hands the inputs to `lanes` intake lanes: lane `k` gets the workers
    /// `w % lanes == k` (at least one lane, at most one per worker). The
    /// engine keeps only what [`Self::finish`] needs; it finishes once every
    /// lane has dropped its input.
    pub fn split(&mut self, lanes: usize) -> Vec<EngineInput> {
        let workers = self.inputs.len();
        let lanes = lanes.clamp(1, workers.max(1));
        let mut split: Vec<EngineInput> = (0..lanes)
            .map(|_| EngineInput {
                inputs: Vec::new(),
                workers,
                advanced_to: self.advanced_to,
                tick_ms: self.tick_ms,
                cluster_watermark: self.cluster_watermark.clone(),
            })
            .collect();
        for (worker, input) in self.inputs.drain(..).enumerate() {
            split[worker % lanes].inputs.push((worker, input));
        }
        split
    }

    /// Feeds a batch to the worker that owns its device, blocking while that
    /// worker's queue is full (callers outside an async runtime; the service
    /// feeds through [`EngineInput`]).
    pub fn blocking_send(&self, batch: DeviceBatch) -> Result<(), EngineError> {
        let worker = self.worker_of(&batch);
        self.inputs[worker]
            .blocking_send(Command::Batch(batch))
            .map_err(|_| stopped())
    }

    /// [`Self::blocking_send`] for a group: one hand-over per worker.
    pub fn blocking_send_all(&self, batches: Vec<DeviceBatch>) -> Result<(), EngineError> {
        let per_worker = by_worker(batches, self.inputs.len(), |b| self.worker_of(b));
        for (input, batches) in self.inputs.iter().zip(per_worker) {
            if !batches.is_empty() {
                input
                    .blocking_send(Command::Batches(batches))
                    .map_err(|_| stopped())?;
            }
        }
        Ok(())
    }

    /// Advances event time on every worker (no-op unless it moves a tick),
    /// blocking while a queue is full.
    pub fn blocking_advance(&mut self, watermark: EventTime) -> Result<(), EngineError> {
        let Some(tick) = next_tick(&mut self.advanced_to, watermark, self.tick_ms) else {
            return Ok(());
        };
        for input in &self.inputs {
            input
                .blocking_send(Command::Advance(tick))
                .map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Closes the inputs: every open window is emitted, then the workers
    /// stop. Blocks until they have; call it off the async runtime.
    pub fn finish(self) -> Result<(), EngineError> {
        drop(self.inputs);
        let guards = self
            .guards
            .into_inner()
            .map_err(|_| EngineError::Worker("worker guards poisoned".into()))?;
        for result in guards.join() {
            result.map_err(EngineError::Worker)?;
        }
        Ok(())
    }

    /// The input a batch enters by: its device's worker, by (customer,
    /// device) as the device-state exchange routes, so it need not move.
    fn worker_of(&self, batch: &DeviceBatch) -> usize {
        (route_device(batch) % self.inputs.len() as u64) as usize
    }
}

fn stopped() -> EngineError {
    EngineError::Worker("engine workers have stopped".into())
}

/// Most commands taken per step, so a flood of input still lets the
/// dataflow make progress and apply backpressure.
const COMMANDS_PER_STEP: usize = 256;

/// Most batches taken per step (a command that crosses it is taken whole).
/// A step over a flood's whole backlog (a catch-up, a replay) holds it all
/// in its operators at once; steps of about a thousand batches keep what
/// they work on in cache: the engine bench ran 15-20% faster at 1 and at 2
/// workers than with 256 commands of 128-256 batches per step.
const BATCHES_PER_STEP: usize = 1024;

#[allow(clippy::too_many_arguments)]
fn run_worker(
    worker: &mut timely::worker::Worker,
    index: usize,
    mut commands: mpsc::Receiver<Command>,
    config: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
    cluster_watermark: Arc<AtomicU64>,
    events: mpsc::Sender<EngineEvent>,
) {
    let mut input: InputHandle<EventTime, CapacityContainerBuilder<Vec<DeviceBatch>>> =
        InputHandle::new();
    let board = config.journeys.clone();
    let emit_board = board.clone();
    worker.dataflow::<EventTime, _, _>(|scope| {
        let batches = input.to_stream(scope);
        let mut reported = None;
        let built = dataflow::build(batches, config, stats);
        // One operator for both outputs, so a record always reaches the
        // host before the progress that passes its time.
        let emit = built
            .journeys
            .binary_frontier::<_, CapacityContainerBuilder<Vec<()>>, _, _, _, _>(
                built.portfolio,
                Pipeline,
                Pipeline,
                "Emit",
                |_cap, _info| {
                    move |(journeys, journeys_frontier), (portfolio, portfolio_frontier), _out| {
                        // A closed receiver means the host is shutting down;
                        // the results have nowhere to go.
                        let stopped_at = emit_board.stopped_at();
                        let send = |_time, data: &mut Vec<Output>| {
                            if let Some(at) = stopped_at {
                                data.retain(|r| r.kept_at_stop(at));
                            }
                            if !data.is_empty() {
                                let records = std::mem::take(data);
                                let _ = events.blocking_send(EngineEvent::Records(records));
                            }
                        };
                        journeys.for_each(send);
                        portfolio.for_each(send);
                        let journeys = journeys_frontier.frontier().iter().next().copied();
                        let portfolio = portfolio_frontier.frontier().iter().next().copied();
                        let frontier = match (journeys, portfolio) {
                            (Some(j), Some(p)) => Some(j.min(p)),
                            (j, p) => j.or(p),
                        };
                        if reported != Some((frontier, journeys)) {
                            reported = Some((frontier, journeys));
                            let _ = events.blocking_send(EngineEvent::Progress {
                                worker: index,
                                frontier,
                                journeys: journeys.or(frontier),
                            });
                        }
                    }
                },
            );
        drop(emit);
    });
    // Watermark proposals: every worker hears every worker's advances. The
    // timestamps of this dataflow never move; only its data matters.
    let mut proposals: InputHandle<u64, CapacityContainerBuilder<Vec<EventTime>>> =
        InputHandle::new();
    worker.dataflow::<u64, _, _>(|scope| {
        proposals.to_stream(scope).broadcast().sink(
            Pipeline,
            "ClusterWatermark",
            move |(input, _)| {
                input.for_each(|_time, data| {
                    if let Some(max) = data.iter().max() {
                        cluster_watermark.fetch_max(*max, Relaxed);
                    }
                });
            },
        );
    });

    let mut open = true;
    while open {
        let (mut taken, mut batches_taken) = (0, 0);
        while taken < COMMANDS_PER_STEP && batches_taken < BATCHES_PER_STEP {
            match commands.try_recv() {
                Ok(Command::Batch(batch)) => {
                    batches_taken += 1;
                    input.send(batch);
                }
                Ok(Command::Batches(batches)) => {
                    batches_taken += batches.len();
                    for batch in batches {
                        input.send(batch);
                    }
                }
                Ok(Command::Advance(time)) => {
                    if time > *input.time() {
                        input.advance_to(time);
                        // Every worker proposes: each intake lane advances
                        // its own workers.
                        proposals.send(time);
                        proposals.flush();
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    open = false;
                    break;
                }
            }
            taken += 1;
        }
        let park = if taken == 0 {
            Some(Duration::from_millis(1))
        } else {
            // The sightings see what was handed over now, not when the input
            // next moves a tick (a minute of event time): the reading that
            // crosses a devices_dark threshold may not move it. (The exchange
            // to the device state still sends on only as the tick closes.)
            input.flush();
            Some(Duration::ZERO)
        };
        worker.step_or_park(park);
    }
    board.input_closed(*input.time());
    drop(input);
    drop(proposals);
    while worker.step_or_park(None) {}
}
