//! Access control: API keys, sent as bearer tokens, each with a role.
//!
//! | needs | what |
//! |---|---|
//! | reader | GraphQL queries, the REST endpoints |
//! | editor | every mutation |
//! | admin | `cacheStats`, `/metrics` |
//!
//! Each role includes the ones above it. Callers without a key are readers,
//! unless `--reads-need-key`; then they may do nothing. With no key
//! configured at all, the server is read-only.
//!
//! A missing key where one is needed, and any unknown or malformed key, is
//! `UNAUTHENTICATED` (HTTP 401 with `WWW-Authenticate: Bearer`); a known key
//! without the role is `FORBIDDEN` (403), and so is a write to a server with
//! no keys, since no credentials could allow it. Both are decided before
//! anything runs: nothing is written.
//!
//! Keys are held as SHA-256 hashes only: the key file holds hashes, and
//! `CATALYNX_API_KEYS` is hashed as it is read. A presented key is hashed and
//! compared with every stored hash in constant time.
//!
//! # The resolver cache
//! Results do not depend on who asks: every role reads the same data, and
//! roles are checked before any resolver runs, so a cached result only
//! reaches callers who may read it. A field whose result depended on the
//! caller would need the principal in its cache key.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::SecurityConfig;
use crate::error::{AppError, GqlResultExt};

/// What a caller may do; each role includes the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Runs queries and reads the REST endpoints.
    Reader,
    /// Also runs mutations.
    Editor,
    /// Also reads `cacheStats` and `/metrics`.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Editor => "editor",
            Self::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "reader" => Ok(Self::Reader),
            "editor" => Ok(Self::Editor),
            "admin" => Ok(Self::Admin),
            other => Err(format!(
                "unknown role {other:?}; expected reader, editor or admin"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Shortest key accepted: a guessable key protects nothing.
const MIN_KEY_CHARS: usize = 16;

/// One configured key: its role, its SHA-256 and a name for the log.
#[derive(Clone)]
struct ApiKey {
    role: Role,
    hash: [u8; 32],
    name: Arc<str>,
}

/// Configured API keys, as hashes. `Debug` shows names and roles only.
#[derive(Clone, Default)]
pub struct ApiKeys(Vec<ApiKey>);

impl fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|k| format!("{} ({})", k.name, k.role)))
            .finish()
    }
}

/// The characters of a bearer token (RFC 6750 `b64token`).
fn is_token(text: &str) -> bool {
    let body = text.trim_end_matches('=');
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~+/".contains(&b))
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

impl ApiKeys {
    /// Parses `ROLE=KEY` items separated by commas (`CATALYNX_API_KEYS`).
    /// Messages never repeat a key: they end up in logs.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Self::default();
        for (i, item) in text
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .enumerate()
        {
            let n = i + 1;
            let (role, key) = item
                .split_once('=')
                .ok_or_else(|| format!("API key item {n}: expected ROLE=KEY"))?;
            let role = Role::parse(role).map_err(|e| format!("API key item {n}: {e}"))?;
            let key = key.trim();
            if key.chars().count() < MIN_KEY_CHARS || !is_token(key) {
                return Err(format!(
                    "API key item {n}: a key has at least {MIN_KEY_CHARS} characters among \
                     A-Z a-z 0-9 - . _ ~ + / (e.g. from `openssl rand -hex 32`)"
                ));
            }
            keys.add(ApiKey {
                role,
                hash: sha256(key),
                name: format!("CATALYNX_API_KEYS#{n}").into(),
            })?;
        }
        Ok(keys)
    }

    /// Reads a key file: `ROLE:SHA256[:NAME]` lines, `#` comments.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "CATALYNX_API_KEYS_FILE / --api-keys-file: cannot read {}",
                path.display()
            )
        })?;
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into(),
        );
        Self::parse_file(&text, &file).map_err(|e| {
            anyhow::anyhow!(
                "CATALYNX_API_KEYS_FILE / --api-keys-file: {}: {e}",
                path.display()
            )
        })
    }

    fn parse_file(text: &str, file: &str) -> Result<Self, String> {
        let mut keys = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let n = i + 1;
            let mut fields = line.splitn(3, ':');
            let (role, hash) = match (fields.next(), fields.next()) {
                (Some(role), Some(hash)) => (role, hash.trim()),
                _ => return Err(format!("line {n}: expected ROLE:SHA256[:NAME]")),
            };
            let role = Role::parse(role).map_err(|e| format!("line {n}: {e}"))?;
            let hash: [u8; 32] = hex::decode(hash)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| {
                    format!(
                        "line {n}: expected the key's SHA-256 as 64 hex digits \
                         (`printf %s \"$KEY\" | sha256sum`)"
                    )
                })?;
            let name = fields
                .next()
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map_or_else(|| format!("{file}:{n}"), str::to_owned);
            keys.add(ApiKey {
                role,
                hash,
                name: name.into(),
            })
            .map_err(|e| format!("line {n}: {e}"))?;
        }
        Ok(keys)
    }

    fn add(&mut self, key: ApiKey) -> Result<(), String> {
        if let Some(same) = self.0.iter().find(|k| k.hash == key.hash) {
            return Err(format!("the same key is configured twice ({})", same.name));
        }
        self.0.push(key);
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The key whose hash is the hash of `token`. Every stored hash is
    /// compared, each in constant time, so the time taken says nothing about
    /// how close a guess came.
    fn find(&self, token: &str) -> Option<&ApiKey> {
        let hash = sha256(token);
        self.0.iter().fold(None, |found, key| {
            let equal: bool = key.hash.ct_eq(&hash).into();
            if equal { Some(key) } else { found }
        })
    }
}

