//! Pure freshness decisions for cached index entries.

/// What to do with a cached entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve it.
    Fresh,
    /// The upstream failed recently: serve it as stale without asking again yet.
    StaleBackoff,
    /// Ask the upstream (conditionally).
    Expired,
}

/// Decides an entry's freshness. Times in unix milliseconds; `ttl_ms` is `index_ttl` (or
/// `negative_ttl` for a cached 404); `stale_until` is set after an upstream failure.
pub fn freshness(fetched_at: u64, stale_until: u64, now: u64, ttl_ms: u64) -> Freshness {
    if now < fetched_at.saturating_add(ttl_ms) {
        Freshness::Fresh
    } else if now < stale_until {
        Freshness::StaleBackoff
    } else {
        Freshness::Expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn table() {
        assert_eq!(freshness(1000, 0, 1500, 1000), Freshness::Fresh);
        assert_eq!(freshness(1000, 0, 2000, 1000), Freshness::Expired);
        assert_eq!(freshness(1000, 2500, 2000, 1000), Freshness::StaleBackoff);
        assert_eq!(freshness(1000, 2500, 2500, 1000), Freshness::Expired);
        assert_eq!(freshness(u64::MAX, 0, 0, u64::MAX), Freshness::Fresh);
    }

    proptest! {
        #[test]
        fn fresh_iff_within_ttl(f in 0u64..1<<40, d in 0u64..1<<20, ttl in 0u64..1<<20) {
            let now = f + d;
            prop_assert_eq!(freshness(f, 0, now, ttl) == Freshness::Fresh, d < ttl);
        }
    }
}
