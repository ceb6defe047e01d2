//! Where a connector's HTTP may connect: the address policy checked at connect
//! time, and the dialer that connects only to addresses it checked.
//!
//! A name is resolved (or taken from the grant's pinned names), and **every**
//! address it resolves to is classified; an address in a denied class
//! (loopback, private, shared CGNAT, link-local with the cloud metadata address,
//! unique-local, multicast, unspecified, broadcast, `0.0.0.0/8`, and the same
//! addresses written as IPv4-mapped, IPv4-compatible or NAT64 IPv6) refuses the
//! whole connection unless the connection allows a network holding it. The dialer
//! then connects to the checked addresses themselves, never to the name again, so
//! a DNS answer cannot change between the check and the connect (rebinding); each
//! new connection resolves and checks again. TLS runs over that checked TCP
//! connection.
//!
//! What counts as an explicit permission (see [`DialPolicy::for_request`]): a
//! network in the connection's `allowed_networks`, or an allowlist entry that
//! names the address itself: a literal IP (`127.0.0.1:8080` grants 127.0.0.1) or
//! `localhost` (grants the loopback addresses `localhost` resolves to). A name that
//! merely resolves to a private address is refused: allowing `api.example.com`
//! never grants whatever network its DNS points at.
//!
//! This module must never connect to an address it did not check, and never
//! decide by a host name's text alone.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls;

/// The kinds of address a connector may not reach unless its connection allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// Carrier-grade NAT, `100.64.0.0/10`.
    SharedCgnat,
    /// `169.254.0.0/16` (with the cloud metadata address 169.254.169.254),
    /// `fe80::/10`.
    LinkLocal,
    /// `fc00::/7`.
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `255.255.255.255`.
    Broadcast,
    /// `0.0.0.0/8`: "this network", which Linux connects to the local host.
    ThisNetwork,
}

impl AddressClass {
    /// The class's name, as errors say it.
    pub fn name(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::SharedCgnat => "shared (CGNAT)",
            AddressClass::LinkLocal => "link-local",
            AddressClass::UniqueLocal => "unique-local",
            AddressClass::Multicast => "multicast",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Broadcast => "broadcast",
            AddressClass::ThisNetwork => "this-network (0.0.0.0/8)",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The denied class `ip` belongs to, or `None` for a public address. IPv6 forms
/// that carry an IPv4 address (mapped `::ffff:a.b.c.d`, compatible `::a.b.c.d`,
/// NAT64 `64:ff9b::a.b.c.d`) are classified by that IPv4 address.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => classify_v4(v4),
            None => classify_v6(v6),
        },
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if a == 0 {
        AddressClass::ThisNetwork
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if a == 100 && (b & 0xc0) == 64 {
        AddressClass::SharedCgnat
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if ip.is_broadcast() {
        AddressClass::Broadcast
    } else {
        return None;
    })
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if (first & 0xfe00) == 0xfc00 {
        AddressClass::UniqueLocal
    } else if (first & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else {
        return None;
    })
}

/// The IPv4 address an IPv6 address stands for, if it is written as one.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    // IPv4-compatible (`::a.b.c.d`, deprecated but still routed by some stacks);
    // `::` and `::1` are IPv6's own.
    if s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback() {
        return Some(tail);
    }
    // The NAT64 well-known prefix `64:ff9b::/96` reaches the IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail);
    }
    None
}

/// A network a connection's `allowed_networks` names, e.g. `127.0.0.0/8` or a
/// single address `10.1.2.3`.
pub fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
        format!("`{text}` is not a network: write a CIDR such as `10.0.0.0/8` or an address")
    })
}

/// A connection refused before connecting: one of the addresses its host resolves
/// to is in a denied class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} resolves to {address}, a {class} address; connectors may not reach it \
     unless the connection lists a network holding it in `allowed_networks`"
)]
pub struct AddressRefused {
    /// The host as the request named it.
    pub host: String,
    /// The refused address.
    pub address: IpAddr,
    /// Its class.
    pub class: AddressClass,
}

