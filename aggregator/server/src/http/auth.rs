//! Bearer-token authentication of the HTTP API and the dashboard's data.
//!
//! Tokens are configured hashed (`[[http.token]] name, role, sha256`): the process never holds
//! a token in clear, only the SHA-256 of each, so neither the configuration file nor a memory
//! dump gives one away. A request presents `Authorization: Bearer TOKEN`; its hash is compared
//! with every configured hash in constant time (no early exit, no data-dependent branch), so
//! the time of a refusal says nothing about how close a guess was.
//!
//! - With at least one token configured, every `/api/v1/` path (except `GET /api/v1/health`)
//!   and `/metrics` need a token: a `viewer` or `admin` one for reads (`GET`, `HEAD`), an
//!   `admin` one for every other method (metrics push, model and configuration changes,
//!   on-demand probes). The dashboard's static files are public (they hold no data); the
//!   dashboard asks for a token and sends it with each API request.
//! - Without tokens, nothing is checked; the configuration refuses that on a non-loopback
//!   `http.listen` unless `http.allow_unauthenticated = true` ([`crate::config`]).
//!
//! A missing or malformed header, or an unknown token, is answered `401` with
//! `WWW-Authenticate: Bearer realm="qos"` (plus `error="invalid_token"` for an unknown one); a
//! valid token without the role needed gets `403`. Both have a JSON body
//! `{"error": .., "reason": ..}` and are counted by reason ([`Failure`]). Neither the token nor
//! its hash is ever logged or echoed: only the configured `name` of a valid token is.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::server::{Request, Response};

/// The prefix of tokens made by [`new_token`] (any string is accepted as a token).
pub const TOKEN_PREFIX: &str = "qos_";
/// The realm named in `WWW-Authenticate`.
const REALM: &str = "Bearer realm=\"qos\"";

/// What a token allows.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Role {
    /// Reads: `GET` and `HEAD` on the API and `/metrics`.
    Viewer,
    /// Reads and writes: every method.
    Admin,
}

impl Role {
    /// `"viewer"` or `"admin"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Admin => "admin",
        }
    }
}

/// `[[http.token]]`: one accepted bearer token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// `name`: who holds the token (logged for writes; never the token). 1 to 64 printable
    /// characters.
    pub name: String,
    /// `role`: `"viewer"` or `"admin"`.
    pub role: Role,
    /// `sha256`: the SHA-256 of the token's bytes, 64 hexadecimal digits (`qos-aggregator
    /// token` prints it).
    pub sha256: String,
}

/// Why a request was refused; the label of its counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Failure {
    /// No `Authorization` header (401).
    Missing,
    /// An `Authorization` header that is not `Bearer <token>` (401).
    Malformed,
    /// A token that matches no configured hash (401).
    Invalid,
    /// A valid token whose role does not allow the method (403).
    Forbidden,
}

impl Failure {
    /// Every reason, in counter order.
    pub const ALL: [Failure; 4] = [
        Failure::Missing,
        Failure::Malformed,
        Failure::Invalid,
        Failure::Forbidden,
    ];

    /// The counter label.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::Malformed => "malformed",
            Failure::Invalid => "invalid",
            Failure::Forbidden => "forbidden",
        }
    }

    /// Index in [`Failure::ALL`].
    pub fn index(self) -> usize {
        match self {
            Failure::Missing => 0,
            Failure::Malformed => 1,
            Failure::Invalid => 2,
            Failure::Forbidden => 3,
        }
    }

    /// The answer: 401 with `WWW-Authenticate`, or 403.
    pub fn response(self, needed: Role) -> Response {
        let (status, error, reason) = match self {
            Failure::Missing => (
                401,
                "unauthorized",
                "an Authorization: Bearer token is required",
            ),
            Failure::Malformed => (
                401,
                "unauthorized",
                "the Authorization header is not \"Bearer <token>\"",
            ),
            Failure::Invalid => (401, "unauthorized", "the token is not valid"),
            Failure::Forbidden => (403, "forbidden", "the token's role does not allow this"),
        };
        let body = json!({"error": error, "reason": reason, "required_role": needed.as_str()});
        let response = Response::json(status, &body);
        match self {
            Failure::Forbidden => response,
            Failure::Invalid => response.with_header(
                "WWW-Authenticate",
                format!("{REALM}, error=\"invalid_token\""),
            ),
            _ => response.with_header("WWW-Authenticate", REALM),
        }
    }
}

/// The configured tokens (hashes only).
#[derive(Debug, Clone, Default)]
pub struct Auth {
    tokens: Vec<(String, Role, [u8; 32])>,
}

/// Why a [`TokenEntry`] is unusable (configuration validation names the entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// `sha256` is not 64 hexadecimal digits.
    #[error("expected 64 hexadecimal digits (the SHA-256 of the token)")]
    Hash,
    /// `name` is empty, longer than 64 bytes or has control characters.
    #[error("expected 1 to 64 printable characters")]
    Name,
    /// Two entries have the same hash.
    #[error("the same token hash is configured twice")]
    Duplicate,
}

