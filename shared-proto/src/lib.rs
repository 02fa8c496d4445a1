//! Wire types shared by every binary of the federation: the JSON envelope of the REST
//! APIs, the stable error codes, and the device document with its validation rules.

pub mod device;
pub mod envelope;
pub mod id;

pub use device::{DeviceDraft, DevicePatch, Hardware, Nic, Software};
pub use envelope::{Envelope, ErrorCode, FieldError};
