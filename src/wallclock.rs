//! `Instant`s stored as wall-clock milliseconds, so that a cooldown or a trigger window that was
//! running when the process stopped goes on running after it restarts. An `Instant` means nothing
//! in another process; its distance from "now" does: it is written as `now_wall - (now - t)` and
//! read back as `now - (now_wall - stored)`.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `t` as Unix milliseconds.
pub fn to_ms(t: Instant) -> u64 {
    now_ms().saturating_sub(Instant::now().saturating_duration_since(t).as_millis() as u64)
}

/// Unix milliseconds as an `Instant` of this process (never after now; as far back as the
/// platform allows).
pub fn from_ms(ms: u64) -> Instant {
    let ago = Duration::from_millis(now_ms().saturating_sub(ms));
    let now = Instant::now();
    now.checked_sub(ago).unwrap_or_else(|| {
        // Further back than this process's clock reaches: the earliest it can say.
        let mut back = ago;
        loop {
            back /= 2;
            if let Some(t) = now.checked_sub(back) {
                return t;
            }
        }
    })
}

pub fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
    to_ms(*t).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
    u64::deserialize(d).map(from_ms)
}

/// The same for `Option<Instant>`.
pub mod option {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        t.map(to_ms).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        Option::<u64>::deserialize(d).map(|t| t.map(from_ms))
    }
}

/// `(key, Instant)` pairs, e.g. a trigger's recent fingerprints.
pub mod keyed {
    use std::collections::VecDeque;

    use super::*;

    pub fn serialize<S: Serializer>(v: &VecDeque<(u64, Instant)>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|&(k, t)| (k, to_ms(t))))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<VecDeque<(u64, Instant)>, D::Error> {
        let v = Vec::<(u64, u64)>::deserialize(d)?;
        Ok(v.into_iter().map(|(k, t)| (k, from_ms(t))).collect())
    }
}

/// `Option<(Instant, count)>`: since when something has held, and for how many turns.
pub mod since {
    use super::*;

    pub fn serialize<S: Serializer>(v: &Option<(Instant, u32)>, s: S) -> Result<S::Ok, S::Error> {
        v.map(|(t, n)| (to_ms(t), n)).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<(Instant, u32)>, D::Error> {
        Ok(Option::<(u64, u32)>::deserialize(d)?.map(|(t, n)| (from_ms(t), n)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_survives_the_round_trip_within_a_few_ms() {
        let t = Instant::now() - Duration::from_secs(42);
        let back = from_ms(to_ms(t));
        let diff = if back > t { back - t } else { t - back };
        assert!(diff < Duration::from_millis(5), "{diff:?}");
        // A time long before this process started comes back as something in the past.
        assert!(from_ms(0) <= Instant::now());
    }
}
