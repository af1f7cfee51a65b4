//! Agent assist and customer memory (issue 17): what the service tells the person on the call,
//! and what it remembers about a customer across contacts. See `docs/assist.md` for the design.
//!
//! Built so far: [`giving_up`], which hears a customer give up ("算了，不折腾了", "forget it,
//! I give up"), the phrase half of the resignation rule that marks a contact as ended resigned.
//! It is not yet on the turn path.

mod apology;
pub mod guidance;
mod resignation;

pub use apology::{APOLOGY_EMOTIONS, apology};
pub use guidance::{AssistState, Guidance};
pub use resignation::giving_up;