/// clap's parser for `CATALYNX_API_KEYS`: its errors are raw, so clap does
/// not print the value (the keys) with them.
#[derive(Clone)]
pub struct ApiKeysParser;

impl clap::builder::TypedValueParser for ApiKeysParser {
    type Value = ApiKeys;

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<ApiKeys, clap::Error> {
        let refuse = |message: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("CATALYNX_API_KEYS / --api-keys: {message}\n"),
            )
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("not valid UTF-8".into()))?;
        ApiKeys::parse(text).map_err(refuse)
    }
}

/// Who is asking: a configured key, or an anonymous caller.
#[derive(Clone, Debug)]
pub struct Principal(Caller);

#[derive(Clone, Debug)]
enum Caller {
    Anonymous {
        /// Reader when reads are open, none when they need a key.
        role: Option<Role>,
        /// No key is configured: nothing beyond reading is possible.
        read_only: bool,
    },
    Key {
        name: Arc<str>,
        role: Role,
    },
}

impl Principal {
    /// Allowed nothing: what a schema execution without a principal runs as.
    pub fn nobody() -> Self {
        Self(Caller::Anonymous {
            role: None,
            read_only: false,
        })
    }

    /// True when the request carried a valid key.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.0, Caller::Key { .. })
    }

    /// The key's name for the log; `anonymous` without one.
    pub fn name(&self) -> &str {
        match &self.0 {
            Caller::Anonymous { .. } => "anonymous",
            Caller::Key { name, .. } => name,
        }
    }

    /// Succeeds when this caller has `needed` (or a role above it).
    pub fn require(&self, needed: Role) -> Result<(), AppError> {
        match &self.0 {
            Caller::Key { role, .. } if *role >= needed => Ok(()),
            Caller::Key { role, .. } => Err(AppError::Forbidden(format!(
                "this API key has the {role} role; this needs {needed}"
            ))),
            Caller::Anonymous {
                role: Some(role), ..
            } if *role >= needed => Ok(()),
            Caller::Anonymous {
                read_only: true, ..
            } => Err(AppError::Forbidden(
                "this server is read-only: no API keys are configured".into(),
            )),
            Caller::Anonymous { .. } => Err(AppError::Unauthenticated(format!(
                "this needs an API key with the {needed} role: send `Authorization: Bearer KEY`"
            ))),
        }
    }
}

/// The configured keys and who may do what without one; cheap to clone.
#[derive(Clone)]
pub struct Access {
    inner: Arc<AccessInner>,
}

struct AccessInner {
    keys: ApiKeys,
    anonymous: Option<Role>,
}

