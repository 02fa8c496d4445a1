//! The one-line summary of a running federation, taken from the center's API: edges
//! whose link is up, devices online at their edge, commands finished.

use std::collections::{HashMap, HashSet};
use std::fmt;

use crate::center::Center;
use crate::error::Error;
use crate::state::State;

/// The states of a command that has not finished.
const OPEN_STATES: [&str; 3] = ["queued", "sent", "running"];

#[derive(Debug, Clone, Copy)]
pub struct Summary {
    pub edges_online: usize,
    pub edges: usize,
    pub devices_online: usize,
    pub devices: usize,
    pub commands_done: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "edges online {}/{} | devices online {}/{} | commands done {}",
            self.edges_online, self.edges, self.devices_online, self.devices, self.commands_done
        )
    }
}

/// Takes summaries of this federation's edges and devices.
///
/// The center lists commands per device only, and has no listing of all commands.
/// So commands are counted per device from the listing's `total`, and a device is
/// counted again only when it may have changed: a finished command never changes
/// state again, so a device whose number of commands is the same as last time, and
/// which had none open then, still has the same number finished. An idle fleet costs
/// one small request per device.
pub struct Tally {
    edges: HashSet<String>,
    devices: Vec<String>,
    seen: HashMap<String, Counted>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    total: u64,
    open: u64,
}

impl Tally {
    pub fn new(state: &State) -> Self {
        Self {
            edges: state.edges.iter().map(|e| e.id.clone()).collect(),
            devices: state.devices.iter().map(|d| d.id.clone()).collect(),
            seen: HashMap::new(),
        }
    }

    pub async fn take(&mut self, center: &Center) -> Result<Summary, Error> {
        let edges_online = center
            .edges()
            .await?
            .iter()
            .filter(|e| e["link"]["online"] == true)
            .filter(|e| e["id"].as_str().is_some_and(|id| self.edges.contains(id)))
            .count();
        let online = center.online_devices().await?;
        let devices_online = self.devices.iter().filter(|d| online.contains(*d)).count();
        let mut commands_done = 0;
        for device in &self.devices {
            let total = center.command_count(device, None).await?;
            let seen = self.seen.entry(device.clone()).or_default();
            if total != seen.total || seen.open > 0 {
                let mut open = 0;
                for state in OPEN_STATES {
                    open += center.command_count(device, Some(state)).await?;
                }
                // A command created between the two counts may be open but not in
                // `total` yet; it is counted on the next round.
                *seen = Counted {
                    total,
                    open: open.min(total),
                };
            }
            commands_done += seen.total - seen.open;
        }
        Ok(Summary {
            edges_online,
            edges: self.edges.len(),
            devices_online,
            devices: self.devices.len(),
            commands_done,
        })
    }
}
