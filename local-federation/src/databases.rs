//! Where each node keeps its data: its own SQLite file in its directory by default,
//! or its own database on one MySQL server, created here when missing.

use sea_orm::ConnectionTrait;

use crate::error::Error;

/// The nodes' databases on a MySQL server, named after the URL's database as a
/// prefix; none (so SQLite) without a URL.
#[derive(Debug, Clone)]
pub struct Databases {
    server: Option<reqwest::Url>,
    prefix: String,
}

const DEFAULT_DATABASE_PREFIX: &str = "federation";

impl Databases {
    pub fn new(url: Option<&str>) -> Result<Self, Error> {
        let Some(url) = url else {
            return Ok(Self {
                server: None,
                prefix: String::new(),
            });
        };
        let bad = |why: &str| Error::Options(format!("--database-url: {why}"));
        let server = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if server.scheme() != "mysql" {
            return Err(bad(
                "give a mysql:// URL (without it, every node uses SQLite)",
            ));
        }
        let prefix = server.path().trim_matches('/');
        let prefix = if prefix.is_empty() {
            DEFAULT_DATABASE_PREFIX
        } else {
            prefix
        };
        // The names are used unquoted by operators at a mysql prompt, so keep them
        // to what needs no quoting.
        if !prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(bad(&format!(
                "the database name `{prefix}` is the prefix of every node's database: use letters, digits and _"
            )));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            server: Some(server),
        })
    }

    pub fn center(&self) -> Option<String> {
        self.named("center")
    }

    /// Edge `edge` (`edge-1`...) uses `<prefix>_edge_1`...
    pub fn edge(&self, edge: &str) -> Option<String> {
        self.named(edge)
    }

    /// Creates the center's and the edges' databases where missing: a first run
    /// should need nothing but a server and an account allowed to create them.
    pub async fn create(&self, edges: impl Iterator<Item = String>) -> Result<(), Error> {
        let Some(server) = &self.server else {
            return Ok(());
        };
        let mut at_server = server.clone();
        at_server.set_path("");
        let failed = |action: &str, e: sea_orm::DbErr| Error::Database {
            action: action.to_owned(),
            source: e,
        };
        let connection = sea_orm::Database::connect(at_server.as_str())
            .await
            .map_err(|e| failed("connecting to --database-url", e))?;
        for node in std::iter::once("center".to_owned()).chain(edges) {
            let name = self.name(&node);
            connection
                .execute_unprepared(&format!("CREATE DATABASE IF NOT EXISTS `{name}`"))
                .await
                .map_err(|e| failed(&format!("creating database {name}"), e))?;
        }
        connection
            .close()
            .await
            .map_err(|e| failed("closing the connection to --database-url", e))
    }

    fn named(&self, node: &str) -> Option<String> {
        let mut url = self.server.clone()?;
        url.set_path(&format!("/{}", self.name(node)));
        Some(url.to_string())
    }

    /// The database of `node` (`center`, `edge-1`...), in the characters `new` allows.
    fn name(&self, node: &str) -> String {
        format!("{}_{}", self.prefix, node.replace('-', "_"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_gets_a_database_named_after_the_urls() {
        let dbs = Databases::new(Some("mysql://u:p@127.0.0.1:3306/fed")).expect("valid");
        assert_eq!(
            dbs.center().as_deref(),
            Some("mysql://u:p@127.0.0.1:3306/fed_center")
        );
        assert_eq!(
            dbs.edge("edge-2").as_deref(),
            Some("mysql://u:p@127.0.0.1:3306/fed_edge_2")
        );
        let dbs = Databases::new(Some("mysql://u@127.0.0.1")).expect("valid");
        assert_eq!(
            dbs.center().as_deref(),
            Some("mysql://u@127.0.0.1/federation_center")
        );
    }

    #[test]
    fn without_a_url_every_node_uses_sqlite() {
        let dbs = Databases::new(None).expect("valid");
        assert_eq!(dbs.center(), None);
        assert_eq!(dbs.edge("edge-1"), None);
    }

    #[test]
    fn a_url_that_is_not_mysql_or_names_an_odd_database_is_refused() {
        for bad in ["sqlite://x.db", "not a url", "mysql://u@h/my-db"] {
            let e = Databases::new(Some(bad)).expect_err(bad);
            assert!(e.to_string().contains("--database-url"), "{bad}: {e}");
        }
    }
}
