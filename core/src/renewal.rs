//! When a signed-in browser renews its token, and when the relay hands out a new one: the same
//! arithmetic on both sides, for any token lifetime the relay allows (30 s to 10 min).
//!
//! The relay renews a token once half its lifetime has passed; the browser asks at a third of
//! the remaining lifetime (never more often than every 5 s), so an active user always gets a new
//! token before the old one expires, and an idle one (no input within the activity window) stops
//! asking and is signed out when the token runs out.

/// The browser never asks more often than this.
pub const MIN_INTERVAL_MS: u64 = 5_000;
/// Input within this long counts as active, for long lifetimes; short ones use two lifetimes.
pub const MAX_ACTIVITY_WINDOW_MS: u64 = 4 * 60 * 1000;

/// Whether the relay renews a token issued at `iat` that expires at `exp` (Unix seconds) now.
pub fn relay_renews(now_s: u64, iat: u64, exp: u64) -> bool {
    now_s >= iat + exp.saturating_sub(iat) / 2
}

/// When the browser should next ask, given the token's expiry it last heard of.
pub fn next_refresh_ms(now_ms: u64, expires_ms: u64) -> u64 {
    now_ms + (expires_ms.saturating_sub(now_ms) / 3).max(MIN_INTERVAL_MS)
}

/// How recent the last input must be for the browser to keep the session alive.
pub fn activity_window_ms(token_ttl_s: u64) -> u64 {
    (token_ttl_s * 2 * 1000).min(MAX_ACTIVITY_WINDOW_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An active user with a token lifetime `ttl` stays signed in: the browser's asks, on the
    /// schedule above, always reach the relay after half the lifetime and before the expiry.
    fn stays_signed_in(ttl: u64) {
        let (mut iat, mut exp) = (0u64, ttl);
        let mut now_ms = 0u64;
        let mut due = next_refresh_ms(now_ms, exp * 1000);
        let mut renewals = 0;
        while now_ms < 10 * ttl * 1000 {
            now_ms = due;
            assert!(now_ms < exp * 1000, "ttl {ttl}: asked at {now_ms} ms, token expired at {exp} s");
            if relay_renews(now_ms / 1000, iat, exp) {
                iat = now_ms / 1000;
                exp = iat + ttl;
                renewals += 1;
            }
            due = next_refresh_ms(now_ms, exp * 1000);
        }
        assert!(renewals >= 9, "ttl {ttl}: {renewals} renewals in 10 lifetimes");
    }

    #[test]
    fn every_allowed_lifetime_is_renewed_before_it_expires() {
        for ttl in [30, 31, 45, 60, 120, 299, 300, 600] {
            stays_signed_in(ttl);
        }
    }

    #[test]
    fn the_relay_renews_at_half_the_lifetime() {
        assert!(!relay_renews(14, 0, 30));
        assert!(relay_renews(15, 0, 30));
        assert!(!relay_renews(1299, 1000, 1600));
        assert!(relay_renews(1300, 1000, 1600));
    }

    #[test]
    fn the_activity_window_follows_short_lifetimes() {
        assert_eq!(activity_window_ms(30), 60_000);
        assert_eq!(activity_window_ms(600), MAX_ACTIVITY_WINDOW_MS);
    }
}
