//! An edge cloud: the site server of one site. It keeps its own database (the same
//! replicated fleet tables as the center) and serves the site API: local operators,
//! device registration and listing, events, health and metrics.

pub mod config;
pub mod openapi;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
