//! A whole federation on this machine: a center, its edges and a device simulator per
//! edge, started in that order, each waited for, and stopped in the reverse order.

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::process::Command;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::time::MissedTickBehavior;

use crate::binaries::Binaries;
use crate::center::{describe, https_client, Center};
use crate::console::{Console, EdgeView, Welcome};
use crate::databases::Databases;
use crate::error::Error;
use crate::layout::{edge_name, Layout, Ports};
use crate::process::{stop_all, Process};
use crate::registration::{self, GROUP_ALL};
use crate::state::{write_credentials, write_private, State, StateFile};
use crate::summary::Tally;

/// How long a process may take to listen and answer `/readyz`.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the edges may take to link to the center and catch up with its log.
const LINK_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the devices may take to come online: a base, plus a little per device.
const ONLINE_TIMEOUT: Duration = Duration::from_secs(60);
const ONLINE_TIMEOUT_PER_DEVICE: Duration = Duration::from_millis(20);
/// How long a process has between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);
/// How often the waits look again.
const POLL: Duration = Duration::from_millis(250);
/// The `--once` group command: its timeout, and how long to wait for its batch.
const ONCE_COMMAND: &str = "get_status";
const ONCE_COMMAND_TIMEOUT_S: u64 = 30;
const ONCE_BATCH_TIMEOUT: Duration = Duration::from_secs(60);
/// Variable prefixes of the three binaries' settings.
const SETTING_PREFIXES: [&str; 3] = ["CENTER_", "EDGE_", "AGENT_"];

#[derive(Debug, Clone)]
pub struct Options {
    pub data_dir: PathBuf,
    pub edges: usize,
    pub devices: usize,
    pub port_base: u16,
    pub database_url: Option<String>,
    pub bin_dir: Option<PathBuf>,
    pub once: bool,
}

/// Starts the federation and runs it until a signal (or, with `once`, until its
/// group command finished), then stops every process it started.
pub async fn run(options: Options) -> Result<(), Error> {
    let console = Console::new();
    let databases = Databases::new(options.database_url.as_deref())?;
    let binaries = match &options.bin_dir {
        Some(dir) => Binaries::in_dir(dir)?,
        None => {
            console.say("building center-cloud, edge-cloud and device-agent");
            Binaries::build().await?
        }
    };
    std::fs::create_dir_all(&options.data_dir).map_err(Error::io(format!(
        "creating {}",
        options.data_dir.display()
    )))?;
    let root = options
        .data_dir
        .canonicalize()
        .map_err(Error::io(format!("reading {}", options.data_dir.display())))?;
    let layout = Layout::new(root);
    std::fs::create_dir_all(layout.logs())
        .map_err(Error::io(format!("creating {}", layout.logs().display())))?;
    let _lock = lock(&layout.lock_file())?;
    // A script must never find the ports of an earlier run.
    remove_stale(&layout.endpoints_file())?;
    let state_file = StateFile::new(layout.state_file());
    let state = match state_file.load()? {
        Some(state) => {
            let edges: Vec<String> = state
                .edges
                .iter()
                .map(|e| format!("{} (id {})", e.name, e.id))
                .collect();
            console.say(format!(
                "reusing the federation in {}: {}; devices: {}",
                layout.root().display(),
                edges.join(", "),
                state.devices.len()
            ));
            state
        }
        None => {
            let state = State::new();
            // Saved before the center first starts with this password, so a run that
            // fails half-way does not lose it.
            state_file.save(&state)?;
            console.say(format!("new federation in {}", layout.root().display()));
            state
        }
    };
    let edges = options.edges.max(state.edges.len());
    if edges > options.edges {
        console.say(format!(
            "the state has {edges} edges: running all of them (--edges removes none)"
        ));
    }
    let devices = options.devices.max(state.devices.len());
    if devices > options.devices {
        console.say(format!(
            "the state has {devices} devices: running all of them (--devices removes none)"
        ));
    }
    let ports = Ports::new(options.port_base, edges)?;
    let mut signals = Signals::new()?;
    let mut federation = Federation {
        binaries,
        layout,
        state_file,
        state,
        ports,
        databases,
        edges,
        devices,
        once: options.once,
        console,
        fleet: Fleet::default(),
    };
    let outcome = tokio::select! {
        outcome = federation.operate() => outcome,
        name = signals.next() => {
            federation.console.say(format!("{name}: stopping"));
            Ok(())
        }
    };
    federation.fleet.stop(&federation.console).await;
    outcome
}

