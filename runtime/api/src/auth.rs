//! Bearer API tokens: who the caller is — a role, and the tenants it may see.
//!
//! Owns the check of the `authorization` header and the [`Caller`] it records on the
//! request, the tokens file's format, and the rules every handler applies through
//! the caller: which role a call needs ([`require_write`], [`require_admin`],
//! [`require_all_tenants`]) and which tenants it sees ([`Caller::sees`]). Tokens are
//! kept and compared as SHA-256 digests, never logged. With no token configured the
//! API is open (a node on loopback for local use), which the server warns about when
//! it starts.
//!
//! Roles: `admin` may do everything, including what belongs to no tenant (nodes,
//! registering and removing connectors), and always covers every tenant; `operator`
//! reads and changes connections, workflows and runs of its tenants; `read-only`
//! reads them. A token limited to tenants sees and changes nothing of another tenant.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

/// What a token allows (the scopes of `--token` and `--read-token`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Lists, gets and watches: the `read-only` role on every tenant.
    Read,
    /// Everything: the `admin` role.
    Write,
}

/// A token's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reads connections, workflows, runs, records and logs of its tenants.
    ReadOnly,
    /// Also defines connections and workflows and starts, cancels and retries runs
    /// of its tenants.
    Operator,
    /// Everything, on every tenant, including nodes and the connector registry.
    Admin,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// Who made a request: recorded on it by the token check.
#[derive(Debug, Clone)]
pub struct Caller {
    role: Role,
    /// `None`: every tenant.
    tenants: Option<Arc<BTreeSet<String>>>,
}

impl Caller {
    /// An admin on every tenant (the open API).
    fn open() -> Self {
        Caller {
            role: Role::Admin,
            tenants: None,
        }
    }

    /// Whether the caller may see objects of `tenant`.
    pub(crate) fn sees(&self, tenant: &str) -> bool {
        self.tenants.as_ref().is_none_or(|t| t.contains(tenant))
    }

    /// Whether the caller is limited to some tenants.
    pub(crate) fn limited(&self) -> bool {
        self.tenants.is_some()
    }

    /// The only tenant the caller sees, when it sees exactly one.
    pub(crate) fn single_tenant(&self) -> Option<&str> {
        match &self.tenants {
            Some(t) if t.len() == 1 => t.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// PERMISSION_DENIED unless the caller may create or change objects of `tenant`.
    #[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
    pub(crate) fn may_write_in(&self, tenant: &str) -> Result<(), Status> {
        if self.sees(tenant) {
            return Ok(());
        }
        let tenants: Vec<&str> = self
            .tenants
            .iter()
            .flat_map(|t| t.iter().map(String::as_str))
            .collect();
        Err(Status::permission_denied(format!(
            "tenant `{tenant}` is outside this API token's tenants ({})",
            tenants.join(", ")
        )))
    }
}

/// One entry of a tokens file: `{"token" | "token_sha256", "role", "tenants"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// The token itself.
    #[serde(default)]
    pub token: Option<String>,
    /// Or the hex SHA-256 of the token, so the file holds no usable secret.
    #[serde(default)]
    pub token_sha256: Option<String>,
    /// `admin`, `operator` or `read-only`.
    pub role: Role,
    /// The tenants the token is limited to; absent or empty: every tenant.
    #[serde(default)]
    pub tenants: Vec<String>,
}

/// Why tokens could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// The tokens file cannot be read.
    #[error("reading the tokens file {file}: {source}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The tokens file is not a JSON array of token entries.
    #[error("tokens file {file}: {message}")]
    Parse {
        /// The file.
        file: String,
        /// What is wrong (never a token's value).
        message: String,
    },
    /// An entry is wrong.
    #[error("API token entry {index}: {message}")]
    Entry {
        /// Its position (from 1).
        index: usize,
        /// What is wrong (never a token's value).
        message: String,
    },
}

