//! Rollouts: an artifact installed on a set of devices in waves (replicated center ->
//! edges; only the center writes them). The row carries the signed install, so an
//! edge runs the wave it has without reaching the center.

use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "rollouts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: i64,
    #[sea_orm(column_type = "String(StringLen::N(128))")]
    pub name: String,
    #[sea_orm(indexed)]
    pub artifact_id: i64,
    /// The `install` command's arguments (`shared_proto::southbound::Install`), JSON.
    #[sea_orm(column_type = "Text")]
    pub install: String,
    /// What it targets, as asked: `{"group_id": …}`, `{"edge_id": …}` or
    /// `{"device_ids": […]}`, JSON.
    #[sea_orm(column_type = "Text")]
    pub target: String,
    /// The wave sizes as asked (`["1%", "10%", "100%"]`), JSON.
    #[sea_orm(column_type = "Text")]
    pub waves: String,
    pub success_threshold_pct: i32,
    pub error_threshold_pct: i32,
    pub device_timeout_s: i64,
    pub max_in_flight_per_edge: i32,
    pub start_at: i64,
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub state: String,
    /// The wave under way (0 is the first).
    pub wave: i32,
    /// The last wave the operator resumed past its failures (-1: none): its error
    /// threshold no longer pauses the rollout, and it ends when all its devices do.
    pub accepted_wave: i32,
    /// Why it paused or ended, when it did on its own.
    #[sea_orm(column_type = "Text")]
    pub reason: String,
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

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Scheduled,
    Running,
    Paused,
    Completed,
    Aborted,
}

impl State {
    pub const ALL: [State; 5] = [
        State::Scheduled,
        State::Running,
        State::Paused,
        State::Completed,
        State::Aborted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Scheduled => "scheduled",
            State::Running => "running",
            State::Paused => "paused",
            State::Completed => "completed",
            State::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed and aborted rollouts do nothing more.
    pub fn is_final(self) -> bool {
        matches!(self, State::Completed | State::Aborted)
    }
}
