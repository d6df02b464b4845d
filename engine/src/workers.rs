//! Runs the dataflow on W timely workers, each on its own thread, linked to
//! the caller by bounded channels: commands in, results out. A full command
//! channel makes the sender wait (backpressure to ingest); results wait for
//! the consumer the same way. No I/O and no clock: the caller decides when
//! event time advances.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::InputHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::{Config, WorkerConfig};
use tokio::sync::mpsc::{self, error::TryRecvError};

use crate::config::{ConfigError, EngineConfig};
use crate::dataflow;
use crate::kpi::Output;
use crate::model::{DeviceBatch, EventTime};
use crate::operators::route;
use crate::stats::EngineStats;

/// What a worker is told to do, in order.
#[derive(Debug)]
pub enum Command {
    /// Feed a batch. Its first reading must not be older than the last advance.
    Batch(DeviceBatch),
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
        /// Worker index.
        worker: usize,
        /// Lower bound of what the worker may still emit.
        frontier: Option<EventTime>,
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
}

/// A running engine.
pub struct Engine {
    inputs: Vec<mpsc::Sender<Command>>,
    advanced_to: EventTime,
    tick_ms: u64,
    stats: Arc<EngineStats>,
    /// In a mutex only so that `&Engine` is `Send` (the guards are not `Sync`).
    guards: Mutex<timely::communication::WorkerGuards<()>>,
}

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Commands buffered per worker before senders wait.
    pub command_capacity: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            workers: 1,
            command_capacity: 1024,
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
        let timely_config = Config {
            communication: timely::CommunicationConfig::Process(options.workers),
            worker: WorkerConfig::default(),
        };
        let guards = timely::execute(timely_config, move |worker| {
            let index = worker.index();
            let commands = receivers.lock().expect("receiver list poisoned")[index]
                .take()
                .expect("each worker takes its own receiver once");
            run_worker(
                worker,
                commands,
                config.clone(),
                worker_stats.clone(),
                events.clone(),
            );
        })
        .map_err(EngineError::Start)?;
        Ok(Self {
            inputs,
            advanced_to: 0,
            tick_ms,
            stats,
            guards: Mutex::new(guards),
        })
    }

    /// Number of workers.
    pub fn workers(&self) -> usize {
        self.inputs.len()
    }

    /// Counters, summed over workers.
    pub fn stats(&self) -> Arc<EngineStats> {
        self.stats.clone()
    }

    /// Feeds a batch to the worker that owns its device, waiting while that
    /// worker's queue is full.
    pub async fn send(&self, batch: DeviceBatch) -> Result<(), EngineError> {
        let worker = self.worker_of(&batch);
        self.inputs[worker]
            .send(Command::Batch(batch))
            .await
            .map_err(|_| stopped())
    }

    /// Advances event time on every worker (no-op unless it moves a tick).
    pub async fn advance(&mut self, watermark: EventTime) -> Result<(), EngineError> {
        let tick = watermark - watermark % self.tick_ms;
        if tick <= self.advanced_to {
            return Ok(());
        }
        self.advanced_to = tick;
        for input in &self.inputs {
            input
                .send(Command::Advance(tick))
                .await
                .map_err(|_| stopped())?;
        }
        Ok(())
    }

    /// Blocking [`Self::send`], for callers outside an async runtime.
    pub fn blocking_send(&self, batch: DeviceBatch) -> Result<(), EngineError> {
        let worker = self.worker_of(&batch);
        self.inputs[worker]
            .blocking_send(Command::Batch(batch))
            .map_err(|_| stopped())
    }

    /// Blocking [`Self::advance`], for callers outside an async runtime.
    pub fn blocking_advance(&mut self, watermark: EventTime) -> Result<(), EngineError> {
        let tick = watermark - watermark % self.tick_ms;
        if tick <= self.advanced_to {
            return Ok(());
        }
        self.advanced_to = tick;
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

    fn worker_of(&self, batch: &DeviceBatch) -> usize {
        (route(&*batch.device) % self.inputs.len() as u64) as usize
    }
}

fn stopped() -> EngineError {
    EngineError::Worker("engine workers have stopped".into())
}

/// Most commands taken per step, so a flood of input still lets the
/// dataflow make progress and apply backpressure.
const COMMANDS_PER_STEP: usize = 256;

fn run_worker(
    worker: &mut timely::worker::Worker,
    mut commands: mpsc::Receiver<Command>,
    config: Arc<EngineConfig>,
    stats: Arc<EngineStats>,
    events: mpsc::Sender<EngineEvent>,
) {
    let index = worker.index();
    let mut input: InputHandle<EventTime, CapacityContainerBuilder<Vec<DeviceBatch>>> =
        InputHandle::new();
    worker.dataflow::<EventTime, _, _>(|scope| {
        let batches = input.to_stream(scope);
        let mut reported: Option<Option<EventTime>> = None;
        dataflow::build(batches, config, stats).sink(Pipeline, "Emit", move |(input, frontier)| {
            input.for_each(|_time, data| {
                // A closed receiver means the host is shutting down; the
                // results have nowhere to go.
                let _ = events.blocking_send(EngineEvent::Records(std::mem::take(data)));
            });
            let now = frontier.frontier().iter().next().copied();
            if reported != Some(now) {
                reported = Some(now);
                let _ = events.blocking_send(EngineEvent::Progress {
                    worker: index,
                    frontier: now,
                });
            }
        });
    });

    let mut open = true;
    while open {
        let mut taken = 0;
        while taken < COMMANDS_PER_STEP {
            match commands.try_recv() {
                Ok(Command::Batch(batch)) => input.send(batch),
                Ok(Command::Advance(time)) => {
                    if time > *input.time() {
                        input.advance_to(time);
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
            Some(Duration::ZERO)
        };
        worker.step_or_park(park);
    }
    drop(input);
    while worker.step_or_park(None) {}
}
