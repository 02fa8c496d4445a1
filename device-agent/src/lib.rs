//! The device agent: connects to the nearest of its edges, reports status, runs
//! commands. See `docs/protocol.md` for the protocol.

pub use shared_proto::backoff;
pub mod config;
pub mod executor;
pub mod fleet;
pub mod http;
pub mod install;
pub mod link;
pub mod logs;
pub mod reporter;
