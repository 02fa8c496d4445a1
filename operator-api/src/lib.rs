//! The HTTP layer every node's operator-facing API shares, so the center's API and an
//! edge's site API behave the same: one envelope and error answer, login and the
//! caller behind a request, operator accounts, devices, commands and configs as
//! routes, audit events, metrics, health, API docs and the server's startup. The
//! rules behind the routes are the node's core (`fleet_node`).

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
pub mod pulled_logs;
pub mod ranges;
pub mod reply;
pub mod server;
pub mod settings;
pub mod users;

pub use auth::Caller;
pub use error::ApiError;
use fleet_node::Node;