/// Why a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// An address the host resolves to is denied.
    #[error(transparent)]
    Refused(#[from] AddressRefused),
    /// The name did not resolve.
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// What the resolver said.
        source: io::Error,
    },
    /// No checked address accepted a connection.
    #[error("cannot connect to {host}: {source}")]
    Connect {
        /// The host.
        host: String,
        /// The last connect error.
        source: io::Error,
    },
    /// The connection took longer than the connect timeout.
    #[error("connecting to {host} timed out after {} ms", .timeout.as_millis())]
    Timeout {
        /// The host.
        host: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The TLS handshake failed.
    #[error("TLS with {host} failed: {source}")]
    Tls {
        /// The host.
        host: String,
        /// The handshake error.
        source: io::Error,
    },
    /// The URL has no host, or one TLS cannot name.
    #[error("invalid host in {0}")]
    BadHost(String),
}

/// The addresses one connection may reach beyond the public ones, and the names
/// it resolves without DNS. Pooled connections are shared only between requests
/// with equal policies, so a connection opened under one never serves another.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct DialPolicy {
    /// Networks whose addresses are allowed whatever their class.
    pub allowed: Vec<IpNet>,
    /// Names resolved to these addresses instead of by DNS.
    pub pinned: Vec<(String, Vec<IpAddr>)>,
}

impl DialPolicy {
    /// The policy of a request to `host` (normalised: lowercase, IPv6 in
    /// brackets) under a connection's allowlist, allowed networks and pinned names.
    ///
    /// Beyond `allowed_networks`, an allowlist entry that names the request's host
    /// exactly grants that host's addresses when the host is a literal IP (the
    /// operator wrote the address itself) or `localhost` (it can only mean the
    /// loopback addresses). Wildcards never grant: `*.0.0.1` matching `127.0.0.1`
    /// is not a statement about loopback.
    pub fn for_request(
        host: &str,
        allowed_hosts: &[String],
        allowed_networks: &[IpNet],
        pinned: &[(String, Vec<IpAddr>)],
    ) -> Self {
        let mut allowed = allowed_networks.to_vec();
        let named = allowed_hosts.iter().any(|entry| {
            let entry = entry.trim().to_ascii_lowercase();
            let entry_host = match entry.rsplit_once(':') {
                Some((h, p)) if p.parse::<u16>().is_ok() && !h.ends_with(':') => h.to_owned(),
                _ => entry,
            };
            entry_host == host
                || literal_ip(&entry_host).is_some_and(|ip| Some(ip) == literal_ip(host))
        });
        if named {
            if let Some(ip) = literal_ip(host) {
                allowed.push(IpNet::from(ip));
            } else if host == "localhost" {
                allowed.push(IpNet::V4(ipnet::Ipv4Net::new_assert(
                    Ipv4Addr::new(127, 0, 0, 0),
                    8,
                )));
                allowed.push(IpNet::from(IpAddr::V6(Ipv6Addr::LOCALHOST)));
            }
        }
        allowed.sort();
        allowed.dedup();
        Self {
            allowed,
            pinned: pinned.to_vec(),
        }
    }

    /// Check one address of `host`.
    pub fn check(&self, host: &str, address: IpAddr) -> Result<(), AddressRefused> {
        let Some(class) = classify(address) else {
            return Ok(());
        };
        // A mapped or compatible address is allowed by the network of either form.
        let alternative = match address {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allowed
            .iter()
            .any(|net| net.contains(&address) || alternative.is_some_and(|a| net.contains(&a)))
        {
            return Ok(());
        }
        Err(AddressRefused {
            host: host.to_owned(),
            address,
            class,
        })
    }

    /// Resolve `host` and check every address; the checked addresses on `port`.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, DialError> {
        let addresses: Vec<IpAddr> = if let Some(ip) = literal_ip(host) {
            vec![ip]
        } else if let Some((_, pinned)) = self.pinned.iter().find(|(name, _)| name == host) {
            pinned.clone()
        } else {
            tokio::net::lookup_host((host, port))
                .await
                .map_err(|source| DialError::Resolve {
                    host: host.to_owned(),
                    source,
                })?
                .map(|a| a.ip())
                .collect()
        };
        if addresses.is_empty() {
            return Err(DialError::Resolve {
                host: host.to_owned(),
                source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
            });
        }
        for address in &addresses {
            self.check(host, *address)?;
        }
        Ok(addresses
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect())
    }
}

