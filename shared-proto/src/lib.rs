//! Wire types shared by every binary of the federation: the JSON envelope of the REST
//! APIs, the stable error codes, the device document with its validation rules, and the
//! southbound (device <-> edge) protocol, the reconnect backoff both kinds of link
//! (device -> edge, edge -> center) use, and the signed manifest of a software artifact.

pub mod backoff;
pub mod device;
pub mod endpoint;
pub mod envelope;
pub mod id;
pub mod manifest;
pub mod protocol_doc;
pub mod southbound;

pub use device::{DeviceDraft, DevicePatch, Hardware, Nic, Software};
pub use envelope::{Envelope, ErrorCode, FieldError};
