//! Posthorn's rules, pure: ids, event kinds and their details, the status fold
//! of a delivery, contact and suppression rules, the retry schedule, address
//! validation, the pre-send policy chain and configuration types.
//!
//! Nothing here does I/O, spawns tasks or reads the clock: time is passed in
//! (see [`clock`]), so every rule can be table- and property-tested. Storage,
//! HTTP and SMTP crates call these rules; never the other way round.

pub mod address;
pub mod clock;
pub mod config;
pub mod contact;
pub mod domain;
pub mod enhanced;
pub mod event;
pub mod external_id;
pub mod id;
pub mod inbound;
pub mod net;
pub mod outcome;
pub mod policy;
pub mod provider;
pub mod retry;
pub mod rfc5322;
pub mod search;
pub mod stats;
pub mod status;
pub mod submission;
pub mod suppression;

pub use clock::{Clock, Millis, SystemClock};
pub use enhanced::EnhancedCode;
pub use event::{EventKind, EventSource};
pub use id::{DeliveryId, EventId, MessageId, NodeId, TenantId};
pub use status::{BounceType, DeliveryState, DeliveryStatus, EngagementStatus};
