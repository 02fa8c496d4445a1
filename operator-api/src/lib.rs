//! What every node's operator-facing HTTPS API shares, so the center's API and an
//! edge's site API behave the same: one envelope and error type, development TLS,
//! login with roles, operator accounts, audit events, metrics, health and API docs.

pub mod accounts;
pub mod admission;
pub mod audit;
pub mod auth;
pub mod commands;
pub mod configs;
pub mod devices;
pub mod docs;
pub mod error;
pub mod events;
pub mod health;
pub mod input;
pub mod lease;
pub mod metrics;
pub mod node;
pub mod pulled_logs;
pub mod reply;
pub mod server;
pub mod settings;
pub mod throttle;
pub mod tls;
pub mod users;

pub use auth::{Caller, Role};
pub use error::ApiError;
pub use node::Node;
