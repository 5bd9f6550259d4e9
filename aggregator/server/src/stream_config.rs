//! Configuration of CoAP over TCP and TLS (RFC 8323): a broker's `[upstream]` link, and the
//! listeners that accept brokers (`[coap_tls]`/`[coap_tcp]` of `serve`,
//! `[downstream_tls]`/`[downstream_tcp]` of a broker that child brokers send to).
//!
//! TLS is mutual: the listener requires a client certificate signed by its `client_ca_file`
//! and refuses others; the connecting broker checks the listener's certificate against its
//! `ca_file` and `server_name` and presents its own `cert_file`.
//!
//! Plaintext between brokers and the super-manager (an `[upstream]` over `"udp"` or `"tcp"`,
//! a `[coap_tcp]`/`[downstream_tcp]` listener) has no authentication and no confidentiality,
//! so it is allowed on loopback addresses only (logged as a notice at start), unless
//! `allow_plaintext = true` is set in that section: then it starts, with a warning at start
//! and at every (re)connection of the upstream. Edges' own CoAP over UDP (plain or OSCORE)
//! to `[coap]` and `broker.listen` is not concerned.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;
use crate::stream_io::{Accept, Connect};
use crate::tls::{self, TlsError};

/// `transport`: how a broker reaches its upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum TransportKind {
    /// CoAP over UDP (RFC 7252), the default.
    #[default]
    Udp,
    /// CoAP over plain TCP (RFC 8323): loopback addresses only.
    Tcp,
    /// CoAP over TLS (RFC 8323) with client certificates.
    Tls,
}

/// `[upstream]` of a broker: the transport to the super-manager or the parent broker.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UpstreamSection {
    /// `transport`: `"udp"` (default), `"tcp"` (loopback only) or `"tls"`.
    pub transport: TransportKind,
    /// `address`: the upstream's `IP:port` (its `[coap]`, `[coap_tcp]` or `[coap_tls]` listen
    /// address, or a parent broker's). Default: `broker.upstream`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    /// `ca_file` (TLS): PEM CA certificate(s) the upstream's certificate must chain to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `cert_file` (TLS): this broker's PEM client certificate (chain, leaf first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// `key_file` (TLS): the PEM private key of `cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// `server_name` (TLS): the DNS name (or IP address) the upstream's certificate must be
    /// valid for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// `allow_plaintext`: let a `"udp"` or `"tcp"` upstream be a non-loopback address (no
    /// authentication, no encryption: logged as a warning). Default false: such a broker
    /// refuses to start.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
}

/// `[coap_tls]`, `[downstream_tls]`: a CoAP-over-TLS listener requiring client certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsListen {
    /// `listen`: TCP `IP:port` (CoAP over TLS's port is 5684).
    pub listen: SocketAddr,
    /// `cert_file`: this server's PEM certificate (chain, leaf first).
    pub cert_file: PathBuf,
    /// `key_file`: the PEM private key of `cert_file`.
    pub key_file: PathBuf,
    /// `client_ca_file`: PEM CA certificate(s) that client certificates must chain to; other
    /// clients are refused in the handshake (logged, counted).
    pub client_ca_file: PathBuf,
}

/// `[coap_tcp]`, `[downstream_tcp]`: a plain CoAP-over-TCP listener, loopback only unless
/// `allow_plaintext`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListen {
    /// `listen`: a loopback TCP `IP:port` (127.0.0.0/8 or ::1).
    pub listen: SocketAddr,
    /// `allow_plaintext`: let `listen` be a non-loopback address (brokers' traffic then
    /// crosses the network unauthenticated and unencrypted: logged as a warning). Default
    /// false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_plaintext: bool,
}

/// Whether `addr` keeps traffic on this machine (127.0.0.0/8, ::1, or an IPv4-mapped
/// loopback address).
pub fn is_loopback(addr: SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        ip => ip.is_loopback(),
    }
}

/// Logs a plaintext CoAP-over-TCP listener for brokers at start: a notice on loopback, a
/// warning elsewhere (only reached with `allow_plaintext = true`). `section` names it.
pub fn log_plaintext_listener(section: &str, addr: SocketAddr) {
    if is_loopback(addr) {
        tracing::info!(listen = %addr, section, "plain CoAP over TCP: no authentication (loopback: only processes of this machine can connect)");
    } else {
        tracing::warn!(listen = %addr, section, "plain CoAP over TCP: no authentication on a non-loopback address (allow_plaintext = true): brokers' traffic is neither authenticated nor encrypted; use TLS");
    }
}