impl Auth {
    /// The accepted tokens; `Err` names the index of the first bad entry.
    pub fn new(entries: &[TokenEntry]) -> Result<Auth, (usize, EntryError)> {
        let mut tokens: Vec<(String, Role, [u8; 32])> = Vec::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            let hash = parse_hash(&e.sha256).ok_or((i, EntryError::Hash))?;
            if e.name.is_empty() || e.name.len() > 64 || e.name.chars().any(char::is_control) {
                return Err((i, EntryError::Name));
            }
            if tokens.iter().any(|(_, _, h)| *h == hash) {
                return Err((i, EntryError::Duplicate));
            }
            tokens.push((e.name.clone(), e.role, hash));
        }
        Ok(Auth { tokens })
    }

    /// Whether any token is configured (else nothing is checked).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// The role a request needs, or `None` for a public one: the dashboard's files and
    /// `GET /api/v1/health` are public; other reads need a viewer; other methods an admin.
    pub fn needed(request: &Request) -> Option<Role> {
        let path = request.path();
        let read = matches!(request.method(), "GET" | "HEAD");
        let api = path == "/metrics" || path.starts_with(super::API_PREFIX);
        if !api || (read && path == "/api/v1/health") {
            return None;
        }
        Some(if read { Role::Viewer } else { Role::Admin })
    }

    /// Checks `request`; `Ok` with the name of the token used (`None` when nothing was needed).
    pub fn check(&self, request: &Request) -> Result<Option<&str>, (Failure, Role)> {
        if !self.enabled() {
            return Ok(None);
        }
        let Some(needed) = Auth::needed(request) else {
            return Ok(None);
        };
        let fail = |f| Err((f, needed));
        let Some(header) = request.header("Authorization") else {
            return fail(Failure::Missing);
        };
        let Some(token) = bearer(header) else {
            return fail(Failure::Malformed);
        };
        let Some((name, role)) = self.find(token) else {
            return fail(Failure::Invalid);
        };
        if role < needed {
            return fail(Failure::Forbidden);
        }
        Ok(Some(name))
    }

    /// The entry whose hash is the token's, comparing with every entry in constant time.
    fn find(&self, token: &str) -> Option<(&str, Role)> {
        let hash = sha256(token.as_bytes());
        let mut found = None;
        for (name, role, h) in &self.tokens {
            if constant_time_eq(h, &hash) {
                found = Some((name.as_str(), *role));
            }
        }
        found
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive, RFC 6750 §2.1).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty() && !token.contains(' '))
        .then_some(token)
}