/// The tokens a server accepts, by the SHA-256 of each, with the caller each makes.
#[derive(Clone, Default)]
pub struct Tokens {
    by_digest: Arc<HashMap<[u8; 32], Caller>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.by_digest.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The hex SHA-256 of `token`: what a tokens file's `token_sha256` holds.
pub fn token_sha256(token: &str) -> String {
    hex::encode(digest(token.trim()))
}

impl Tokens {
    /// Tokens from (token, scope) pairs: `Write` is an admin, `Read` a read-only
    /// token, both on every tenant.
    pub fn new(tokens: impl IntoIterator<Item = (String, Scope)>) -> Self {
        let by_digest = tokens
            .into_iter()
            .map(|(t, scope)| {
                let role = match scope {
                    Scope::Write => Role::Admin,
                    Scope::Read => Role::ReadOnly,
                };
                (
                    digest(&t),
                    Caller {
                        role,
                        tenants: None,
                    },
                )
            })
            .collect();
        Tokens {
            by_digest: Arc::new(by_digest),
        }
    }

    /// These tokens plus `entries` (of a tokens file or a node config).
    pub fn with_entries(self, entries: &[TokenEntry]) -> Result<Self, TokensError> {
        let mut by_digest = (*self.by_digest).clone();
        for (i, e) in entries.iter().enumerate() {
            let bad = |message: &str| TokensError::Entry {
                index: i + 1,
                message: message.to_owned(),
            };
            let key = match (&e.token, &e.token_sha256) {
                (Some(t), None) if !t.trim().is_empty() => digest(t.trim()),
                (None, Some(h)) => {
                    let bytes =
                        hex::decode(h.trim()).map_err(|_| bad("`token_sha256` is not hex"))?;
                    <[u8; 32]>::try_from(bytes.as_slice())
                        .map_err(|_| bad("`token_sha256` is not 64 hex digits (SHA-256)"))?
                }
                _ => return Err(bad("give exactly one of `token` and `token_sha256`")),
            };
            let tenants: BTreeSet<String> = e.tenants.iter().cloned().collect();
            if e.role == Role::Admin && !tenants.is_empty() {
                return Err(bad(
                    "an admin token covers every tenant; give role `operator` or `read-only` to limit a token to tenants",
                ));
            }
            if tenants.iter().any(|t| t.trim().is_empty()) {
                return Err(bad("a tenant name is empty"));
            }
            let caller = Caller {
                role: e.role,
                tenants: (!tenants.is_empty()).then(|| Arc::new(tenants)),
            };
            if by_digest.insert(key, caller).is_some() {
                return Err(bad("the same token is configured twice"));
            }
        }
        Ok(Tokens {
            by_digest: Arc::new(by_digest),
        })
    }

    /// The entries of a tokens file: a JSON array of
    /// `{"token" | "token_sha256", "role", "tenants"}`.
    pub fn read_file(path: &Path) -> Result<Vec<TokenEntry>, TokensError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            file: file.clone(),
            source,
        })?;
        // serde's message may quote a value: name the place only.
        serde_json::from_str(&text).map_err(|e| TokensError::Parse {
            file,
            message: format!(
                "not a JSON array of {{\"token\" | \"token_sha256\", \"role\", \"tenants\"}} (line {}, column {}: {:?})",
                e.line(),
                e.column(),
                e.classify()
            ),
        })
    }

    /// Whether any token is configured (else the API is open).
    pub fn enabled(&self) -> bool {
        !self.by_digest.is_empty()
    }

    /// Checks the request's bearer token and records its caller on the request.
    #[allow(clippy::result_large_err, reason = "tonic's interceptor signature")]
    pub(crate) fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = if self.enabled() {
            let header = request
                .metadata()
                .get("authorization")
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "missing `authorization: Bearer <token>` metadata; this server requires an API token",
                    )
                })?
                .to_str()
                .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
            let token = header.strip_prefix("Bearer ").ok_or_else(|| {
                Status::unauthenticated("the authorization header must be `Bearer <token>`")
            })?;
            self.by_digest
                .get(&digest(token.trim()))
                .cloned()
                .ok_or_else(|| Status::unauthenticated("unknown API token"))?
        } else {
            Caller::open()
        };
        request.extensions_mut().insert(caller);
        Ok(request)
    }
}