impl Access {
    /// The keys of the key file and `CATALYNX_API_KEYS` together. Logs what
    /// callers without a key may do.
    pub fn from_config(config: &SecurityConfig) -> anyhow::Result<Self> {
        let mut keys = match &config.api_keys_file {
            Some(path) => ApiKeys::load(path)?,
            None => ApiKeys::default(),
        };
        for key in config.api_keys.iter().flat_map(|k| k.0.iter()) {
            keys.add(key.clone()).map_err(|e| {
                anyhow::anyhow!("CATALYNX_API_KEYS and CATALYNX_API_KEYS_FILE: {e}")
            })?;
        }
        if keys.is_empty() && config.reads_need_key {
            anyhow::bail!(
                "CATALYNX_READS_NEED_KEY / --reads-need-key: no API key is configured, so nothing \
                 could be read; set CATALYNX_API_KEYS or CATALYNX_API_KEYS_FILE"
            );
        }
        let access = Self::new(keys, config.reads_need_key);
        access.log();
        Ok(access)
    }

    pub fn new(keys: ApiKeys, reads_need_key: bool) -> Self {
        Self {
            inner: Arc::new(AccessInner {
                keys,
                anonymous: (!reads_need_key).then_some(Role::Reader),
            }),
        }
    }

    fn log(&self) {
        let keys = &self.inner.keys;
        if keys.is_empty() {
            tracing::warn!(
                "no API keys configured: the server is read-only (set CATALYNX_API_KEYS or \
                 CATALYNX_API_KEYS_FILE to allow writes)"
            );
            return;
        }
        let count = |role| keys.0.iter().filter(|k| k.role == role).count();
        tracing::info!(
            readers = count(Role::Reader),
            editors = count(Role::Editor),
            admins = count(Role::Admin),
            reads = if self.inner.anonymous.is_some() {
                "open"
            } else {
                "need a key"
            },
            "API keys loaded; writes need an editor key"
        );
    }

    /// The caller named by the request's `Authorization` header.
    pub fn principal(&self, headers: &HeaderMap) -> Result<Principal, AppError> {
        let Some(token) = bearer_token(headers)? else {
            return Ok(Principal(Caller::Anonymous {
                role: self.inner.anonymous,
                read_only: self.inner.keys.is_empty(),
            }));
        };
        let key = self
            .inner
            .keys
            .find(token)
            .ok_or_else(|| AppError::Unauthenticated("unknown API key".into()))?;
        Ok(Principal(Caller::Key {
            name: key.name.clone(),
            role: key.role,
        }))
    }
}

/// The token of an `Authorization: Bearer TOKEN` header; `None` without one.
fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, AppError> {
    let malformed = |why: &str| {
        AppError::Unauthenticated(format!(
            "malformed Authorization header ({why}); send `Authorization: Bearer KEY`"
        ))
    };
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(malformed("sent more than once"));
    }
    let text = value
        .to_str()
        .map_err(|_| malformed("not visible ASCII"))?
        .trim();
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(malformed("not the Bearer scheme"));
    }
    let token = token.trim();
    if !is_token(token) {
        return Err(malformed("no token, or characters a token cannot hold"));
    }
    Ok(Some(token))
}

