//! The core of a fleet node, center or edge, with no HTTP in it: the node's state and
//! write path, accounts, roles and tokens, commands, devices, events and metrics, and
//! the guards of its doors (admission and login throttling). The HTTP API
//! (`operator-api`), the device hub and the federation link are doors onto it.

pub mod accounts;
pub mod actor;
pub mod admission;
pub mod commands;
pub mod device_cache;
pub mod devices;
pub mod error;
pub mod events;
pub mod loops;
pub mod metrics;
pub mod node;
pub mod passwords;
pub mod rollouts;
pub mod throttle;
pub mod tickets;
pub mod tls;
pub mod tokens;

pub use actor::{Actor, Role};
pub use error::Error;
pub use node::Node;
