//! How many alert subscribers (gRPC `SubscribeAlerts` calls and dashboard SSE streams together)
//! may be open: at most `alerts.max_subscribers` on the server and
//! `alerts.max_subscribers_per_token` per authenticated token. Each subscription holds a
//! [`SubscriberPermit`] that gives its place back when the subscription is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Open subscribers, in total and per token name.
pub struct SubscriberLimits {
    max_total: usize,
    max_per_token: usize,
    open: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_token: HashMap<String, usize>,
}

/// Why a subscriber was turned away (RESOURCE_EXHAUSTED, HTTP 429).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("{0} alert subscribers are open, the configured maximum (alerts.max_subscribers)")]
    Server(usize),
    #[error(
        "token {name:?} has {limit} alert subscribers open, the configured maximum per token (alerts.max_subscribers_per_token)"
    )]
    Token { name: String, limit: usize },
}

/// One open subscriber's place.
pub struct SubscriberPermit {
    limits: Arc<SubscriberLimits>,
    token: Option<String>,
}

impl SubscriberLimits {
    pub fn new(max_total: usize, max_per_token: usize) -> Arc<Self> {
        Arc::new(Self {
            max_total,
            max_per_token,
            open: Mutex::new(Counts::default()),
        })
    }

    /// A place for one more subscriber of `token` (None: auth is off, only the total counts).
    pub fn admit(self: &Arc<Self>, token: Option<&str>) -> Result<SubscriberPermit, LimitError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_total {
            return Err(LimitError::Server(self.max_total));
        }
        if let Some(name) = token {
            let n = open.per_token.entry(name.to_string()).or_default();
            if *n >= self.max_per_token {
                return Err(LimitError::Token {
                    name: name.to_string(),
                    limit: self.max_per_token,
                });
            }
            *n += 1;
        }
        open.total += 1;
        Ok(SubscriberPermit {
            limits: self.clone(),
            token: token.map(str::to_string),
        })
    }
}

impl Drop for SubscriberPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if let Some(name) = &self.token
            && let Some(n) = open.per_token.get_mut(name)
        {
            *n -= 1;
            if *n == 0 {
                open.per_token.remove(name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_server_and_per_token_and_given_back() {
        let limits = SubscriberLimits::new(3, 2);
        let a1 = limits.admit(Some("a")).unwrap();
        let _a2 = limits.admit(Some("a")).unwrap();
        assert_eq!(
            limits.admit(Some("a")).err(),
            Some(LimitError::Token {
                name: "a".into(),
                limit: 2
            })
        );
        let _anon = limits.admit(None).unwrap();
        assert_eq!(limits.admit(Some("b")).err(), Some(LimitError::Server(3)));
        drop(a1);
        let _b = limits.admit(Some("b")).unwrap();
        assert!(limits.admit(None).is_err());
    }
}
