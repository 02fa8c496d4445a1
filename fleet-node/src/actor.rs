//! Who acts, and with what right: the roles of operator accounts and the account
//! behind a request.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees and does everything.
    Admin,
    /// Reads and acts on the devices of the groups mapped to them.
    Operator,
    /// Reads the devices of the groups mapped to them.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// The account an action is taken for: an operator or viewer scoped to groups, or
/// an admin.
#[derive(Debug, Clone)]
pub struct Actor {
    pub id: i64,
    pub username: String,
    pub role: Role,
    /// The groups an operator or viewer is scoped to (empty for admins, who see all).
    pub groups: Vec<i64>,
}

impl Actor {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn require_admin(&self) -> Result<(), Error> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(Error::PermissionDenied(
                "this action needs the admin role".into(),
            ))
        }
    }

    pub fn require_writer(&self) -> Result<(), Error> {
        if self.role == Role::Viewer {
            Err(Error::PermissionDenied(
                "viewers cannot change anything".into(),
            ))
        } else {
            Ok(())
        }
    }

    pub fn in_group(&self, group: i64) -> bool {
        self.is_admin() || self.groups.contains(&group)
    }
}
