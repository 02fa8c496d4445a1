//! The center cloud: the fleet registry and the operators' REST API.

pub mod artifacts;
pub mod bulk;
pub mod config;
pub mod edges;
pub mod groups;
pub mod lab;
pub mod link;
pub mod openapi;
pub mod presence;
pub mod roaming;
pub mod rollouts;
pub mod routing;
pub mod startup;

pub use config::Settings;
pub use startup::{Application, Center};
