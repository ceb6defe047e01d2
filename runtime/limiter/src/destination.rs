//! Where a request goes, normalised: the one form rules, keys and breakers are
//! matched and named by, so that two spellings of one destination (upper case, a
//! trailing dot, a port with leading zeros or left at its default) are one.
//!
//! Owns normalising a host and port it is given; it never parses a URL (the host's
//! egress does, and refuses what a destination cannot carry, such as user info).

/// A request's destination: lowercase host without a trailing dot, the port as a
/// number, and whether that port is its scheme's default.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    host: String,
    port: u16,
    default_port: bool,
}

impl Destination {
    /// `host` (as in a URL: an IPv6 address in brackets) on `port`, for a scheme
    /// whose default port is `default_port`.
    pub fn new(host: &str, port: u16, default_port: u16) -> Self {
        let host = host.to_ascii_lowercase();
        let host = match host.strip_suffix('.') {
            Some(h) if !h.is_empty() => h.to_owned(),
            _ => host,
        };
        Self {
            host,
            port,
            default_port: port == default_port,
        }
    }

    /// The normalised host.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port, the scheme's default when the URL names none.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `host`, or `host:port` when the port is not the scheme's default: how keys,
    /// breakers and the request log name the destination.
    pub fn authority(&self) -> String {
        if self.default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_destination_are_one() {
        let a = Destination::new("API.Example.com.", 443, 443);
        let b = Destination::new("api.example.com", 443, 443);
        assert_eq!(a, b);
        assert_eq!(a.authority(), "api.example.com");
        assert_eq!(Destination::new("h", 8080, 80).authority(), "h:8080");
        assert_eq!(Destination::new("[::1]", 80, 80).authority(), "[::1]");
    }
}
