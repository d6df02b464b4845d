//! Bounded fuzzing of topic parsing, decoding and validation on stable Rust:
//! the checks of the cargo-fuzz target (`proto/fuzz/src/check.rs`, included
//! here) run on mutations of real simulator messages (`proto/fuzz/seeds/`)
//! for a fixed time: bit flips, interesting bytes, cuts, inserts, copies,
//! splices of two messages and broken topics, stacked a few at a time.
//!
//! Deterministic: the same seed gives the same inputs in the same order;
//! only how many run depends on the machine. Knobs:
//!
//! - `FLEETPULSE_FUZZ_SECONDS` (default 10): how long to run;
//! - `FLEETPULSE_FUZZ_SEED` (default fixed): the random seed.
//!
//! A failing input is printed (hex) and written to
//! `proto/fuzz/artifacts/stable-<seed>-<iteration>.bin`, which
//! `cargo +nightly fuzz run decode_and_validate <file>` replays. For
//! coverage-guided fuzzing over hours see `proto/fuzz/README.md`.

#[path = "../fuzz/src/check.rs"]
mod check;

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetpulse_proto::{Limits, TopicIds, decode_and_validate};

const DEFAULT_SECONDS: u64 = 10;
const DEFAULT_SEED: u64 = 0x5eed_f1ee_7000_0001;
/// Longest input the mutator builds.
const MAX_INPUT: usize = 64 * 1024;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

fn seeds() -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = fs::read_dir(fuzz_dir().join("seeds"))
        .expect("proto/fuzz/seeds/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, fs::read(&p).unwrap())
        })
        .collect();
    seeds.sort();
    seeds
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

#[test]
fn seeds_are_real_accepted_messages() {
    let seeds = seeds();
    assert!(seeds.len() >= 8, "only {} seeds", seeds.len());
    for (name, input) in &seeds {
        let (topic, payload) = check::split(input);
        let ids = TopicIds::parse(&topic).unwrap_or_else(|e| panic!("{name}: {e}"));
        decode_and_validate(&ids, payload, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn mutated_messages_never_break_the_checks() {
    let seconds = env_u64("FLEETPULSE_FUZZ_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_u64("FLEETPULSE_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let seeds: Vec<Vec<u8>> = seeds().into_iter().map(|(_, input)| input).collect();
    let mut rng = Rng::new(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut last = seeds[0].clone();
    let mut iterations = 0u64;
    // Quiet the default panic message: a failure is reported below, once.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let failure = loop {
        if Instant::now() >= deadline {
            break None;
        }
        // Half the time start from a seed, otherwise keep mutating the last
        // input: a crude walk away from valid messages.
        let mut input = if rng.below(2) == 0 {
            seeds[rng.below(seeds.len())].clone()
        } else {
            last
        };
        for _ in 0..=rng.below(4) {
            mutate(&mut input, &seeds, &mut rng);
        }
        iterations += 1;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check::check(&input))) {
            break Some((input, panic));
        }
        last = input;
    };
    std::panic::set_hook(hook);
    if let Some((input, panic)) = failure {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        let artifacts = fuzz_dir().join("artifacts");
        let file = artifacts.join(format!("stable-{seed:x}-{iterations}.bin"));
        let saved = fs::create_dir_all(&artifacts)
            .and_then(|()| fs::write(&file, &input))
            .map(|()| file.display().to_string())
            .unwrap_or_else(|e| format!("(not saved: {e})"));
        panic!(
            "iteration {iterations} (seed {seed:#x}) failed: {message}\n\
             input saved to {saved}\ninput (hex): {}",
            input.iter().map(|b| format!("{b:02x}")).collect::<String>()
        );
    }
    eprintln!("{iterations} inputs in {seconds} s (seed {seed:#x}), no failure");
    assert!(iterations > 0);
}

/// One random change of `input`.
fn mutate(input: &mut Vec<u8>, seeds: &[Vec<u8>], rng: &mut Rng) {
    const INTERESTING: [u8; 10] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'/', b'+', b'#', 0x08, 0x0a];
    let len = input.len();
    match rng.below(12) {
        // Flip one bit.
        0 | 1 if len > 0 => {
            let at = rng.below(len);
            input[at] ^= 1 << rng.below(8);
        }
        // Set a byte to a value that often matters to a parser.
        2 if len > 0 => {
            let at = rng.below(len);
            input[at] = INTERESTING[rng.below(INTERESTING.len())];
        }
        // Set a byte to anything.
        3 if len > 0 => {
            let at = rng.below(len);
            input[at] = rng.below(256) as u8;
        }
        // Cut the end off.
        4 if len > 0 => input.truncate(rng.below(len)),
        // Remove a range.
        5 if len > 1 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(16)).min(len);
            input.drain(start..end);
        }
        // Insert random bytes.
        6 => {
            let at = rng.below(len + 1);
            let bytes: Vec<u8> = (0..=rng.below(8)).map(|_| rng.below(256) as u8).collect();
            input.splice(at..at, bytes);
        }
        // Copy a range of the input elsewhere (repeats fields).
        7 if len > 1 => {
            let start = rng.below(len);
            let end = (start + 1 + rng.below(64)).min(len);
            let chunk = input[start..end].to_vec();
            let at = rng.below(len + 1);
            input.splice(at..at, chunk);
        }
        // Splice: this input's start with another message's end.
        8 => {
            let other = &seeds[rng.below(seeds.len())];
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        // Write a varint-looking run: length and tag fields overflow.
        9 if len > 0 => {
            let at = rng.below(len);
            let run = 1 + rng.below(10);
            for byte in &mut input[at..(at + run).min(len)] {
                *byte |= 0x80;
            }
        }
        // Break the topic: a level becomes empty, a wildcard or long, or one
        // more level appears.
        10 | 11 => {
            let (topic, payload) = check::split(input);
            let mut levels: Vec<String> = topic.split('/').map(str::to_owned).collect();
            let at = rng.below(levels.len());
            match rng.below(5) {
                0 => levels[at].clear(),
                1 => levels[at] = "+".into(),
                2 => levels[at] = "#".into(),
                3 => levels[at] = "x".repeat(60 + rng.below(10)),
                _ => levels.insert(at, "extra".into()),
            }
            *input = check::join(&levels.join("/"), payload);
        }
        _ => {}
    }
    input.truncate(MAX_INPUT);
}

/// xorshift64*: small, fast and the same everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform enough in `0..n` (n > 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}
