//! The center's operator API, as this tool uses it: registration, the edges' links,
//! devices' presence, commands. Every answer is the envelope `{status, message, data}`,
//! errors add `code`.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::error::Error;
use crate::state::{DeviceRecord, EdgeRecord};

/// The listings' largest page.
const PER_PAGE: usize = 1000;
/// What the devices are registered as; (model, sn) is unique at the center.
pub const DEVICE_MODEL: &str = "local-federation";

/// An HTTPS client that trusts `ca` only (the development CA of a node).
pub fn https_client(ca: &Path) -> Result<reqwest::Client, Error> {
    let pem = std::fs::read(ca).map_err(Error::io(format!("reading {}", ca.display())))?;
    let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| Error::Io {
        context: format!("reading {}", ca.display()),
        source: std::io::Error::other(e),
    })?;
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(cert)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| Error::Io {
            context: "setting up the HTTPS client".into(),
            source: std::io::Error::other(e),
        })
}

/// The message of an error and of each of its causes: reqwest's own message alone
/// ("error sending request") hides what went wrong.
pub fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// A logged-in admin session at the center.
pub struct Center {
    http: reqwest::Client,
    base: String,
    password: String,
    token: Mutex<String>,
}

struct Reply {
    status: u16,
    body: Value,
}

impl Reply {
    /// The envelope's `data` when the status is one of `ok`, otherwise an error that
    /// says what was being done and what the center answered.
    fn data(mut self, action: &str, ok: &[u16]) -> Result<Value, Error> {
        if ok.contains(&self.status) {
            return Ok(self.body["data"].take());
        }
        Err(self.error(action))
    }

    fn error(&self, action: &str) -> Error {
        Error::Api {
            action: action.to_string(),
            message: format!(
                "HTTP {} {}: {}",
                self.status,
                self.body["code"].as_str().unwrap_or(""),
                self.body["message"].as_str().unwrap_or("(no message)")
            ),
        }
    }
}

fn text(data: &Value, key: &str, action: &str) -> Result<String, Error> {
    data[key]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::Api {
            action: action.to_string(),
            message: format!("the answer has no `{key}`: {data}"),
        })
}

fn number(data: &Value, key: &str, action: &str) -> Result<u64, Error> {
    data[key].as_u64().ok_or_else(|| Error::Api {
        action: action.to_string(),
        message: format!("the answer has no `{key}`: {data}"),
    })
}

/// How a batch of commands is doing.
#[derive(Debug, Clone)]
pub struct Batch {
    pub total: u64,
    pub done: u64,
    /// Commands per state, e.g. `succeeded: 6`.
    pub states: Value,
}

impl Center {
    pub async fn login(http: reqwest::Client, base: &str, password: &str) -> Result<Self, Error> {
        let center = Self {
            http,
            base: base.to_string(),
            password: password.to_string(),
            token: Mutex::new(String::new()),
        };
        center.refresh_token().await?;
        Ok(center)
    }

