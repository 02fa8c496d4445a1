//! The device document of the northbound APIs. Its shape follows the seed lab's
//! contract (`{id, name, type, hardware{model, sn}, software{version, last_update},
//! nic[{type, mac, ipv4}], status}`) so existing clients keep working.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::FieldError;

pub const MAX_NAME: usize = 128;
pub const MAX_TYPE: usize = 64;
pub const MAX_HARDWARE: usize = 128;
pub const MAX_VERSION: usize = 64;
pub const MAX_STATUS: usize = 32;
pub const MAX_DESCRIPTION: usize = 1024;
pub const MAX_NICS: usize = 16;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Hardware {
    pub model: String,
    pub sn: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Software {
    #[serde(default)]
    pub version: String,
    /// The seed's JSON sample spells this `last update`; both spellings are accepted.
    #[serde(default, alias = "last update")]
    pub last_update: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Nic {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub mac: String,
    #[serde(default)]
    pub ipv4: String,
}

/// A new device as a client submits it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeviceDraft {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub hardware: Hardware,
    #[serde(default)]
    pub software: Software,
    #[serde(default)]
    pub nic: Vec<Nic>,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub description: String,
    /// Home edge of the device (id string); optional.
    #[serde(default)]
    pub edge_id: Option<String>,
    /// Groups to place the device in at creation (id strings).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A partial update: absent fields stay as they are.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DevicePatch {
    pub name: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub hardware: Option<HardwarePatch>,
    pub software: Option<SoftwarePatch>,
    pub nic: Option<Vec<Nic>>,
    pub status: Option<String>,
    pub description: Option<String>,
    /// Moves the device to another home edge; `null` leaves it unassigned.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub edge_id: Option<Option<String>>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct HardwarePatch {
    pub model: Option<String>,
    pub sn: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SoftwarePatch {
    pub version: Option<String>,
    #[serde(alias = "last update")]
    pub last_update: Option<String>,
}

/// Distinguishes an absent key (outer `None`) from an explicit `null` (`Some(None)`).
fn double_option<'de, D, T>(de: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(de).map(Some)
}

pub fn check_text(field: &str, value: &str, max: usize, required: bool) -> Result<(), FieldError> {
    if required && value.trim().is_empty() {
        return Err(FieldError::new(field, "is required and must not be blank"));
    }
    if value.chars().count() > max {
        return Err(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// Versions are free-form in the seed data ("0.1", "1.2.3-rc1"), so only a safe
/// character set is enforced.
pub fn check_version(field: &str, value: &str) -> Result<(), FieldError> {
    check_text(field, value, MAX_VERSION, false)?;
    let ok = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_'));
    if ok {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "may contain only letters, digits and . - + _",
        ))
    }
}

pub fn check_mac(field: &str, value: &str) -> Result<(), FieldError> {
    let bytes = value.as_bytes();
    let well_formed = bytes.len() == 17
        && bytes.iter().enumerate().all(|(i, b)| {
            if i % 3 == 2 {
                *b == b':' || *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    if well_formed {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            "must be a MAC address like 12:34:56:78:9a:bc",
        ))
    }
}

pub fn check_ipv4(field: &str, value: &str) -> Result<(), FieldError> {
    // std's parser rejects leading zeros and out-of-range octets, which is what we want.
    value
        .parse::<std::net::Ipv4Addr>()
        .map(|_| ())
        .map_err(|_| FieldError::new(field, "must be a dotted IPv4 address like 192.168.1.2"))
}

pub fn check_nics(nics: &[Nic]) -> Result<(), FieldError> {
    if nics.len() > MAX_NICS {
        return Err(FieldError::new(
            "nic",
            format!("at most {MAX_NICS} entries"),
        ));
    }
    for (i, nic) in nics.iter().enumerate() {
        check_text(&format!("nic[{i}].type"), &nic.kind, 32, false)?;
        if !nic.mac.is_empty() {
            check_mac(&format!("nic[{i}].mac"), &nic.mac)?;
        }
        if !nic.ipv4.is_empty() {
            check_ipv4(&format!("nic[{i}].ipv4"), &nic.ipv4)?;
        }
    }
    Ok(())
}

impl DeviceDraft {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_text("name", &self.name, MAX_NAME, true)?;
        check_text("type", &self.kind, MAX_TYPE, true)?;
        check_text("hardware.model", &self.hardware.model, MAX_HARDWARE, true)?;
        check_text("hardware.sn", &self.hardware.sn, MAX_HARDWARE, true)?;
        check_version("software.version", &self.software.version)?;
        check_text(
            "software.last_update",
            &self.software.last_update,
            MAX_VERSION,
            false,
        )?;
        check_nics(&self.nic)?;
        check_text("status", &self.status, MAX_STATUS, false)?;
        check_text("description", &self.description, MAX_DESCRIPTION, false)
    }
}

impl DevicePatch {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(v) = &self.name {
            check_text("name", v, MAX_NAME, true)?;
        }
        if let Some(v) = &self.kind {
            check_text("type", v, MAX_TYPE, true)?;
        }
        if let Some(hw) = &self.hardware {
            if let Some(v) = &hw.model {
                check_text("hardware.model", v, MAX_HARDWARE, true)?;
            }
            if let Some(v) = &hw.sn {
                check_text("hardware.sn", v, MAX_HARDWARE, true)?;
            }
        }
        if let Some(sw) = &self.software {
            if let Some(v) = &sw.version {
                check_version("software.version", v)?;
            }
            if let Some(v) = &sw.last_update {
                check_text("software.last_update", v, MAX_VERSION, false)?;
            }
        }
        if let Some(nics) = &self.nic {
            check_nics(nics)?;
        }
        if let Some(v) = &self.status {
            check_text("status", v, MAX_STATUS, false)?;
        }
        if let Some(v) = &self.description {
            check_text("description", v, MAX_DESCRIPTION, false)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft() -> DeviceDraft {
        DeviceDraft {
            name: "gw-1".into(),
            kind: "gateway".into(),
            hardware: Hardware {
                model: "Raspberry Pi 4".into(),
                sn: "itOYJ".into(),
            },
            nic: vec![Nic {
                kind: "wifi".into(),
                mac: "12:34:56:78:9a:bc".into(),
                ipv4: "192.168.1.2".into(),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_good_draft_passes() {
        assert_eq!(draft().validate(), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        type Case = (fn(&mut DeviceDraft), &'static str);
        let cases: Vec<Case> = vec![
            (|d| d.name = " ".into(), "name"),
            (|d| d.name = "x".repeat(129), "name"),
            (|d| d.hardware.sn = String::new(), "hardware.sn"),
            (|d| d.nic[0].mac = "12:34:56:78:9a".into(), "nic[0].mac"),
            (|d| d.nic[0].mac = "12:34:56:78:9a:zz".into(), "nic[0].mac"),
            (|d| d.nic[0].ipv4 = "300.1.1.1".into(), "nic[0].ipv4"),
            (|d| d.nic[0].ipv4 = "01.1.1.1".into(), "nic[0].ipv4"),
            (
                |d| d.software.version = "1.0 beta".into(),
                "software.version",
            ),
            (|d| d.status = "a\nb".into(), "status"),
        ];
        for (mutate, field) in cases {
            let mut d = draft();
            mutate(&mut d);
            assert_eq!(d.validate().map_err(|e| e.field), Err(field.to_string()));
        }
    }

    #[test]
    fn patch_tells_null_from_absent() {
        let p: DevicePatch = serde_json::from_str(r#"{"edge_id": null}"#).expect("valid json");
        assert_eq!(p.edge_id, Some(None));
        let p: DevicePatch = serde_json::from_str(r#"{}"#).expect("valid json");
        assert_eq!(p.edge_id, None);
    }
}
