//! Bearer-token authentication and roles.
//!
//! Tokens are configured by their SHA-256 (never in clear), each with a name, a role and
//! optionally the tenants it is limited to. Every gRPC call except health carries
//! `authorization: Bearer <token>`; the interceptor turns it into an [`Identity`] in the request's
//! extensions, and handlers ask it for what they need ([`Identity::require`]).
//!
//! Roles: `ingest` sends turns and scores texts; `supervisor` reads alerts and conversations and
//! acknowledges alerts; `admin` may do everything. A token limited to tenants only ever sees or
//! writes those tenants' conversations and alerts.

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::config::{AuthConfig, ConfigError};

pub use crate::domain::Role;

/// The longest agent id a guidance request may name.
pub const MAX_AGENT_ID_BYTES: usize = 128;

/// Who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub name: String,
    pub role: Role,
    /// Tenants this caller is limited to; empty: all.
    pub tenants: Vec<String>,
    /// Role agent: the one agent id whose guidance it may read.
    pub agent_id: String,
    /// False when auth is off: the caller is not known.
    pub authenticated: bool,
}

impl Identity {
    /// The caller when auth is off: may do everything, is nobody in particular.
    pub fn unauthenticated() -> Self {
        Self {
            name: String::new(),
            role: Role::Admin,
            tenants: Vec::new(),
            agent_id: String::new(),
            authenticated: false,
        }
    }

    /// The identity the interceptor attached to `request`.
    pub fn of<T>(request: &Request<T>) -> Result<Arc<Identity>, Status> {
        request
            .extensions()
            .get::<Arc<Identity>>()
            .cloned()
            .ok_or_else(|| Status::internal("request reached a handler without an identity"))
    }

    /// The identity of `request`, if its role is one of `roles` (admin always is).
    pub fn require<T>(request: &Request<T>, roles: &[Role]) -> Result<Arc<Identity>, Status> {
        let id = Self::of(request)?;
        if id.role == Role::Admin || roles.contains(&id.role) {
            return Ok(id);
        }
        let wanted: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
        Err(Status::permission_denied(format!(
            "token {:?} has role {}; this call needs {}",
            id.name,
            id.role.as_str(),
            wanted.join(" or ")
        )))
    }

    /// Whether this caller may read `agent_id`'s guidance: an agent token only its own id.
    /// INVALID_ARGUMENT for an empty or over-long id.
    pub fn may_read_agent(&self, agent_id: &str) -> Result<(), Status> {
        if agent_id.is_empty() {
            return Err(Status::invalid_argument("agent_id is required"));
        }
        if agent_id.len() > MAX_AGENT_ID_BYTES {
            return Err(Status::invalid_argument(format!(
                "agent_id is {} bytes; the limit is {MAX_AGENT_ID_BYTES}",
                agent_id.len()
            )));
        }
        if self.role == Role::Agent && self.agent_id != agent_id {
            return Err(Status::permission_denied(format!(
                "token {:?} is agent {:?}; it may not read agent {agent_id:?}'s guidance",
                self.name, self.agent_id
            )));
        }
        Ok(())
    }

    pub fn may_see_tenant(&self, tenant: &str) -> bool {
        self.tenants.is_empty() || self.tenants.iter().any(|t| t == tenant)
    }

    /// Narrows a requested tenant filter to what this caller may see: an empty request becomes
    /// the caller's tenants; a requested tenant outside them is refused.
    pub fn scope_tenants(&self, requested: Vec<String>) -> Result<Vec<String>, Status> {
        if self.tenants.is_empty() {
            return Ok(requested);
        }
        if requested.is_empty() {
            return Ok(self.tenants.clone());
        }
        match requested.iter().find(|t| !self.may_see_tenant(t)) {
            Some(t) => Err(Status::permission_denied(format!(
                "token {:?} may not read tenant {t:?}",
                self.name
            ))),
            None => Ok(requested),
        }
    }
}

/// Checks bearer tokens against the configured hashes.
pub struct Authenticator {
    enabled: bool,
    by_hash: HashMap<[u8; 32], Arc<Identity>>,
    anonymous: Arc<Identity>,
}

impl Authenticator {
    /// Auth is on when `auth.mode` says so, or in `auto` mode when `listen_is_loopback` is false.
    pub fn new(config: &AuthConfig, listen_is_loopback: bool) -> Result<Self, ConfigError> {
        config
            .validate(listen_is_loopback)
            .map_err(ConfigError::Invalid)?;
        let by_hash = config
            .tokens
            .iter()
            .filter_map(|t| {
                let mut hash = [0u8; 32];
                hex::decode_to_slice(&t.sha256, &mut hash).ok()?;
                let identity = Identity {
                    name: t.name.clone(),
                    role: t.role,
                    tenants: t.tenants.clone(),
                    agent_id: t.agent_id.clone(),
                    authenticated: true,
                };
                Some((hash, Arc::new(identity)))
            })
            .collect();
        Ok(Self {
            enabled: config.enabled(listen_is_loopback),
            by_hash,
            anonymous: Arc::new(Identity::unauthenticated()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The identity behind an `authorization` header value (`Bearer <token>`).
    pub fn authenticate(&self, header: Option<&str>) -> Result<Arc<Identity>, Status> {
        if !self.enabled {
            return Ok(self.anonymous.clone());
        }
        let token = header
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
            })?;
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        self.by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }

    /// A tonic interceptor attaching the caller's [`Identity`] to each request.
    pub fn interceptor(
        self: &Arc<Self>,
    ) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let auth = self.clone();
        move |mut request: Request<()>| {
            let header = request
                .metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            let identity = auth.authenticate(header)?;
            request.extensions_mut().insert(identity);
            Ok(request)
        }
    }
}

/// SHA-256 of a token, as configured in `auth.tokens`.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.trim().as_bytes()))
}

/// A new random token: "emo_" and 32 random bytes in hex.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(format!("emo_{}", hex::encode(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AuthMode, TokenConfig};

    fn config(mode: AuthMode) -> AuthConfig {
        AuthConfig {
            mode,
            tokens: vec![TokenConfig {
                name: "sam".into(),
                sha256: token_hash("secret-1"),
                role: Role::Supervisor,
                tenants: vec!["acme".into()],
                agent_id: String::new(),
            }],
        }
    }

    #[test]
    fn tokens_roles_and_modes() {
        let auth = Authenticator::new(&config(AuthMode::Auto), false).unwrap();
        assert!(auth.enabled(), "auto is on beyond loopback");
        let sam = auth.authenticate(Some("Bearer secret-1")).unwrap();
        assert_eq!((sam.name.as_str(), sam.role), ("sam", Role::Supervisor));
        assert_eq!(
            auth.authenticate(Some("Bearer secret-2"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            auth.authenticate(None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            sam.scope_tenants(vec![]).unwrap(),
            ["acme"],
            "empty means the token's tenants"
        );
        assert!(sam.scope_tenants(vec!["globex".into()]).is_err());

        let open = Authenticator::new(&config(AuthMode::Auto), true).unwrap();
        assert!(!open.enabled(), "auto is off on loopback");
        assert!(!open.authenticate(None).unwrap().authenticated);
        let none = AuthConfig {
            mode: AuthMode::On,
            tokens: vec![],
        };
        assert!(
            Authenticator::new(&none, true).is_err(),
            "on without tokens"
        );
        assert_eq!(new_token().unwrap().len(), 4 + 64);
    }
}
