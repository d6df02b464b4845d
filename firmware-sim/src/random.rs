//! Seeded randomness. Every consumer gets its own ChaCha stream derived from
//! the fleet seed, a domain and an index, so nothing depends on the order in
//! which customers or devices are generated.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// What a random stream is used for; keeps the streams of the same index apart.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Domain {
    /// Customer set-up: profile details, contract, sites.
    Customer = 1,
    /// Device set-up: kind, prior age, utilisation.
    DeviceSetup = 2,
    /// A device's telemetry, sample by sample.
    DeviceTelemetry = 3,
    /// CS activities planted with known effects (`crate::activity`).
    Activity = 4,
    /// Contract decisions: churn or renew (`crate::contract_events`), and
    /// where the renewal falls with [`crate::FleetSpec::renewals`].
    Contract = 5,
}

/// The random stream of `index` in `domain`.
pub(crate) fn rng_for(seed: u64, domain: Domain, index: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((domain as u64) << 56) ^ index);
    rng
}

/// SplitMix64 finaliser: a stateless hash for choices that must not depend on
/// any stream (e.g. which operator a crew rotation starts from).
pub(crate) fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Uniform in `[lo, hi)`.
pub(crate) fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// `true` with probability `p` (clamped to `[0, 1]`).
pub(crate) fn chance(rng: &mut impl Rng, p: f64) -> bool {
    rng.random::<f64>() < p
}

/// `x` rounded down or up at random so that the mean is `x` (`x >= 0`).
pub(crate) fn stochastic_round(rng: &mut impl Rng, x: f64) -> u32 {
    let whole = x.floor();
    let up = chance(rng, x - whole);
    whole as u32 + u32::from(up)
}

/// A Poisson draw for small means (Knuth); the simulator only asks for means
/// below ~5.
pub(crate) fn poisson(rng: &mut impl Rng, mean: f64) -> u32 {
    if mean <= 0.0 {
        return 0;
    }
    let limit = (-mean).exp();
    let mut product = rng.random::<f64>();
    let mut count = 0;
    while product > limit && count < 1000 {
        product *= rng.random::<f64>();
        count += 1;
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_differ_by_domain_and_index() {
        let draw = |domain, index| rng_for(42, domain, index).random::<u64>();
        assert_eq!(draw(Domain::DeviceSetup, 3), draw(Domain::DeviceSetup, 3));
        assert_ne!(draw(Domain::DeviceSetup, 3), draw(Domain::DeviceSetup, 4));
        assert_ne!(
            draw(Domain::DeviceSetup, 3),
            draw(Domain::DeviceTelemetry, 3)
        );
    }

    #[test]
    fn poisson_and_rounding_keep_their_mean() {
        let mut rng = rng_for(1, Domain::Customer, 0);
        let n = 20_000;
        let poisson_mean = (0..n).map(|_| poisson(&mut rng, 2.5) as f64).sum::<f64>() / n as f64;
        assert!((poisson_mean - 2.5).abs() < 0.1, "{poisson_mean}");
        let round_mean = (0..n)
            .map(|_| stochastic_round(&mut rng, 0.3) as f64)
            .sum::<f64>()
            / n as f64;
        assert!((round_mean - 0.3).abs() < 0.03, "{round_mean}");
    }
}