fn remove_stale(path: &Path) -> Result<(), Error> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", path.display()))(e))
        }
        _ => Ok(()),
    }
}

/// Takes the data directory for this run: two runs on one directory would share
/// databases and ports, and overwrite each other's state.
fn lock(path: &Path) -> Result<Flock<File>, Error> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(Error::io(format!("opening {}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        if errno == Errno::EWOULDBLOCK {
            Error::Locked {
                path: path.to_path_buf(),
            }
        } else {
            Error::Io {
                context: format!("locking {}", path.display()),
                source: errno.into(),
            }
        }
    })
}

struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> Result<Self, Error> {
        let listen = |kind| signal(kind).map_err(Error::io("listening for signals"));
        Ok(Self {
            interrupt: listen(SignalKind::interrupt())?,
            terminate: listen(SignalKind::terminate())?,
        })
    }

    async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// The processes started, by tier.
#[derive(Default)]
struct Fleet {
    center: Option<Process>,
    edges: Vec<Process>,
    simulators: Vec<Process>,
}

impl Fleet {
    fn all(&mut self) -> impl Iterator<Item = &mut Process> {
        self.center
            .iter_mut()
            .chain(self.edges.iter_mut())
            .chain(self.simulators.iter_mut())
    }

    /// Fails if a process has exited: none is meant to before the stop.
    fn check(&mut self) -> Result<(), Error> {
        match self.all().find_map(|p| p.exited("unexpectedly")) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Resolves when a process exits.
    async fn died(&mut self) -> Error {
        loop {
            if let Err(e) = self.check() {
                return e;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Simulators first, so that no device is left reconnecting to an edge that is
    /// going; then the edges, so that none is left dialing a center that is gone.
    async fn stop(&mut self, console: &Console) {
        if self.center.is_none() {
            return;
        }
        console.say("stopping the simulators, then the edges, then the center");
        let tiers = [
            self.simulators.as_mut_slice(),
            self.edges.as_mut_slice(),
            self.center.as_mut_slice(),
        ];
        for tier in tiers {
            for name in stop_all(tier, GRACE).await {
                console.say(format!(
                    "{name} did not stop within {} s of SIGTERM: killed",
                    GRACE.as_secs()
                ));
            }
        }
        console.say("stopped");
    }
}

/// Where a started node listens, as it announced it.
struct Endpoints {
    api_url: String,
    /// The center's link endpoint, or an edge's device endpoint.
    second_url: String,
}

struct Federation {
    binaries: Binaries,
    layout: Layout,
    state_file: StateFile,
    state: State,
    ports: Ports,
    databases: Databases,
    edges: usize,
    devices: usize,
    once: bool,
    console: Console,
    fleet: Fleet,
}

impl Federation {
    async fn operate(&mut self) -> Result<(), Error> {
        self.databases
            .create((0..self.edges).map(edge_name))
            .await?;
        let (center, endpoints) = self.start_center().await?;
        if !self.state.edges.is_empty() {
            self.check_known(&center).await?;
        }
        registration::register(
            &center,
            &mut self.state,
            &self.state_file,
            self.edges,
            self.devices,
            &self.console,
        )
        .await?;
        let edges = self.start_edges(&center, &endpoints).await?;
        self.start_simulators(&center, &edges).await?;
        let group_all = self.state.group_all.clone().unwrap_or_default();
        self.publish(&endpoints, &edges)?;
        let welcome = Welcome {
            center_url: &endpoints.api_url,
            link_url: &endpoints.second_url,
            ca: &self.layout.center_ca(),
            password: &self.state.admin_password,
            logs: &self.layout.logs(),
            state_file: self.state_file.path(),
            edges: self
                .state
                .edges
                .iter()
                .zip(&edges)
                .map(|(edge, at)| EdgeView {
                    name: edge.name.clone(),
                    api_url: at.api_url.clone(),
                    devices_url: at.second_url.clone(),
                    devices: self.state.devices_of(&edge.id).count(),
                })
                .collect(),
            a_device: self.state.devices.first().map(|d| d.id.as_str()),
            group_all: &group_all,
        }
        .render();
        self.console.say(welcome);
        if self.once {
            self.exercise(&center, &group_all).await
        } else {
            self.watch(&center).await
        }
    }

    /// Writes where everything listens to the endpoints file, for scripts such as
    /// `tests/shell/federation.sh`; it holds no secret (those are in the state file).
    fn publish(&self, center: &Endpoints, edges: &[Endpoints]) -> Result<(), Error> {
        let edges: Vec<_> = self
            .state
            .edges
            .iter()
            .zip(edges)
            .map(|(edge, at)| {
                serde_json::json!({
                    "name": edge.name,
                    "id": edge.id,
                    "api_url": at.api_url,
                    "devices_url": at.second_url,
                    "ca": self.layout.edge_ca(&edge.name),
                })
            })
            .collect();
        let endpoints = serde_json::json!({
            "center": {
                "api_url": center.api_url,
                "link_url": center.second_url,
                "ca": self.layout.center_ca(),
            },
            "edges": edges,
            "agent": self.binaries.agent,
            "state_file": self.state_file.path(),
        });
        write_private(
            &self.layout.endpoints_file(),
            endpoints.to_string().as_bytes(),
        )
    }

    /// A command for one of the binaries, run in `dir`.
    fn command(program: &Path, dir: &Path) -> Command {
        let mut command = Command::new(program);
        command.current_dir(dir).env("NO_COLOR", "1");
        // A CENTER_…, EDGE_… or AGENT_… variable left in the shell would change what
        // the children do (say CENTER_DATABASE_URL, or a config file): they get only
        // the settings given here.
        for (key, _) in std::env::vars_os() {
            let ours = key
                .to_str()
                .is_some_and(|k| SETTING_PREFIXES.iter().any(|p| k.starts_with(p)));
            if ours {
                command.env_remove(&key);
            }
        }
        command
    }

    async fn start_center(&mut self) -> Result<(Center, Endpoints), Error> {
        let dir = self.layout.center_dir();
        std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
        let mut command = Self::command(&self.binaries.center, &dir);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.ports.center_api()))
            .arg("--link-listen")
            .arg(format!("127.0.0.1:{}", self.ports.center_link()))
            .arg("--data-dir")
            .arg(&dir)
            // Used only when the database has no account yet, i.e. on the first start;
            // passing it every time also covers a first start that failed half-way.
            .env("CENTER_ADMIN_PASSWORD", &self.state.admin_password);
        if let Some(url) = self.databases.center() {
            command.env("CENTER_DATABASE_URL", url);
        }
        self.console.say("starting the center");
        let process = self.fleet.center.insert(Process::spawn(
            "center",
            command,
            self.layout.log("center"),
        )?);
        let deadline = Instant::now() + START_TIMEOUT;
        let link_url = process.announced("edges link to ", deadline).await?;
        let api_url = process.announced("center listening on ", deadline).await?;
        let http = https_client(&self.layout.center_ca())?;
        await_ready(process, &http, &api_url, deadline).await?;
        let center = Center::login(http, &api_url, &self.state.admin_password).await?;
        Ok((
            center,
            Endpoints {
                api_url,
                second_url: link_url,
            },
        ))
    }

    /// A state whose edges the center does not know belongs to another database.
    async fn check_known(&self, center: &Center) -> Result<(), Error> {
        let known = center.edges().await?;
        for edge in &self.state.edges {
            if !known.iter().any(|k| k["id"] == edge.id.as_str()) {
                return Err(Error::State {
                    path: self.state_file.path().to_path_buf(),
                    message: format!(
                        "the center does not know {} (id {}): its database is not the one \
                         this state was made with; start over with a new --data-dir",
                        edge.name, edge.id
                    ),
                });
            }
        }
        Ok(())
    }

    async fn start_edges(
        &mut self,
        center: &Center,
        at: &Endpoints,
    ) -> Result<Vec<Endpoints>, Error> {
        self.console
            .say(format!("starting {} edges", self.state.edges.len()));
        for (i, edge) in self.state.edges.iter().enumerate() {
            let dir = self.layout.edge_dir(&edge.name);
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            let mut command = Self::command(&self.binaries.edge, &dir);
            command
                .arg("serve")
                .arg("--listen")
                .arg(format!("127.0.0.1:{}", self.ports.edge_api(i)))
                .arg("--device-listen")
                .arg(format!("127.0.0.1:{}", self.ports.edge_devices(i)))
                .arg("--data-dir")
                .arg(&dir)
                .arg("--worker-id")
                .arg(edge.worker_id.to_string())
                .arg("--center-url")
                .arg(&at.second_url)
                .arg("--center-api-url")
                .arg(&at.api_url)
                .arg("--edge-id")
                .arg(&edge.id)
                .arg("--center-ca")
                .arg(self.layout.center_ca())
                // Every simulated device dials from 127.0.0.1, where a real site's
                // come from as many addresses as devices.
                .arg("--max-unauthenticated-per-source")
                .arg(self.state.devices_of(&edge.id).count().max(64).to_string())
                // In the environment rather than on the command line, where `ps`
                // would show it.
                .env("EDGE_EDGE_SECRET", &edge.secret)
                .env("EDGE_ADMIN_PASSWORD", &self.state.admin_password);
            if let Some(url) = self.databases.edge(&edge.name) {
                command.env("EDGE_DATABASE_URL", url);
            }
            self.fleet.edges.push(Process::spawn(
                &edge.name,
                command,
                self.layout.log(&edge.name),
            )?);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        let mut endpoints = Vec::new();
        for (process, edge) in self.fleet.edges.iter_mut().zip(&self.state.edges) {
            let api_url = process.announced("edge listening on ", deadline).await?;
            let devices_url = process.announced("devices connect to ", deadline).await?;
            let http = https_client(&self.layout.edge_ca(&edge.name))?;
            await_ready(process, &http, &api_url, deadline).await?;
            endpoints.push(Endpoints {
                api_url,
                second_url: format!("{devices_url}/devices"),
            });
        }
        // Devices log in at their edge only once the edge has them, i.e. once it has
        // caught up with the center's log: refused logins would get the simulators'
        // address throttled.
        let deadline = Instant::now() + LINK_TIMEOUT;
        loop {
            let listed = center.edges().await?;
            let link_of = |id: &str| {
                listed
                    .iter()
                    .find(|l| l["id"] == id)
                    .map(|l| l["link"].clone())
                    .unwrap_or_default()
            };
            let lagging = self.state.edges.iter().position(|e| {
                let link = link_of(&e.id);
                !(link["online"] == true && link["pending_to_edge"] == 0)
            });
            let Some(i) = lagging else { break };
            self.fleet.check()?;
            if Instant::now() >= deadline {
                let link = link_of(&self.state.edges[i].id);
                return Err(self.fleet.edges[i].failure(format!(
                    "did not link to the center and catch up within {} s (its link at the center: {link})",
                    LINK_TIMEOUT.as_secs()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
        self.console.say("edges linked to the center");
        Ok(endpoints)
    }

    async fn start_simulators(
        &mut self,
        center: &Center,
        edges: &[Endpoints],
    ) -> Result<(), Error> {
        // Which edge each simulator serves, to name the one whose devices stay away.
        let mut served = Vec::new();
        for (edge, at) in self.state.edges.iter().zip(edges) {
            if self.state.devices_of(&edge.id).next().is_none() {
                continue;
            }
            let name = format!("devices-{}", edge.name);
            let dir = self.layout.simulator_dir(&edge.name);
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("creating {}", dir.display())))?;
            let credentials = dir.join("devices.csv");
            write_credentials(&credentials, self.state.devices_of(&edge.id))?;
            let mut command = Self::command(&self.binaries.agent, &dir);
            command
                .arg("simulate")
                .arg("--credentials")
                .arg(&credentials)
                .arg("--edge")
                .arg(&at.second_url)
                .arg("--ca")
                .arg(self.layout.edge_ca(&edge.name));
            self.fleet
                .simulators
                .push(Process::spawn(&name, command, self.layout.log(&name))?);
            served.push(edge.id.clone());
        }
        let total = self.state.devices.len();
        self.console
            .say(format!("starting {total} simulated devices"));
        let started = Instant::now();
        let timeout =
            ONLINE_TIMEOUT + ONLINE_TIMEOUT_PER_DEVICE * u32::try_from(total).unwrap_or(u32::MAX);
        loop {
            let online = center.online_devices().await?;
            let ours = self
                .state
                .devices
                .iter()
                .filter(|d| online.contains(&d.id))
                .count();
            self.console
                .progress(format!("devices online: {ours}/{total}"));
            if ours == total {
                break;
            }
            self.fleet.check()?;
            if started.elapsed() >= timeout {
                return Err(self.offline_failure(&online, &served, timeout));
            }
            tokio::time::sleep(POLL).await;
        }
        self.console.say(format!(
            "all {total} devices online at the center after {:.1} s",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    /// Names the first simulator with devices that did not come online.
    fn offline_failure(
        &self,
        online: &HashSet<String>,
        served: &[String],
        timeout: Duration,
    ) -> Error {
        for (process, edge) in self.fleet.simulators.iter().zip(served) {
            let mine: Vec<_> = self.state.devices_of(edge).collect();
            let up = mine.iter().filter(|d| online.contains(&d.id)).count();
            if up < mine.len() {
                return process.failure(format!(
                    "has only {up} of its {} devices online at the center after {} s",
                    mine.len(),
                    timeout.as_secs()
                ));
            }
        }
        Error::Once("devices did not come online".into())
    }

    /// `--once`: one group command to every device, and its batch to the end.
    async fn exercise(&mut self, center: &Center, group: &str) -> Result<(), Error> {
        self.console
            .say(format!("sending {ONCE_COMMAND} to the group `{GROUP_ALL}`"));
        let started = Instant::now();
        let batch_id = center
            .group_command(group, ONCE_COMMAND, ONCE_COMMAND_TIMEOUT_S)
            .await?;
        let batch = loop {
            let batch = center.batch(&batch_id).await?;
            if batch.done >= batch.total {
                break batch;
            }
            self.fleet.check()?;
            if started.elapsed() >= ONCE_BATCH_TIMEOUT {
                return Err(Error::Once(format!(
                    "batch {batch_id} did not finish within {} s: {}",
                    ONCE_BATCH_TIMEOUT.as_secs(),
                    batch.states
                )));
            }
            tokio::time::sleep(POLL).await;
        };
        let succeeded = batch.states["succeeded"].as_u64().unwrap_or(0);
        self.console.say(format!(
            "batch {batch_id}: {succeeded}/{} {ONCE_COMMAND} succeeded in {:.1} s",
            batch.total,
            started.elapsed().as_secs_f64()
        ));
        if succeeded != batch.total {
            return Err(Error::Once(format!(
                "batch {batch_id} finished, but not every command succeeded: {}",
                batch.states
            )));
        }
        let summary = Tally::new(&self.state).take(center).await?;
        self.console.say(format!("summary: {summary}"));
        Ok(())
    }

    /// Shows the live summary until a process dies (a signal ends it from outside).
    async fn watch(&mut self, center: &Center) -> Result<(), Error> {
        self.console.say("running; Ctrl-C stops everything");
        let every = if self.console.is_tty() {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(10)
        };
        let mut tally = Tally::new(&self.state);
        let started = Instant::now();
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                e = self.fleet.died() => return Err(e),
                _ = ticks.tick() => {}
            }
            let line = tokio::select! {
                e = self.fleet.died() => return Err(e),
                summary = tally.take(center) => match summary {
                    Ok(summary) => summary.to_string(),
                    Err(e) => e.to_string(),
                },
            };
            let up = started.elapsed().as_secs();
            self.console
                .live(format!("[up {}m{:02}s] {line}", up / 60, up % 60));
        }
    }
}

/// Waits until the node behind `process` answers `/readyz` with 200.
async fn await_ready(
    process: &mut Process,
    http: &reqwest::Client,
    api_url: &str,
    deadline: Instant,
) -> Result<(), Error> {
    let url = format!("{api_url}/readyz");
    loop {
        let last = match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => describe(&e),
        };
        if let Some(e) = process.exited("while starting") {
            return Err(e);
        }
        if Instant::now() >= deadline {
            return Err(process.failure(format!("was not ready in time: {url} answered {last}")));
        }
        tokio::time::sleep(POLL).await;
    }
}
