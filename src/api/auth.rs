//! Authentication for the HTTP service (docs/security.md): bearer tokens checked against a tokens file that holds only
//! their SHA-256 hashes (reloaded on SIGHUP), or one operator token from the environment; or local mode, where every
//! caller on loopback is an operator. Every denied request is logged and counted for `/metrics`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::AppState;
use crate::access::{Kind, Principal};
use crate::domain::{Role, TenantId};

/// The environment variable holding the first operator's token (plain text; it is hashed at start-up).
pub const OPERATOR_TOKEN_ENV: &str = "PARTNER_LEDGER_OPERATOR_TOKEN";
/// The tenant of that operator (default [`DEFAULT_OPERATOR_TENANT`]).
pub const OPERATOR_TENANT_ENV: &str = "PARTNER_LEDGER_OPERATOR_TENANT";
/// The operator tenant the sample data uses.
pub const DEFAULT_OPERATOR_TENANT: &str = "00000000-0000-4000-8000-0000000000ff";

/// One principal of the tokens file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    name: String,
    role: String,
    #[serde(default)]
    tenant: Option<String>,
    user: String,
    token_sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    principals: Vec<FileEntry>,
}

struct Entry {
    hash: [u8; 32],
    principal: Principal,
}

/// How callers are authenticated.
pub struct Auth {
    /// `None`: local mode.
    tokens: Option<Tokens>,
    denied: Mutex<BTreeMap<(u16, &'static str), u64>>,
    /// Bumped at every successful reload, so open streams re-check that their principal still exists.
    generation: tokio::sync::watch::Sender<u64>,
}

/// The token a request authenticated with, as its SHA-256 (`None` in local mode): open streams keep it to notice
/// when their principal is removed from the tokens file.
#[derive(Clone, Copy, Debug)]
pub struct Credential(pub Option<[u8; 32]>);

struct Tokens {
    file: Option<PathBuf>,
    env_operator: Option<Entry>,
    table: RwLock<Arc<Vec<Entry>>>,
}

/// The SHA-256 of a token, as stored in the tokens file.
pub fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn parse_role(role: &str) -> Result<Kind, String> {
    if role == "auditor" {
        return Ok(Kind::Auditor);
    }
    serde_json::from_value::<Role>(serde_json::Value::String(role.to_string()))
        .map(Kind::Role)
        .map_err(|_| format!("unknown role `{role}` (one of partner_admin_agent, partner_sales_agent, customer_global_admin, customer_user, operator, system, auditor)"))
}

fn entry(
    name: String,
    role: &str,
    tenant: Option<&str>,
    user: String,
    hash: [u8; 32],
) -> Result<Entry, String> {
    let kind = parse_role(role)?;
    let tenant = match tenant {
        Some(t) => Some(t.parse::<TenantId>().map_err(|e| format!("tenant: {e}"))?),
        None if kind == Kind::Auditor => None,
        None => return Err("a tenant is required for every role but auditor".into()),
    };
    if user.is_empty() || user.chars().count() > 256 || user.chars().any(char::is_control) {
        return Err("user must be 1-256 characters without control characters (R38)".into());
    }
    Ok(Entry {
        hash,
        principal: Principal {
            name,
            kind,
            tenant,
            user,
        },
    })
}

/// Reads and checks a tokens file; the error names the file, the entry and the problem.
fn load_file(path: &Path) -> Result<Vec<Entry>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read tokens file {}: {e}", path.display()))?;
    let file: TokensFile =
        serde_json::from_str(&text).map_err(|e| format!("tokens file {}: {e}", path.display()))?;
    let mut out: Vec<Entry> = Vec::with_capacity(file.principals.len());
    for (i, e) in file.principals.into_iter().enumerate() {
        let at = format!(
            "tokens file {}, principal {} (`{}`)",
            path.display(),
            i + 1,
            e.name
        );
        let hash: [u8; 32] = hex::decode(&e.token_sha256)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                format!("{at}: token_sha256 must be 64 hex digits (the SHA-256 of the token)")
            })?;
        if out.iter().any(|o| o.principal.name == e.name) {
            return Err(format!("{at}: the name is used twice"));
        }
        if out.iter().any(|o| o.hash == hash) {
            return Err(format!("{at}: the same token is given to two principals"));
        }
        out.push(
            entry(e.name, &e.role, e.tenant.as_deref(), e.user, hash)
                .map_err(|m| format!("{at}: {m}"))?,
        );
    }
    Ok(out)
}

/// Why a request is refused.
pub struct Denied {
    pub status: StatusCode,
    pub reason: &'static str,
    pub message: String,
}

impl Auth {
    /// Local mode: no tokens; every caller is an operator (the server must listen on loopback only).
    pub fn local() -> Auth {
        Auth {
            tokens: None,
            denied: Mutex::default(),
            generation: tokio::sync::watch::channel(0).0,
        }
    }

    /// Token mode, from a tokens file and/or the operator token of the environment (`env_token`, with its tenant).
    pub fn with_tokens(
        file: Option<&Path>,
        env_token: Option<(&str, &str)>,
    ) -> Result<Auth, String> {
        let table = match file {
            Some(f) => load_file(f)?,
            None => Vec::new(),
        };
        let env_operator = env_token
            .map(|(token, tenant)| {
                if token.len() < 16 {
                    return Err(format!(
                        "{OPERATOR_TOKEN_ENV} must be at least 16 characters"
                    ));
                }
                entry(
                    "env-operator".into(),
                    "operator",
                    Some(tenant),
                    "operator".into(),
                    token_hash(token),
                )
                .map_err(|e| format!("{OPERATOR_TENANT_ENV}: {e}"))
            })
            .transpose()?;
        Ok(Auth {
            tokens: Some(Tokens {
                file: file.map(Path::to_path_buf),
                env_operator,
                table: RwLock::new(Arc::new(table)),
            }),
            denied: Mutex::default(),
            generation: tokio::sync::watch::channel(0).0,
        })
    }

