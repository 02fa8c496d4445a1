//! One device's update in a rollout (replicated both ways): the center makes the
//! rows when the rollout is created, the device's home edge moves them as the
//! install goes. States only move forward, like a command's.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "rollout_devices")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    pub rollout_id: i64,
    #[sea_orm(indexed)]
    pub device_id: i64,
    pub wave: i32,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    /// Percent of the current stage (the download's, while downloading).
    pub progress: i32,
    /// Why it failed or timed out.
    #[sea_orm(column_type = "Text")]
    pub reason: String,
    /// The last lines the device reported about it.
    #[sea_orm(column_type = "Text")]
    pub log: String,
    /// The `install` command the edge sent, once it did.
    pub command_id: Option<i64>,
    pub started_at: i64,
    pub finished_at: i64,
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

/// Where one device's update is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Downloading,
    Installing,
    Rebooting,
    Succeeded,
    Failed,
    TimedOut,
}

impl State {
    pub const ALL: [State; 7] = [
        State::Queued,
        State::Downloading,
        State::Installing,
        State::Rebooting,
        State::Succeeded,
        State::Failed,
        State::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Downloading => "downloading",
            State::Installing => "installing",
            State::Rebooting => "rebooting",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::TimedOut => "timed_out",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    pub fn rank(self) -> u8 {
        match self {
            State::Queued => 0,
            State::Downloading => 1,
            State::Installing => 2,
            State::Rebooting => 3,
            State::Succeeded | State::Failed | State::TimedOut => 4,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 4
    }
}

#[cfg(test)]
mod tests {
    use super::State;

    #[test]
    fn states_parse_back_and_only_final_ones_rank_last() {
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(s.is_final(), s.rank() == 4);
        }
        assert!(State::Downloading.rank() < State::Installing.rank());
        assert!(State::Rebooting.rank() < State::Succeeded.rank());
    }
}