/// The IP a URL host is, if it is a literal (IPv6 in brackets).
pub fn literal_ip(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

/// Connects hyper's pooled client: resolve and check under the policy, TCP to the
/// checked addresses in turn, then TLS for `https`.
#[derive(Clone)]
pub struct Dialer {
    policy: Arc<DialPolicy>,
    connect_timeout: Duration,
}

impl Dialer {
    /// A dialer under `policy`, giving each connection `connect_timeout` in all.
    pub fn new(policy: Arc<DialPolicy>, connect_timeout: Duration) -> Self {
        Self {
            policy,
            connect_timeout,
        }
    }

    async fn dial(self, uri: http::Uri) -> Result<TokioIo<Stream>, DialError> {
        let host = uri
            .host()
            .ok_or_else(|| DialError::BadHost(uri.to_string()))?
            .to_ascii_lowercase();
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let timeout = self.connect_timeout;
        let connect = async {
            let addresses = self.policy.resolve(&host, port).await?;
            let mut last = None;
            for address in addresses {
                match TcpStream::connect(address).await {
                    Ok(tcp) => return Ok(tcp),
                    Err(e) => last = Some(e),
                }
            }
            Err(DialError::Connect {
                host: host.clone(),
                source: last.unwrap_or_else(|| io::Error::other("no address")),
            })
        };
        let tcp =
            tokio::time::timeout(timeout, connect)
                .await
                .map_err(|_| DialError::Timeout {
                    host: host.clone(),
                    timeout,
                })??;
        // Small requests and answers: send at once rather than wait for more.
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(TokioIo::new(Stream::Plain(tcp)));
        }
        let bare = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let name = rustls::pki_types::ServerName::try_from(bare)
            .map_err(|_| DialError::BadHost(host.clone()))?;
        let tls =
            tokio::time::timeout(timeout, TlsConnector::from(tls_config()).connect(name, tcp))
                .await
                .map_err(|_| DialError::Timeout {
                    host: host.clone(),
                    timeout,
                })?
                .map_err(|source| DialError::Tls {
                    host: host.clone(),
                    source,
                })?;
        Ok(TokioIo::new(Stream::Tls(Box::new(tls))))
    }
}

impl tower_service::Service<http::Uri> for Dialer {
    type Response = TokioIo<Stream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), DialError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(self.clone().dial(uri))
    }
}

/// The client's TLS settings: the WebPKI roots, with the ring provider named so
/// that no process-wide default has to be installed.
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.into(),
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
                // The ring provider supports the default versions; should that
                // ever change, fall back to the process default.
                Err(_) => rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            };
            Arc::new(config)
        })
        .clone()
}

