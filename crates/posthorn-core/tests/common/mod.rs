//! Helpers shared by the core's integration tests.

use posthorn_core::event::EventDetails;
use posthorn_core::status::FoldInput;
use posthorn_core::{EventId, Millis};

/// An owned event; [`FoldInput`] borrows from it.
#[derive(Debug, Clone)]
pub struct Ev {
    pub id: EventId,
    pub occurred_at: Millis,
    pub details: EventDetails,
}

impl Ev {
    pub fn input(&self) -> FoldInput<'_> {
        FoldInput {
            id: &self.id,
            occurred_at: self.occurred_at,
            details: &self.details,
        }
    }
}
