//! Registers what the state does not have yet, through the center's API: the edges,
//! the group `all`, and the devices, spread evenly over the edges. The state is saved
//! after every step, so an interrupted run resumes where it stopped.

use std::time::Instant;

use futures_util::future::join_all;

use crate::center::Center;
use crate::console::Console;
use crate::error::Error;
use crate::layout::edge_name;
use crate::state::{State, StateFile};

/// Devices registered at once: enough to keep the center busy, few enough that an
/// interruption loses little (a device registered but not saved gets a new secret on
/// the next run).
const CONCURRENCY: usize = 8;

pub const GROUP_ALL: &str = "all";

pub async fn register(
    center: &Center,
    state: &mut State,
    file: &StateFile,
    edges: usize,
    devices: usize,
    console: &Console,
) -> Result<(), Error> {
    for i in state.edges.len()..edges {
        let edge = center.register_edge(&edge_name(i)).await?;
        console.say(format!(
            "registered {}: id {}, worker id {}",
            edge.name, edge.id, edge.worker_id
        ));
        state.edges.push(edge);
        file.save(state)?;
    }
    let group = match &state.group_all {
        Some(group) => group.clone(),
        None => {
            let group = center.ensure_group(GROUP_ALL).await?;
            console.say(format!("created the group `{GROUP_ALL}`: id {group}"));
            state.group_all = Some(group.clone());
            file.save(state)?;
            group
        }
    };
    let first = state.devices.len();
    if first >= devices {
        return Ok(());
    }
    let wanted = devices - first;
    let started = Instant::now();
    console.say(format!("registering {wanted} devices at the center"));
    let mut homed: Vec<usize> = state
        .edges
        .iter()
        .map(|e| state.devices_of(&e.id).count())
        .collect();
    while state.devices.len() < devices {
        let from = state.devices.len();
        let to = (from + CONCURRENCY).min(devices);
        let jobs = (from..to)
            .map(|i| {
                Some((
                    format!("lf-{:05}", i + 1),
                    emptiest_edge(state, &mut homed)?,
                ))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::Options("there is no edge to home the devices at".into()))?;
        let requests = jobs
            .iter()
            .map(|(sn, edge)| center.register_device(sn, edge, &group));
        let mut failure = None;
        for result in join_all(requests).await {
            match result {
                // Devices are kept in order, since the serial number follows the index.
                Ok(device) if failure.is_none() => state.devices.push(device),
                Ok(_) => {}
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        file.save(state)?;
        if let Some(e) = failure {
            return Err(e);
        }
        console.progress(format!(
            "registering devices: {}/{wanted}",
            state.devices.len() - first
        ));
    }
    console.say(format!(
        "registered {wanted} devices in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// The id of the edge with the fewest devices (the first of those), counted in
/// `homed` as one more. New devices go there, so the fleet stays evenly spread when
/// edges are added to an existing federation.
fn emptiest_edge(state: &State, homed: &mut [usize]) -> Option<String> {
    let i = (0..homed.len()).min_by_key(|&i| homed[i])?;
    homed[i] += 1;
    state.edges.get(i).map(|e| e.id.clone())
}