/// A dialed connection: plain TCP or TLS over it.
pub enum Stream {
    /// `http`.
    Plain(TcpStream),
    /// `https`.
    Tls(Box<TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn every_denied_class_is_named() {
        use AddressClass::*;
        let cases = [
            ("127.0.0.1", Some(Loopback)),
            ("127.255.0.9", Some(Loopback)),
            ("::1", Some(Loopback)),
            ("10.1.2.3", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.254", Some(SharedCgnat)),
            ("169.254.169.254", Some(LinkLocal)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fc00::1", Some(UniqueLocal)),
            ("fd12:3456::1", Some(UniqueLocal)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("ff02::1", Some(Multicast)),
            ("0.0.0.0", Some(Unspecified)),
            ("::", Some(Unspecified)),
            ("255.255.255.255", Some(Broadcast)),
            ("0.1.2.3", Some(ThisNetwork)),
            // Public neighbours of every range.
            ("8.8.8.8", None),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("169.255.0.1", None),
            ("11.0.0.1", None),
            ("2606:4700::1111", None),
            ("fec0::1", None),
        ];
        for (address, class) in cases {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn ipv6_forms_of_ipv4_addresses_are_classified_by_the_ipv4_address() {
        use AddressClass::*;
        let cases = [
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:7f00:1", Some(Loopback)),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:169.254.169.254", Some(LinkLocal)),
            ("::ffff:100.64.0.1", Some(SharedCgnat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:224.0.0.1", Some(Multicast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("::127.0.0.1", Some(Loopback)),
            ("::192.168.0.1", Some(Private)),
            ("::0.0.0.2", Some(ThisNetwork)),
            ("64:ff9b::169.254.169.254", Some(LinkLocal)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::8.8.8.8", None),
        ];
        for (address, class) in cases {
            assert_eq!(classify(ip(address)), class, "{address}");
        }
    }

    #[test]
    fn allowed_networks_and_literal_entries_grant_explicitly() {
        let none = DialPolicy::for_request("api.test", &["api.test".into()], &[], &[]);
        let e = none.check("api.test", ip("127.0.0.1")).unwrap_err();
        assert_eq!(e.class, AddressClass::Loopback);
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(none.check("api.test", ip("1.1.1.1")).is_ok());

        let nets = [parse_network("127.0.0.0/8").unwrap()];
        let allowed = DialPolicy::for_request("api.test", &["api.test".into()], &nets, &[]);
        assert!(allowed.check("api.test", ip("127.0.0.9")).is_ok());
        assert!(allowed.check("api.test", ip("::ffff:127.0.0.9")).is_ok());
        assert!(allowed.check("api.test", ip("10.0.0.1")).is_err());

        let literal = DialPolicy::for_request("127.0.0.1", &["127.0.0.1:8080".into()], &[], &[]);
        assert!(literal.check("127.0.0.1", ip("127.0.0.1")).is_ok());
        assert!(literal.check("127.0.0.1", ip("127.0.0.2")).is_err());

        let v6 = DialPolicy::for_request("[::1]", &["[::1]:8080".into()], &[], &[]);
        assert!(v6.check("[::1]", ip("::1")).is_ok());

        let localhost = DialPolicy::for_request("localhost", &["localhost".into()], &[], &[]);
        assert!(localhost.check("localhost", ip("127.0.0.1")).is_ok());
        assert!(localhost.check("localhost", ip("::1")).is_ok());
        assert!(localhost.check("localhost", ip("10.0.0.1")).is_err());

        let wildcard = DialPolicy::for_request("127.0.0.1", &["*.0.0.1".into()], &[], &[]);
        assert!(wildcard.check("127.0.0.1", ip("127.0.0.1")).is_err());
    }

    #[test]
    fn networks_parse_as_cidrs_or_addresses() {
        assert_eq!(
            parse_network("10.0.0.0/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(
            parse_network("10.1.2.3/8").unwrap().to_string(),
            "10.0.0.0/8"
        );
        assert_eq!(parse_network("::1").unwrap().to_string(), "::1/128");
        assert!(
            parse_network("localhost")
                .unwrap_err()
                .contains("not a network")
        );
    }

    #[tokio::test]
    async fn pinned_names_are_checked_like_resolved_ones() {
        let pinned = vec![(
            "evil.test".to_owned(),
            vec![ip("1.1.1.1"), ip("169.254.169.254")],
        )];
        let policy = DialPolicy::for_request("evil.test", &["evil.test".into()], &[], &pinned);
        match policy.resolve("evil.test", 80).await {
            Err(DialError::Refused(e)) => {
                assert_eq!(e.address, ip("169.254.169.254"));
                assert_eq!(e.class, AddressClass::LinkLocal);
            }
            other => panic!("every address is checked; got {other:?}"),
        }
    }
}
