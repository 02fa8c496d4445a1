//! The federation link between an edge and the center (docs/design.md §5): one TLS WebSocket
//! the edge dials, over which both sides stream their change logs to each other and
//! merge what they receive (`docs/sync.md`). The center accepts and authenticates
//! links (`center-cloud`), the edge dials and redials (`edge-cloud`); what both ends
//! run once the link is up lives here, once.

pub mod authoring;
pub mod protocol;
pub mod scope;
pub mod session;
pub mod snapshot;

pub use protocol::LinkPdu;
pub use scope::Scope;
pub use session::{Ended, Link};