/// Equality of two hashes without a data-dependent branch or early exit.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Lowercase hexadecimal.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// 64 hexadecimal digits (either case) as 32 bytes.
fn parse_hash(text: &str) -> Option<[u8; 32]> {
    let t = text.as_bytes();
    if t.len() != 64 {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let mut out = [0u8; 32];
    for (i, pair) in t.chunks(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// A new random token (`qos_` and 64 hexadecimal digits: 256 bits from the system's CSPRNG).
pub fn new_token() -> Result<String, ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// The `[[http.token]]` table that accepts `token` (the name quoted as a TOML basic string:
/// JSON's escapes are TOML's).
pub fn config_fragment(name: &str, role: Role, token: &str) -> String {
    format!(
        "[[http.token]]\nname = {}\nrole = \"{}\"\nsha256 = \"{}\"\n",
        serde_json::Value::from(name),
        role.as_str(),
        hex(&sha256(token.as_bytes()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse::parse_head;

    fn request(method: &str, path: &str, auth: Option<&str>) -> Request {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        let head =
            parse_head(format!("{method} {path} HTTP/1.1\r\nHost: t\r\n{auth}\r\n").as_bytes())
                .unwrap();
        Request {
            head,
            body: Vec::new(),
        }
    }

    fn auth(tokens: &[(&str, Role, &str)]) -> Auth {
        let entries: Vec<TokenEntry> = tokens
            .iter()
            .map(|(name, role, token)| TokenEntry {
                name: (*name).into(),
                role: *role,
                sha256: hex(&sha256(token.as_bytes())),
            })
            .collect();
        Auth::new(&entries).unwrap()
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        // FIPS 180-2, "abc".
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_gate_reads_and_writes() {
        let a = auth(&[
            ("ops", Role::Admin, "A-tok"),
            ("wall", Role::Viewer, "V-tok"),
        ]);
        let ok = |m, p, t: Option<&str>| a.check(&request(m, p, t)).map(|n| n.map(String::from));
        assert_eq!(
            ok("GET", "/api/v1/edges", Some("Bearer V-tok")),
            Ok(Some("wall".into()))
        );
        assert_eq!(
            ok("GET", "/metrics", Some("bearer A-tok")),
            Ok(Some("ops".into()))
        );
        assert_eq!(
            ok("PUT", "/api/v1/edges/1/config", Some("Bearer V-tok")),
            Err((Failure::Forbidden, Role::Admin))
        );
        assert_eq!(
            ok("POST", "/api/v1/metrics", Some("Bearer A-tok")),
            Ok(Some("ops".into()))
        );
        assert_eq!(
            ok("GET", "/api/v1/edges", None),
            Err((Failure::Missing, Role::Viewer))
        );
        assert_eq!(
            ok("GET", "/api/v1/edges", Some("Basic dXNlcjpwYXNz")),
            Err((Failure::Malformed, Role::Viewer))
        );
        assert_eq!(
            ok("GET", "/api/v1/edges", Some("Bearer V-tok2")),
            Err((Failure::Invalid, Role::Viewer))
        );
        assert_eq!(
            ok("DELETE", "/api/v1/edges/1/config", None),
            Err((Failure::Missing, Role::Admin))
        );
        // public: the dashboard's files and the health check
        assert_eq!(ok("GET", "/", None), Ok(None));
        assert_eq!(ok("GET", "/assets/app.js", None), Ok(None));
        assert_eq!(ok("GET", "/api/v1/health", None), Ok(None));
        assert_eq!(
            ok("POST", "/api/v1/health", None),
            Err((Failure::Missing, Role::Admin))
        );
    }

    /// The OpenAPI document declares the bearer scheme for every operation but the public ones,
    /// which are exactly those [`Auth::needed`] lets through.
    #[test]
    fn openapi_declares_the_bearer_scheme() {
        let doc: serde_json::Value =
            serde_json::from_str(crate::http::services_api::OPENAPI).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["security"], json!([{"bearerAuth": []}]));
        for (method, template) in crate::http::services_api::ROUTES {
            let path = template.replace("{id}", "1").replace("{name}", "x");
            let op = &doc["paths"][template][method.to_lowercase()];
            let public = op["security"] == json!([]);
            let needed = Auth::needed(&request(method, &path, None));
            assert_eq!(public, needed.is_none(), "{method} {path}");
            if !public {
                assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
            }
        }
    }

    #[test]
    fn without_tokens_nothing_is_checked() {
        let a = Auth::default();
        assert!(!a.enabled());
        assert_eq!(
            a.check(&request("DELETE", "/api/v1/edges/1/config", None)),
            Ok(None)
        );
    }

    #[test]
    fn answers_carry_the_challenge_and_no_secret() {
        let r = Failure::Missing.response(Role::Viewer);
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .contains(&("WWW-Authenticate", "Bearer realm=\"qos\"".into())));
        let r = Failure::Invalid.response(Role::Viewer);
        assert_eq!(r.status, 401);
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| *k == "WWW-Authenticate" && v.contains("invalid_token")));
        let r = Failure::Forbidden.response(Role::Admin);
        assert_eq!(r.status, 403);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["error"], "forbidden");
        assert_eq!(body["required_role"], "admin");
    }

    #[test]
    fn bad_entries_are_refused() {
        let entry = |name: &str, sha256: &str| TokenEntry {
            name: name.into(),
            role: Role::Viewer,
            sha256: sha256.into(),
        };
        let good = hex(&sha256(b"x"));
        assert_eq!(
            Auth::new(&[entry("a", "12")]).unwrap_err(),
            (0, EntryError::Hash)
        );
        assert_eq!(
            Auth::new(&[entry("a", &"g".repeat(64))]).unwrap_err(),
            (0, EntryError::Hash)
        );
        assert_eq!(
            Auth::new(&[entry("", &good)]).unwrap_err(),
            (0, EntryError::Name)
        );
        assert_eq!(
            Auth::new(&[entry("a", &good), entry("b", &good.to_uppercase())]).unwrap_err(),
            (1, EntryError::Duplicate)
        );
    }

    #[test]
    fn new_tokens_differ_and_their_fragment_accepts_them() {
        let (t1, t2) = (new_token().unwrap(), new_token().unwrap());
        assert_ne!(t1, t2);
        assert!(t1.starts_with(TOKEN_PREFIX) && t1.len() == 68, "{t1}");
        let fragment = config_fragment("ci", Role::Admin, &t1);
        assert!(!fragment.contains(&t1));
        let config = crate::config::Config::parse(&fragment, std::path::Path::new("t")).unwrap();
        let a = Auth::new(&config.http.tokens).unwrap();
        let bearer = format!("Bearer {t1}");
        assert_eq!(
            a.check(&request("POST", "/api/v1/metrics", Some(&bearer))),
            Ok(Some("ci"))
        );
        let other = format!("Bearer {t2}");
        assert!(a.check(&request("GET", "/metrics", Some(&other))).is_err());
    }
}
