//! Reaching PostgreSQL: a store URL parsed into a connection pool, optional TLS, and
//! the URL as it may be shown.
//!
//! Owns the pool's settings. It must never log or return a URL with its password: every
//! message names the store by [`redact_url`].

use std::str::FromStr;
use std::sync::Arc;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::config::SslMode;

use super::errors::describe;
use crate::StoreError;

/// How a node uses its PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Most connections the node opens (the committer takes one per group of
    /// writes, reads share the rest).
    pub max_connections: usize,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
        }
    }
}

/// `url` with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                // Only URLs that cannot have a password refuse one; this one has one.
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "<a postgres:// URL that does not parse>".to_owned(),
    }
}

/// Whether `location` names a PostgreSQL store (`postgres://` or `postgresql://`).
pub fn is_postgres_url(location: &str) -> bool {
    location.starts_with("postgres://") || location.starts_with("postgresql://")
}

/// A pool of connections to the store at `url`, checked by opening one.
///
/// TLS follows the URL's `sslmode`: `disable` (the default when the URL names none:
/// a database on the same host or network needs none), `prefer`, or `require` (also
/// spelled `verify-ca` or `verify-full`: the server's certificate and name are always
/// checked), against the web's root authorities or the PEM file `sslrootcert` names.
/// How long the server lets a session of this store sit idle inside a transaction
/// before it ends it, releasing its locks: a bound on how long a frozen or cut-off
/// node holds up the others.
pub(crate) const IDLE_IN_TRANSACTION_MS: u64 = 10_000;

pub(crate) async fn connect(url: &str, options: &PgOptions) -> Result<Pool, StoreError> {
    let shown = redact_url(url);
    let unreachable = |reason: String| StoreError::Unreachable {
        url: shown.clone(),
        reason,
    };
    let (url, root_cert) = tls_settings(url);
    let mut config = tokio_postgres::Config::from_str(&url)
        .map_err(|e| unreachable(format!("not a valid PostgreSQL URL: {}", describe(&e))))?;
    if !url.contains("sslmode=") {
        config.ssl_mode(SslMode::Disable);
    }
    if config.get_application_name().is_none() {
        config.application_name("sluice");
    }
    // A node frozen or cut off in the middle of a transaction keeps its row locks
    // until the server notices it is gone, which without this takes the kernel's
    // keepalive (hours): every other node's commit for those runs would wait. Our
    // transactions never idle between statements but for a node that stopped.
    let startup = config.get_options().unwrap_or_default().to_owned();
    config.options(
        format!("{startup} -c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS}")
            .trim_start(),
    );
    let tls = tls(root_cert.as_deref()).map_err(|e| unreachable(format!("TLS: {e}")))?;
    let manager = Manager::from_config(
        config,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    let pool = Pool::builder(manager)
        .max_size(options.max_connections.max(2))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let _checked = pool
        .get()
        .await
        .map_err(|e| unreachable(super::errors::describe_pool(&e)))?;
    Ok(pool)
}

/// The URL as the driver takes it, and the root certificate file it named: the
/// driver knows neither `sslrootcert` nor the `verify-*` modes (its TLS always
/// verifies the certificate and the name, as `verify-full` does).
fn tls_settings(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut root_cert = None;
    // Raw pairs are kept as written: the driver decodes `%20`, not `+`.
    let kept: Vec<String> = query
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "sslrootcert" => {
                    let decoded = url::form_urlencoded::parse(pair.as_bytes())
                        .next()
                        .map_or_else(|| value.to_owned(), |(_, v)| v.into_owned());
                    root_cert = Some(decoded);
                    None
                }
                "sslmode" if value == "verify-full" || value == "verify-ca" => {
                    Some("sslmode=require".to_owned())
                }
                _ => Some(pair.to_owned()),
            }
        })
        .collect();
    if kept.is_empty() {
        (base.to_owned(), root_cert)
    } else {
        (format!("{base}?{}", kept.join("&")), root_cert)
    }
}

fn tls(root_cert: Option<&str>) -> Result<tokio_postgres_rustls::MakeRustlsConnect, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("reading sslrootcert {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("sslrootcert {path} holds no certificate"));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {path}: {e}"))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_the_driver_does_not_know_are_taken_out() {
        let (url, cert) = tls_settings(
            "postgres://u@db:5432/s?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem&application_name=x",
        );
        assert_eq!(cert.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(
            url,
            "postgres://u@db:5432/s?sslmode=require&application_name=x"
        );
        let (url, cert) = tls_settings("postgres://u@db/s");
        assert_eq!((url.as_str(), cert), ("postgres://u@db/s", None));
        let (url, _) =
            tls_settings("postgres://u@db/s?options=-c%20search_path%3Dx&sslmode=verify-ca");
        assert_eq!(
            url,
            "postgres://u@db/s?options=-c%20search_path%3Dx&sslmode=require"
        );
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redact_url("postgres://sluice:s3cret@db.example:5432/sluice"),
            "postgres://sluice:***@db.example:5432/sluice"
        );
        assert_eq!(
            redact_url("postgres://root@127.0.0.1/test"),
            "postgres://root@127.0.0.1/test"
        );
        assert!(!redact_url("postgres://a:pw@c:notaport/x").contains("pw"));
    }
}
