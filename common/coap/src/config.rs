//! Transmission parameters (RFC 7252 §4.8) and the values derived from them (§4.8.2).
//!
//! All times are milliseconds. The RFC's 1.5 `ACK_RANDOM_FACTOR` is kept as permille (1500) so
//! that no floating point is needed on small MCUs. Arithmetic saturates, so extreme settings
//! cannot overflow.

use crate::error::ConfigError;

/// Endpoint configuration. `Config::default()` gives the RFC 7252 §4.8 defaults.
///
/// ```
/// let c = qos_coap::Config::default();
/// assert_eq!(c.max_transmit_span_ms(), 45_000);
/// assert_eq!(c.max_transmit_wait_ms(), 93_000);
/// assert_eq!(c.exchange_lifetime_ms(), 247_000);
/// assert_eq!(c.non_lifetime_ms(), 145_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Config {
    /// `ACK_TIMEOUT` (default 2000 ms): the minimum initial retransmission timeout of a
    /// confirmable message.
    pub ack_timeout_ms: u64,
    /// `ACK_RANDOM_FACTOR` in permille (default 1500 = 1.5, at least 1000): the initial timeout
    /// is drawn uniformly from `[ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]`.
    pub ack_random_factor_permille: u32,
    /// `MAX_RETRANSMIT` (default 4): retransmissions of a confirmable message before the
    /// exchange fails.
    pub max_retransmit: u8,
    /// `NSTART` (default 1): outstanding confirmable requests per peer (RFC 7252 §4.7).
    pub nstart: u8,
    /// `MAX_LATENCY` (default 100 000 ms): the longest time a datagram is expected to be in
    /// flight. Only used in the derived lifetimes.
    pub max_latency_ms: u64,
    /// Token length for new requests (default 4 random bytes, 0 to 8).
    pub token_len: u8,
    /// Reject messages with critical options outside [`option::KNOWN`](crate::option::KNOWN)
    /// (RFC 7252 §5.4.1): a CON request gets 4.02 Bad Option, a CON response gets RST, NON
    /// messages are dropped. Default `true`; turn off if the application handles more options.
    pub reject_unknown_critical: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ack_timeout_ms: 2_000,
            ack_random_factor_permille: 1_500,
            max_retransmit: 4,
            nstart: 1,
            max_latency_ms: 100_000,
            token_len: 4,
            reject_unknown_critical: true,
        }
    }
}

impl Config {
    /// Upper bound for `max_retransmit` (the timeout doubles on each retransmission).
    pub const MAX_RETRANSMIT_LIMIT: u8 = 20;

    /// The defaults with the three parameters users set (as configuration files write them:
    /// ACK_RANDOM_FACTOR as a number such as 1.5). Check the result with [`Config::validate`].
    pub fn with_reliability(
        ack_timeout_ms: u64,
        ack_random_factor: f64,
        max_retransmit: u8,
    ) -> Config {
        let permille = ack_random_factor * 1000.0 + 0.5;
        Config {
            ack_timeout_ms,
            // `as` saturates: NaN and negatives become 0 and fail validation.
            ack_random_factor_permille: permille as u32,
            max_retransmit,
            ..Config::default()
        }
    }

