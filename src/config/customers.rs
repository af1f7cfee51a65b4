//! `[customers]`: customer memory across contacts (`crate::customers`).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct CustomersConfig {
    /// SQLite database of customers' contacts, created on first run; "" turns customer memory
    /// off (`context.customer_id` is then read, checked and dropped).
    pub path: PathBuf,
    /// The secret behind the pseudonyms (hex, at least 16 bytes), created on first run. Losing
    /// it disconnects every stored customer from their future contacts.
    pub key_file: PathBuf,
    /// `repeat_contact`: a new contact within this many days of one that ended badly.
    pub window_days: u64,
    /// The silent list: the last contact ended badly at least this many days ago.
    pub silent_after_days: u64,
    /// Contacts that ended longer ago than this are deleted (0 keeps them).
    pub retention_days: u64,
    /// A contact ended negative when the customer's final rolling score is below this.
    pub negative_below: f32,
}

impl Default for CustomersConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("data/customers.sqlite3"),
            key_file: PathBuf::from("data/customer.key"),
            window_days: 7,
            silent_after_days: 7,
            retention_days: 365,
            negative_below: -0.2,
        }
    }
}

impl CustomersConfig {
    pub fn enabled(&self) -> bool {
        !self.path.as_os_str().is_empty()
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_days * 86_400)
    }

    pub fn silent_after(&self) -> Duration {
        Duration::from_secs(self.silent_after_days * 86_400)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(-1.0..=1.0).contains(&self.negative_below) {
            return Err(format!(
                "customers.negative_below must be in [-1, 1], got {}",
                self.negative_below
            ));
        }
        if self.enabled() && self.key_file.as_os_str().is_empty() {
            return Err("customers.key_file must name a file when customers.path is set".into());
        }
        if self.window_days > 3_650 || self.silent_after_days > 3_650 {
            return Err(
                "customers.window_days and customers.silent_after_days must be at most 3650".into(),
            );
        }
        Ok(())
    }
}
