//! Commands to devices (replicated both ways; state only moves forward).

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "commands")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    /// The group or edge fan-out this command belongs to, if any.
    #[sea_orm(indexed)]
    pub batch_id: Option<i64>,
    #[sea_orm(column_type = "String(StringLen::N(32))")]
    pub name: String,
    #[sea_orm(column_type = "Text")]
    pub args: String,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    pub progress: i32,
    pub timeout_s: i64,
    pub deadline_at: i64,
    /// MEDIUMTEXT: a result of the agent's largest output, escaped, outgrows a
    /// MySQL TEXT (64 KiB).
    #[sea_orm(column_type = r#"custom("MEDIUMTEXT")"#, nullable)]
    pub result: Option<String>,
    #[sea_orm(column_type = "String(StringLen::N(64))")]
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub hlc: i64,
    pub origin: i64,
    pub deleted: bool,
    #[sea_orm(column_type = "Text")]
    pub field_stamps: String,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// Where a command is in its life. States only move forward, so a merge of two
/// copies keeps the later one and a finished command never goes back to running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Sent,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Expired,
    Cancelled,
}

impl State {
    pub const ALL: [State; 8] = [
        State::Queued,
        State::Sent,
        State::Running,
        State::Succeeded,
        State::Failed,
        State::TimedOut,
        State::Expired,
        State::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sent => "sent",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::TimedOut => "timed_out",
            State::Expired => "expired",
            State::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn rank(self) -> u8 {
        match self {
            State::Queued => 0,
            State::Sent => 1,
            State::Running => 2,
            _ => 3,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 3
    }

    /// Whether a command in `self` may move to `next`.
    pub fn may_become(self, next: State) -> bool {
        next.rank() > self.rank() || (next == State::Running && self == State::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn states_only_move_forward() {
        assert!(State::Queued.may_become(State::Sent));
        assert!(State::Sent.may_become(State::Succeeded));
        assert!(
            State::Running.may_become(State::Running),
            "progress updates"
        );
        assert!(!State::Running.may_become(State::Sent));
        assert!(!State::Succeeded.may_become(State::Running));
        assert!(!State::Succeeded.may_become(State::Failed));
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
        }
    }
}
