//! Bearer API tokens: which callers may read and which may also write.
//!
//! Owns the check of the `authorization` header and the scope it grants; handlers of
//! writing methods call [`require_write`]. Tokens are compared, never logged. With no
//! token configured the API is open (a node on loopback for local use), which the
//! server warns about when it starts.

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Status};

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Lists, gets and watches.
    Read,
    /// Everything.
    Write,
}

/// The tokens a server accepts, with their scopes.
#[derive(Clone, Default)]
pub struct Tokens {
    by_token: Arc<HashMap<String, Scope>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokens({} configured)", self.by_token.len())
    }
}

impl Tokens {
    /// Tokens from (token, scope) pairs.
    pub fn new(tokens: impl IntoIterator<Item = (String, Scope)>) -> Self {
        Tokens {
            by_token: Arc::new(tokens.into_iter().collect()),
        }
    }

    /// Whether any token is configured (else the API is open).
    pub fn enabled(&self) -> bool {
        !self.by_token.is_empty()
    }

    /// Checks the request's bearer token and records its scope on the request.
    #[allow(clippy::result_large_err, reason = "tonic's interceptor signature")]
    pub(crate) fn check(&self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let scope = if self.enabled() {
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
            *self
                .by_token
                .get(token.trim())
                .ok_or_else(|| Status::unauthenticated("unknown API token"))?
        } else {
            Scope::Write
        };
        request.extensions_mut().insert(scope);
        Ok(request)
    }
}

/// Refuses a writing call made with a read-only token.
#[allow(clippy::result_large_err, reason = "handlers return tonic's Status")]
pub(crate) fn require_write<T>(request: &Request<T>) -> Result<(), Status> {
    match request.extensions().get::<Scope>() {
        Some(Scope::Write) => Ok(()),
        _ => Err(Status::permission_denied(
            "this API token is read-only; the call changes state",
        )),
    }
}