fn invalid(origin: &Path, field: &'static str, value: String, reason: &'static str) -> ConfigError {
    ConfigError::Invalid {
        path: origin.to_path_buf(),
        field,
        value,
        reason,
    }
}

impl UpstreamSection {
    /// Whether the upstream link is plaintext (`"udp"` or `"tcp"`).
    pub fn is_plaintext(&self) -> bool {
        !matches!(self.transport, TransportKind::Tls)
    }

    /// Logs the upstream's protection at start (and, for a plaintext non-loopback upstream,
    /// at every connection): a notice for plaintext on loopback, a warning for plaintext
    /// elsewhere (only reached with `allow_plaintext = true`); nothing for TLS.
    pub fn log_plaintext(&self, addr: SocketAddr) {
        if !self.is_plaintext() {
            return;
        }
        if is_loopback(addr) {
            tracing::info!(upstream = %addr, transport = ?self.transport, "plaintext upstream on loopback: no authentication (only processes of this machine can see it)");
        } else {
            tracing::warn!(upstream = %addr, transport = ?self.transport, "plaintext upstream to a non-loopback address (upstream.allow_plaintext = true): neither authenticated nor encrypted; use transport = \"tls\"");
        }
    }

    /// Checks that TLS has its four settings and a plaintext upstream a loopback address
    /// (unless `allow_plaintext`); `fallback` is `broker.upstream`.
    pub fn validate(&self, origin: &Path, fallback: SocketAddr) -> Result<(), ConfigError> {
        let addr = self.address.unwrap_or(fallback);
        let field = if self.address.is_some() {
            "upstream.address"
        } else {
            "broker.upstream"
        };
        match self.transport {
            TransportKind::Udp | TransportKind::Tcp
                if !is_loopback(addr) && !self.allow_plaintext =>
            {
                Err(invalid(
                    origin,
                    field,
                    addr.to_string(),
                    "plaintext CoAP to a non-loopback address is neither authenticated nor encrypted; use transport = \"tls\", or set upstream.allow_plaintext = true",
                ))
            }
            TransportKind::Udp | TransportKind::Tcp => Ok(()),
            TransportKind::Tls => {
                for (field, missing) in [
                    ("upstream.ca_file", self.ca_file.is_none()),
                    ("upstream.cert_file", self.cert_file.is_none()),
                    ("upstream.key_file", self.key_file.is_none()),
                    ("upstream.server_name", self.server_name.is_none()),
                ] {
                    if missing {
                        return Err(invalid(
                            origin,
                            field,
                            "(missing)".into(),
                            "required with transport = \"tls\"",
                        ));
                    }
                }
                if let Some(name) = &self.server_name {
                    tls::server_name(name).map_err(|_| {
                        invalid(
                            origin,
                            "upstream.server_name",
                            format!("{name:?}"),
                            "expected a DNS name or IP address",
                        )
                    })?;
                }
                Ok(())
            }
        }
    }

    /// The connecting side: loads the TLS files (errors name the file).
    pub fn connect(&self) -> Result<Option<Connect>, TlsError> {
        match self.transport {
            TransportKind::Udp => Ok(None),
            TransportKind::Tcp => Ok(Some(Connect::Plain)),
            TransportKind::Tls => {
                let path = |p: &Option<PathBuf>| p.clone().unwrap_or_default();
                let config = tls::ClientSlot::load(
                    &path(&self.ca_file),
                    &path(&self.cert_file),
                    &path(&self.key_file),
                )?;
                let name = tls::server_name(self.server_name.as_deref().unwrap_or(""))?;
                Ok(Some(Connect::Tls(config, name)))
            }
        }
    }
}

impl TcpListen {
    /// Refuses a non-loopback address unless `allow_plaintext`; `field` is its `listen` key
    /// (`coap_tcp.listen`), the error names `allow_plaintext` of the same section.
    pub fn validate(&self, origin: &Path, field: &'static str) -> Result<(), ConfigError> {
        if !is_loopback(self.listen) && !self.allow_plaintext {
            let section = field.strip_suffix(".listen").unwrap_or(field);
            let reason = match section {
                "coap_tcp" => "plain CoAP over TCP has no authentication: loopback addresses only; use [coap_tls], or set coap_tcp.allow_plaintext = true",
                "downstream_tcp" => "plain CoAP over TCP has no authentication: loopback addresses only; use [downstream_tls], or set downstream_tcp.allow_plaintext = true",
                _ => "plain CoAP over TCP has no authentication: loopback addresses only; use TLS, or set allow_plaintext = true",
            };
            return Err(invalid(origin, field, self.listen.to_string(), reason));
        }
        Ok(())
    }
}