    async fn refresh_token(&self) -> Result<(), Error> {
        let action = "logging in as admin";
        let reply = self
            .send(
                Method::POST,
                "/api/v1/auth/login",
                Some(&json!({"username": "admin", "password": self.password})),
                None,
                action,
            )
            .await?;
        if reply.status == 401 {
            return Err(Error::Api {
                action: action.into(),
                message: "the center refused the admin password of the state file; \
                          was its database replaced? Start over with a new --data-dir"
                    .into(),
            });
        }
        let token = text(&reply.data(action, &[200])?, "token", action)?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = token;
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        token: Option<&str>,
        action: &str,
    ) -> Result<Reply, Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let failed = |e: reqwest::Error| Error::Api {
            action: action.to_string(),
            message: describe(&e),
        };
        let response = request.send().await.map_err(failed)?;
        let status = response.status().as_u16();
        let body = response.json().await.map_err(failed)?;
        Ok(Reply { status, body })
    }

    /// A call as admin. Tokens expire (an hour by default) while the federation runs
    /// for longer, so a refused token is renewed once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Reply, Error> {
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let reply = self
            .send(method.clone(), path, body, Some(&token), action)
            .await?;
        if reply.status != 401 {
            return Ok(reply);
        }
        self.refresh_token().await?;
        let token = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.send(method, path, body, Some(&token), action).await
    }

    /// Every registered edge, with its link state.
    pub async fn edges(&self) -> Result<Vec<Value>, Error> {
        let action = "listing edges";
        let data = self
            .call(
                Method::GET,
                &format!("/api/v1/edges?per_page={PER_PAGE}"),
                None,
                action,
            )
            .await?
            .data(action, &[200])?;
        Ok(data["items"].as_array().cloned().unwrap_or_default())
    }

    pub async fn register_edge(&self, name: &str) -> Result<EdgeRecord, Error> {
        let action = format!("registering edge {name}");
        let reply = self
            .call(
                Method::POST,
                "/api/v1/edges",
                Some(&json!({"name": name, "site": name})),
                &action,
            )
            .await?;
        let data = if reply.status == 409 {
            // Registered by an earlier run that stopped before saving it. Its secret was
            // shown only then, so it gets a new one.
            let edges = self.edges().await?;
            let Some(existing) = edges.iter().find(|e| e["name"] == name) else {
                // Refused for another reason, e.g. every worker id is taken.
                return Err(reply.error(&action));
            };
            let id = text(existing, "id", &action)?;
            self.call(
                Method::POST,
                &format!("/api/v1/edges/{id}/secret"),
                None,
                &action,
            )
            .await?
            .data(&action, &[200])?
        } else {
            reply.data(&action, &[201])?
        };
        Ok(EdgeRecord {
            name: name.to_string(),
            id: text(&data, "id", &action)?,
            worker_id: number(&data, "worker_id", &action)?,
            secret: text(&data, "secret", &action)?,
        })
    }

    /// The id of the group `name`, created when missing.
    pub async fn ensure_group(&self, name: &str) -> Result<String, Error> {
        let action = format!("creating the group {name}");
        let reply = self
            .call(
                Method::POST,
                "/api/v1/groups",
                Some(&json!({"name": name, "description": "every device of the local federation"})),
                &action,
            )
            .await?;
        if reply.status != 409 {
            return text(&reply.data(&action, &[201])?, "id", &action);
        }
        let data = self
            .call(
                Method::GET,
                &format!("/api/v1/groups?name={name}&per_page={PER_PAGE}"),
                None,
                &action,
            )
            .await?
            .data(&action, &[200])?;
        let items = data["items"].as_array().cloned().unwrap_or_default();
        match items.iter().find(|g| g["name"] == name) {
            Some(group) => text(group, "id", &action),
            None => Err(Error::Api {
                action,
                message: "the center says it exists but does not list it".into(),
            }),
        }
    }

    /// Registers a device homed at `edge_id` and placed in `group`.
    pub async fn register_device(
        &self,
        sn: &str,
        edge_id: &str,
        group: &str,
    ) -> Result<DeviceRecord, Error> {
        let action = format!("registering device {sn}");
        let body = json!({
            "name": sn,
            "type": "simulated",
            "hardware": {"model": DEVICE_MODEL, "sn": sn},
            "software": {"version": "1.0.0"},
            "status": "active",
            "edge_id": edge_id,
            "groups": [group],
        });
        let reply = self
            .call(Method::POST, "/api/v1/devices", Some(&body), &action)
            .await?;
        let data = if reply.status == 409 {
            // As for edges: registered before the state was saved, so a new secret.
            let found = self
                .call(
                    Method::GET,
                    &format!("/api/v1/devices?model={DEVICE_MODEL}&sn={sn}"),
                    None,
                    &action,
                )
                .await?
                .data(&action, &[200])?;
            let id = text(&found["items"][0], "id", &action)?;
            self.call(
                Method::POST,
                &format!("/api/v1/devices/{id}/secret"),
                None,
                &action,
            )
            .await?
            .data(&action, &[200])?
        } else {
            reply.data(&action, &[201])?
        };
        Ok(DeviceRecord {
            sn: sn.to_string(),
            id: text(&data, "id", &action)?,
            secret: text(&data, "secret", &action)?,
            edge_id: text(&data, "edge_id", &action)?,
        })
    }

    /// The ids of the devices online at their edge now, walking the whole device
    /// list by keyset pages (the cheap way deep into a large fleet).
    pub async fn online_devices(&self) -> Result<HashSet<String>, Error> {
        let action = "listing devices";
        let mut online = HashSet::new();
        let mut after = String::new();
        loop {
            let mut path = format!("/api/v1/devices?per_page={PER_PAGE}");
            if !after.is_empty() {
                path.push_str("&after=");
                path.push_str(&after);
            }
            let data = self
                .call(Method::GET, &path, None, action)
                .await?
                .data(action, &[200])?;
            let items = data["items"].as_array().cloned().unwrap_or_default();
            for d in &items {
                if d["online"] == true {
                    online.insert(text(d, "id", action)?);
                }
            }
            match items.last() {
                Some(last) if items.len() == PER_PAGE => after = text(last, "id", action)?,
                _ => return Ok(online),
            }
        }
    }

    /// How many commands `device` has, all or in one state. Only the listing's
    /// `total` is read, so one row comes back whatever the count.
    pub async fn command_count(&self, device: &str, state: Option<&str>) -> Result<u64, Error> {
        let action = "counting commands";
        let mut path = format!("/api/v1/devices/{device}/commands?per_page=1");
        if let Some(state) = state {
            path.push_str("&state=");
            path.push_str(state);
        }
        let data = self
            .call(Method::GET, &path, None, action)
            .await?
            .data(action, &[200])?;
        number(&data, "total", action)
    }

    /// Sends `name` to every member of `group` as one batch; answers the batch id.
    pub async fn group_command(
        &self,
        group: &str,
        name: &str,
        timeout_s: u64,
    ) -> Result<String, Error> {
        let action = format!("sending {name} to the group");
        let data = self
            .call(
                Method::POST,
                &format!("/api/v1/groups/{group}/commands"),
                Some(&json!({"name": name, "timeout_s": timeout_s})),
                &action,
            )
            .await?
            .data(&action, &[202])?;
        text(&data, "batch_id", &action)
    }

    pub async fn batch(&self, id: &str) -> Result<Batch, Error> {
        let action = format!("reading batch {id}");
        let data = self
            .call(Method::GET, &format!("/api/v1/batches/{id}"), None, &action)
            .await?
            .data(&action, &[200])?;
        Ok(Batch {
            total: number(&data, "total", &action)?,
            done: number(&data, "done", &action)?,
            states: data["states"].clone(),
        })
    }
}