    /// Whether callers must authenticate.
    pub fn is_local(&self) -> bool {
        self.tokens.is_none()
    }

    /// Re-reads the tokens file. On an error the previous table stays in force. Returns how many principals it has.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(t) = &self.tokens else {
            return Ok(0);
        };
        let Some(file) = &t.file else {
            return Ok(0);
        };
        let table = load_file(file)?;
        let n = table.len();
        *t.table.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.generation.send_modify(|g| *g += 1);
        Ok(n)
    }

    /// Changes whenever the tokens file was reloaded.
    pub fn reloads(&self) -> tokio::sync::watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Whether the token behind `credential` still authenticates as `principal` (always, in local mode).
    pub fn still_valid(&self, credential: Credential, principal: &Principal) -> bool {
        let (Some(t), Some(hash)) = (&self.tokens, credential.0) else {
            return true;
        };
        let table = Arc::clone(&t.table.read().unwrap_or_else(|e| e.into_inner()));
        table
            .iter()
            .chain(t.env_operator.iter())
            .any(|e| bool::from(e.hash.ct_eq(&hash)) && e.principal == *principal)
    }

    /// Who sent a request with these headers.
    pub fn authenticate(&self, authorization: Option<&[u8]>) -> Result<Principal, Denied> {
        self.authenticate_with(authorization).map(|(p, _)| p)
    }

    /// Who sent a request with these headers, and with which token.
    pub fn authenticate_with(
        &self,
        authorization: Option<&[u8]>,
    ) -> Result<(Principal, Credential), Denied> {
        let Some(t) = &self.tokens else {
            return Ok((Principal::local(), Credential(None)));
        };
        let unauthorized = |reason, message: &str| Denied {
            status: StatusCode::UNAUTHORIZED,
            reason,
            message: message.to_string(),
        };
        let Some(value) = authorization else {
            return Err(unauthorized(
                "missing_token",
                "send Authorization: Bearer <token>",
            ));
        };
        let token = std::str::from_utf8(value)
            .ok()
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                unauthorized(
                    "malformed_authorization",
                    "the Authorization header must be `Bearer <token>`",
                )
            })?;
        let hash = token_hash(token);
        let table = Arc::clone(&t.table.read().unwrap_or_else(|e| e.into_inner()));
        // Compare against every entry without stopping early, in constant time per entry.
        let mut found: Option<&Entry> = None;
        for e in table.iter().chain(t.env_operator.iter()) {
            if bool::from(e.hash.ct_eq(&hash)) {
                found = Some(e);
            }
        }
        found
            .map(|e| (e.principal.clone(), Credential(Some(hash))))
            .ok_or_else(|| unauthorized("unknown_token", "the token is not known"))
    }

    /// Logs a denied request and counts it for `/metrics`, then answers it.
    pub fn deny(&self, who: &str, route: &str, d: Denied) -> super::ApiError {
        tracing::warn!(principal = who, route, status = d.status.as_u16(), reason = d.reason, message = ?d.message, "request denied");
        *self
            .denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((d.status.as_u16(), d.reason))
            .or_default() += 1;
        if d.status == StatusCode::UNAUTHORIZED {
            super::ApiError::new(d.status, "unauthorized", d.message)
                .with("reason", d.reason)
                .unauthorized()
        } else {
            super::ApiError::new(d.status, "forbidden", d.message).with("reason", d.reason)
        }
    }

    /// Denied requests so far, by status and reason.
    pub fn denied_counts(&self) -> Vec<((u16, &'static str), u64)> {
        self.denied
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (*k, *v))
            .collect()
    }
}

/// A 403 with a reason.
pub fn forbidden(reason: &'static str, message: impl Into<String>) -> Denied {
    Denied {
        status: StatusCode::FORBIDDEN,
        reason,
        message: message.into(),
    }
}

/// Middleware: authenticates every request and hands the [`Principal`] to the handlers as an extension.
pub async fn authenticate(
    State(s): State<AppState>,
    mut req: Request,
    next: Next,
) -> Result<Response, super::ApiError> {
    let auth = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes().to_vec());
    match s.auth.authenticate_with(auth.as_deref()) {
        Ok((p, credential)) => {
            req.extensions_mut().insert(p);
            req.extensions_mut().insert(credential);
            Ok(next.run(req).await)
        }
        Err(d) => Err(s.auth.deny("anonymous", req.uri().path(), d)),
    }
}

/// A fresh random token (32 bytes, hex, prefixed `plt_`) and its tokens-file entry.
pub fn new_token(
    name: &str,
    role: &str,
    tenant: Option<&str>,
    user: &str,
) -> Result<(String, serde_json::Value), String> {
    use rand::RngCore;
    entry(name.into(), role, tenant, user.into(), [0; 32])?;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let token = format!("plt_{}", hex::encode(bytes));
    let mut v = json!({"name": name, "role": role, "user": user, "token_sha256": hex::encode(token_hash(&token))});
    if let Some(t) = tenant {
        v["tenant"] = json!(t);
    }
    Ok((token, v))
}