impl TlsListen {
    /// Loads the certificate, key and client CA (errors name the file).
    pub fn accept(&self) -> Result<Accept, TlsError> {
        Ok(Accept::Tls(tls::ServerSlot::load(
            &self.cert_file,
            &self.key_file,
            Some(&self.client_ca_file),
        )?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct F {
        #[serde(default)]
        upstream: UpstreamSection,
        coap_tcp: Option<TcpListen>,
    }

    fn check(text: &str) -> Result<(), ConfigError> {
        let f: F = toml::from_str(text).unwrap();
        let origin = Path::new("b.toml");
        f.upstream
            .validate(origin, "127.0.0.1:5683".parse().unwrap())?;
        if let Some(t) = f.coap_tcp {
            t.validate(origin, "coap_tcp.listen")?;
        }
        Ok(())
    }

    #[test]
    fn tls_needs_its_files_and_tcp_stays_on_loopback() {
        assert!(check("").is_ok());
        assert!(check("[upstream]\ntransport = \"tcp\"\n").is_ok());
        let field = |r: Result<(), ConfigError>| match r {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            field(check(
                "[upstream]\ntransport = \"tcp\"\naddress = \"192.0.2.1:5683\"\n"
            )),
            "upstream.address"
        );
        assert_eq!(
            field(check("[upstream]\naddress = \"192.0.2.1:5683\"\n")),
            "upstream.address"
        );
        assert_eq!(
            field(check(
                "[upstream]\ntransport = \"tls\"\nca_file = \"ca.pem\"\n"
            )),
            "upstream.cert_file"
        );
        assert_eq!(
            field(check("[coap_tcp]\nlisten = \"0.0.0.0:5683\"\n")),
            "coap_tcp.listen"
        );
        assert!(check("[coap_tcp]\nlisten = \"[::1]:5683\"\n").is_ok());
        let e = check(
            "[upstream]\ntransport = \"tls\"\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\nserver_name = \"bad name!\"\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("upstream.server_name"), "{e}");
    }

    #[test]
    fn plaintext_leaves_loopback_only_when_allowed() {
        let origin = Path::new("b.toml");
        let up = |text: &str, fallback: &str| {
            let f: F = toml::from_str(text).unwrap();
            f.upstream.validate(origin, fallback.parse().unwrap())
        };
        // UDP (the default) to another machine: refused, naming the key and the address.
        let e = up("", "192.0.2.1:5683").unwrap_err().to_string();
        assert!(e.contains("broker.upstream"), "{e}");
        assert!(e.contains("192.0.2.1:5683"), "{e}");
        assert!(e.contains("upstream.allow_plaintext"), "{e}");
        assert!(!e.contains('\n'), "one line: {e}");
        // ... unless allowed; TCP too.
        assert!(up("[upstream]\nallow_plaintext = true\n", "192.0.2.1:5683").is_ok());
        assert!(up(
            "[upstream]\ntransport = \"tcp\"\naddress = \"192.0.2.1:5683\"\nallow_plaintext = true\n",
            "127.0.0.1:5683"
        )
        .is_ok());
        // Loopback, v4, v6 and v4-mapped: fine without it.
        for a in [
            "127.0.0.1:5683",
            "127.9.9.9:1",
            "[::1]:5683",
            "[::ffff:127.0.0.1]:5683",
        ] {
            assert!(up("", a).is_ok(), "{a}");
        }
        // TLS is never plaintext.
        assert!(up(
            "[upstream]\ntransport = \"tls\"\nca_file = \"a\"\ncert_file = \"b\"\nkey_file = \"c\"\nserver_name = \"x\"\n",
            "192.0.2.1:5684"
        )
        .is_ok());
        // A plain TCP listener for brokers off loopback: refused unless allowed.
        let e = check("[coap_tcp]\nlisten = \"0.0.0.0:5683\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("coap_tcp.allow_plaintext"), "{e}");
        assert!(check("[coap_tcp]\nlisten = \"0.0.0.0:5683\"\nallow_plaintext = true\n").is_ok());
    }

    #[test]
    fn missing_files_are_named() {
        let u = UpstreamSection {
            transport: TransportKind::Tls,
            ca_file: Some("no/such/ca.pem".into()),
            cert_file: Some("c.pem".into()),
            key_file: Some("k.pem".into()),
            server_name: Some("localhost".into()),
            ..UpstreamSection::default()
        };
        let e = u.connect().unwrap_err().to_string();
        assert!(e.contains("ca_file no/such/ca.pem"), "{e}");
    }
}