    /// Checks the invariants the endpoint relies on.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.ack_timeout_ms == 0 {
            return Err(ConfigError::AckTimeout);
        }
        if self.ack_random_factor_permille < 1000 {
            return Err(ConfigError::RandomFactor);
        }
        if self.max_retransmit > Self::MAX_RETRANSMIT_LIMIT {
            return Err(ConfigError::MaxRetransmit);
        }
        if self.nstart == 0 {
            return Err(ConfigError::Nstart);
        }
        if self.token_len > 8 {
            return Err(ConfigError::TokenLength);
        }
        Ok(())
    }

    /// `ACK_TIMEOUT * ACK_RANDOM_FACTOR`: the largest initial retransmission timeout.
    pub fn max_initial_timeout_ms(&self) -> u64 {
        self.ack_timeout_ms
            .saturating_mul(u64::from(self.ack_random_factor_permille))
            / 1000
    }

    /// `PROCESSING_DELAY` = `ACK_TIMEOUT` (RFC 7252 §4.8.2): the time a node takes to turn
    /// around a confirmable message into an acknowledgement.
    pub fn processing_delay_ms(&self) -> u64 {
        self.ack_timeout_ms
    }

    /// `MAX_TRANSMIT_SPAN` = `ACK_TIMEOUT * (2^MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR`: the
    /// longest time from the first to the last transmission of a confirmable message
    /// (45 s by default).
    pub fn max_transmit_span_ms(&self) -> u64 {
        let n = (1u64 << self.max_retransmit.min(Self::MAX_RETRANSMIT_LIMIT)) - 1;
        self.max_initial_timeout_ms().saturating_mul(n)
    }

    /// `MAX_TRANSMIT_WAIT` = `ACK_TIMEOUT * (2^(MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR`:
    /// the longest time from the first transmission until the sender gives up (93 s by default).
    pub fn max_transmit_wait_ms(&self) -> u64 {
        let n = (1u64 << (self.max_retransmit.min(Self::MAX_RETRANSMIT_LIMIT) + 1)) - 1;
        self.max_initial_timeout_ms().saturating_mul(n)
    }

    /// `MAX_RTT` = `2 * MAX_LATENCY + PROCESSING_DELAY` (202 s by default).
    pub fn max_rtt_ms(&self) -> u64 {
        self.max_latency_ms
            .saturating_mul(2)
            .saturating_add(self.processing_delay_ms())
    }

    /// `EXCHANGE_LIFETIME` = `MAX_TRANSMIT_SPAN + 2 * MAX_LATENCY + PROCESSING_DELAY`
    /// (247 s by default): how long a message ID of a confirmable message is remembered for
    /// deduplication, and how long a client waits for a separate response after an empty ACK.
    pub fn exchange_lifetime_ms(&self) -> u64 {
        self.max_transmit_span_ms()
            .saturating_add(self.max_rtt_ms())
    }

    /// `NON_LIFETIME` = `MAX_TRANSMIT_SPAN + MAX_LATENCY` (145 s by default): how long the
    /// message ID of a non-confirmable message is remembered, and how long a client waits for
    /// the response to a NON request.
    pub fn non_lifetime_ms(&self) -> u64 {
        self.max_transmit_span_ms()
            .saturating_add(self.max_latency_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reliability_from_user_numbers() {
        let c = Config::with_reliability(1000, 1.5, 2);
        assert_eq!(
            (
                c.ack_timeout_ms,
                c.ack_random_factor_permille,
                c.max_retransmit
            ),
            (1000, 1500, 2)
        );
        assert_eq!(
            Config::with_reliability(2000, 1.0004, 4).ack_random_factor_permille,
            1000
        );
        assert!(Config::with_reliability(2000, 0.5, 4).validate().is_err());
        assert!(Config::with_reliability(2000, f64::NAN, 4)
            .validate()
            .is_err());
    }

    #[test]
    fn derived_values_follow_the_rfc() {
        let c = Config::default();
        assert_eq!(c.max_initial_timeout_ms(), 3_000);
        assert_eq!(c.max_rtt_ms(), 202_000);
        let c = Config {
            ack_timeout_ms: 500,
            max_retransmit: 2,
            ack_random_factor_permille: 1000,
            ..Config::default()
        };
        assert_eq!(c.max_transmit_span_ms(), 500 * 3);
        assert_eq!(c.max_transmit_wait_ms(), 500 * 7);
        assert_eq!(c.exchange_lifetime_ms(), 1_500 + 200_000 + 500);
        assert_eq!(c.non_lifetime_ms(), 1_500 + 100_000);
    }

    #[test]
    fn validation() {
        assert_eq!(Config::default().validate(), Ok(()));
        let bad = |f: fn(&mut Config)| {
            let mut c = Config::default();
            f(&mut c);
            c.validate()
        };
        assert_eq!(bad(|c| c.ack_timeout_ms = 0), Err(ConfigError::AckTimeout));
        assert_eq!(
            bad(|c| c.ack_random_factor_permille = 999),
            Err(ConfigError::RandomFactor)
        );
        assert_eq!(
            bad(|c| c.max_retransmit = 21),
            Err(ConfigError::MaxRetransmit)
        );
        assert_eq!(bad(|c| c.nstart = 0), Err(ConfigError::Nstart));
        assert_eq!(bad(|c| c.token_len = 9), Err(ConfigError::TokenLength));
        let huge = Config {
            ack_timeout_ms: u64::MAX,
            max_latency_ms: u64::MAX,
            max_retransmit: 20,
            ..Config::default()
        };
        assert_eq!(
            huge.exchange_lifetime_ms(),
            u64::MAX,
            "saturates instead of overflowing"
        );
    }
}
