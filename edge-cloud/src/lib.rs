//! An edge cloud: the site server of one site. It keeps its own database (the same
//! replicated fleet tables as the center), serves the site API (local operators,
//! device registration and listing with live online state, events, health, metrics)
//! and holds its devices' WebSocket sessions in the hub.

pub mod artifacts;
pub mod config;
pub mod device_auth;
pub mod hub;
pub mod openapi;
pub mod rollouts;
pub mod startup;
pub mod status;
pub mod uplink;
pub mod uploads;

pub use config::Settings;
pub use startup::Application;
