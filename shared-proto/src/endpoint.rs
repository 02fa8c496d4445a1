//! The WebSocket URLs clients dial: devices their edges (`wss://edge:9444/devices`),
//! edges the center (`wss://center:8444/link`). `ws://` is plain, for a peer behind a
//! TLS-terminating proxy.

/// A parsed `ws://` or `wss://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl Endpoint {
    /// `None` for anything but a `ws://` or `wss://` URL with a host.
    pub fn parse(url: &str) -> Option<Self> {
        let (tls, rest) = match url.split_once("://")? {
            ("wss", rest) => (true, rest),
            ("ws", rest) => (false, rest),
            _ => return None,
        };
        let authority = rest.split('/').next()?;
        let (host, port) = match authority.rsplit_once(':') {
            // A colon inside brackets belongs to an IPv6 address, not to a port.
            Some((host, port)) if !port.ends_with(']') => (host, port.parse().ok()?),
            _ => (authority, if tls { 443 } else { 80 }),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        (!host.is_empty()).then(|| Self {
            url: url.to_string(),
            host: host.to_string(),
            port,
            tls,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Endpoint;

    #[test]
    fn urls_parse() {
        let t = Endpoint::parse("wss://edge-a.example:9444/devices").expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("edge-a.example", 9444));
        let t = Endpoint::parse("wss://[::1]:9444").expect("parses");
        assert_eq!((t.host.as_str(), t.port), ("::1", 9444));
        assert_eq!(Endpoint::parse("wss://host/x").map(|t| t.port), Some(443));
        assert_eq!(Endpoint::parse("wss://[::1]/x").map(|t| t.port), Some(443));
        let t = Endpoint::parse("ws://127.0.0.1:9444/devices").expect("parses");
        assert_eq!((t.host.as_str(), t.port, t.tls), ("127.0.0.1", 9444, false));
        assert_eq!(Endpoint::parse("ws://plain").map(|t| t.port), Some(80));
        for bad in [
            "ftp://host:1",
            "https://host",
            "wss://",
            "ws://:9444",
            "wss://h:port",
        ] {
            assert!(Endpoint::parse(bad).is_none(), "{bad}");
        }
    }
}