/// The request's caller. A request the token check did not see (none reaches a
/// handler that way) gets the least: read-only on no tenant.
pub(crate) fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller {
            role: Role::ReadOnly,
            tenants: Some(Arc::new(BTreeSet::new())),
        })
}

#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
fn require(caller: &Caller, role: Role, what: &str) -> Result<(), Status> {
    if caller.role >= role {
        return Ok(());
    }
    Err(Status::permission_denied(format!(
        "this API token's role is {}; the call {what} needs {}",
        caller.role.as_str(),
        role.as_str()
    )))
}

/// Refuses a writing call made with a read-only token; returns the caller.
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn require_write<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = caller(request);
    if caller.role == Role::ReadOnly {
        return Err(Status::permission_denied(
            "this API token is read-only; the call changes state",
        ));
    }
    Ok(caller)
}

/// Refuses a call on what belongs to no tenant (nodes, the connector registry)
/// unless made by an admin.
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn require_admin<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = caller(request);
    require(
        &caller,
        Role::Admin,
        "changes what belongs to no tenant and",
    )?;
    Ok(caller)
}

/// Refuses a reading call on what belongs to no tenant (nodes) to a token limited to
/// tenants.
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn require_all_tenants<T>(request: &Request<T>) -> Result<Caller, Status> {
    let caller = caller(request);
    if caller.limited() {
        return Err(Status::permission_denied(
            "this API token is limited to tenants; the call reads what belongs to no tenant",
        ));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(json: serde_json::Value) -> TokenEntry {
        serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn call(tokens: &Tokens, token: &str) -> Result<Caller, Status> {
        let mut r = Request::new(());
        if let Ok(v) = format!("Bearer {token}").parse() {
            r.metadata_mut().insert("authorization", v);
        }
        tokens.check(r).map(|r| caller(&r))
    }

    #[test]
    fn a_hashed_token_is_accepted_and_limited_to_its_tenants() {
        let hash = hex::encode(Sha256::digest(b"tok-a"));
        let tokens = Tokens::new([("root".to_owned(), Scope::Write)])
            .with_entries(&[entry(serde_json::json!(
                {"token_sha256": hash, "role": "operator", "tenants": ["a"]}
            ))])
            .unwrap_or_else(|e| panic!("{e}"));
        let a = call(&tokens, "tok-a").unwrap_or_else(|e| panic!("{e}"));
        assert!(a.sees("a") && !a.sees("b"));
        assert_eq!(a.single_tenant(), Some("a"));
        let denied = a.may_write_in("b").err().map(|s| s.message().to_owned());
        assert_eq!(
            denied.as_deref(),
            Some("tenant `b` is outside this API token's tenants (a)")
        );
        let root = call(&tokens, "root").unwrap_or_else(|e| panic!("{e}"));
        assert!(root.sees("b") && root.role == Role::Admin);
        assert_eq!(
            call(&tokens, "nope").err().map(|s| s.code()),
            Some(tonic::Code::Unauthenticated)
        );
    }

    #[test]
    fn an_admin_limited_to_tenants_and_a_bad_hash_are_refused() {
        let admin = Tokens::default().with_entries(&[entry(
            serde_json::json!({"token": "x", "role": "admin", "tenants": ["a"]}),
        )]);
        assert!(
            admin
                .err()
                .is_some_and(|e| e.to_string().contains("covers every tenant"))
        );
        let short = Tokens::default().with_entries(&[entry(
            serde_json::json!({"token_sha256": "abcd", "role": "read-only"}),
        )]);
        assert!(
            short
                .err()
                .is_some_and(|e| e.to_string().contains("64 hex digits"))
        );
    }
}