/// Middleware: resolves the caller, refuses the request unless it has at
/// least `minimum`, and hands the [`Principal`] on in the request extensions.
pub async fn require(
    State((access, minimum)): State<(Access, Role)>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = access
        .principal(request.headers())
        .and_then(|p| p.require(minimum).map(|()| p));
    match principal {
        Ok(principal) => {
            tracing::Span::current().record("principal", principal.name());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(error) => crate::http::refusal(request.uri().path(), request.headers(), error),
    }
}

/// GraphQL field guard: the field needs `role`. An execution without a
/// principal is refused, so access fails closed.
pub struct RoleGuard(pub Role);

impl async_graphql::Guard for RoleGuard {
    async fn check(&self, ctx: &async_graphql::Context<'_>) -> async_graphql::Result<()> {
        match ctx.data_opt::<Principal>() {
            Some(principal) => principal.require(self.0),
            None => Principal::nobody().require(self.0),
        }
        .gql()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    const EDITOR: &str = "editor-key-0123456789";

    fn headers(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    fn access(reads_need_key: bool) -> Access {
        Access::new(
            ApiKeys::parse(&format!("editor={EDITOR}, reader=reader-key-0123456789")).unwrap(),
            reads_need_key,
        )
    }

    fn code(result: Result<(), AppError>) -> &'static str {
        result.err().map_or("OK", |e| e.code())
    }

    #[test]
    fn roles_include_the_ones_below() {
        let access = access(false);
        let editor = access
            .principal(&headers(&[&format!("Bearer {EDITOR}")]))
            .unwrap();
        assert!(editor.is_authenticated());
        assert_eq!(code(editor.require(Role::Reader)), "OK");
        assert_eq!(code(editor.require(Role::Editor)), "OK");
        assert_eq!(code(editor.require(Role::Admin)), "FORBIDDEN");
        let reader = access
            .principal(&headers(&["bearer   reader-key-0123456789 "]))
            .unwrap();
        assert_eq!(code(reader.require(Role::Editor)), "FORBIDDEN");
    }

    #[test]
    fn anonymous_callers_read_unless_reads_need_a_key() {
        let open = access(false).principal(&HeaderMap::new()).unwrap();
        assert!(!open.is_authenticated());
        assert_eq!(code(open.require(Role::Reader)), "OK");
        assert_eq!(code(open.require(Role::Editor)), "UNAUTHENTICATED");
        let closed = access(true).principal(&HeaderMap::new()).unwrap();
        assert_eq!(code(closed.require(Role::Reader)), "UNAUTHENTICATED");
        let read_only = Access::new(ApiKeys::default(), false)
            .principal(&HeaderMap::new())
            .unwrap();
        assert_eq!(code(read_only.require(Role::Reader)), "OK");
        assert_eq!(code(read_only.require(Role::Editor)), "FORBIDDEN");
        assert_eq!(
            code(Principal::nobody().require(Role::Reader)),
            "UNAUTHENTICATED"
        );
    }

    #[test]
    fn unknown_and_malformed_keys_are_refused() {
        let access = access(false);
        for sent in [
            vec!["Bearer wrong-key-0123456789"],
            vec!["Bearer"],
            vec!["Bearer "],
            vec!["Basic dXNlcjpwYXNz"],
            vec![EDITOR],
            vec!["Bearer two words"],
            vec!["Bearer a,b"],
            vec!["Bearer x", "Bearer y"],
        ] {
            let error = access.principal(&headers(&sent)).err();
            assert_eq!(error.map(|e| e.code()), Some("UNAUTHENTICATED"), "{sent:?}");
        }
        let mut not_ascii = HeaderMap::new();
        not_ascii.insert(
            header::AUTHORIZATION,
            HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        );
        assert!(access.principal(&not_ascii).is_err());
    }

    #[test]
    fn env_keys_are_checked_and_never_echoed() {
        for (text, expected) in [
            ("editor", "expected ROLE=KEY"),
            ("owner=abcdefghijklmnopqrstuvwxyz", "unknown role"),
            ("editor=short", "at least 16"),
            ("editor=has spaces in the key!!", "at least 16"),
            ("editor=abcdefghijklmnop,admin=abcdefghijklmnop", "twice"),
        ] {
            let error = ApiKeys::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
            assert!(!error.contains("abcdefghijklmnop"), "echoed: {error}");
            assert!(!error.contains("short"), "echoed: {error}");
        }
        assert_eq!(ApiKeys::parse(" , ").unwrap().len(), 0);
    }

    #[test]
    fn key_files_hold_hashes() {
        let hash = hex::encode(sha256(EDITOR));
        let text = format!(
            "# keys\n\neditor:{hash}:ci-bot  # deploys\nADMIN:{}\n",
            hex::encode(sha256("admin-key-0123456789"))
        );
        let keys = ApiKeys::parse_file(&text, "keys").unwrap();
        assert_eq!(
            format!("{keys:?}"),
            r#"["ci-bot (editor)", "keys:4 (admin)"]"#
        );
        let access = Access::new(keys, false);
        let admin = access
            .principal(&headers(&["Bearer admin-key-0123456789"]))
            .unwrap();
        assert_eq!(admin.name(), "keys:4");
        assert_eq!(code(admin.require(Role::Admin)), "OK");

        for (text, expected) in [
            ("editor", "line 1: expected ROLE:SHA256"),
            ("boss:00", "line 1: unknown role"),
            ("reader:abc", "64 hex digits"),
            (
                &format!("reader:{hash}\nreader:{hash}"),
                "line 2: the same key",
            ),
        ] {
            let error = ApiKeys::parse_file(text, "keys").unwrap_err();
            assert!(error.contains(expected), "{text}: {error}");
        }
    }
}
