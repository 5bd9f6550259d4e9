//! Configuration of CoAP over TCP and TLS (RFC 8323): a broker's `[upstream]` link, and the
//! listeners that accept brokers (`[coap_tls]`/`[coap_tcp]` of `serve`,
//! `[downstream_tls]`/`[downstream_tcp]` of a broker that child brokers send to).
//!
//! TLS is mutual: the listener requires a client certificate signed by its `client_ca_file`
//! and refuses others; the connecting broker checks the listener's certificate against its
//! `ca_file` and `server_name` and presents its own `cert_file`. Plain TCP has no
//! authentication at all, so it is accepted on loopback addresses only.

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

/// `[coap_tcp]`, `[downstream_tcp]`: a plain CoAP-over-TCP listener, loopback only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpListen {
    /// `listen`: a loopback TCP `IP:port` (127.0.0.0/8 or ::1).
    pub listen: SocketAddr,
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
    /// Checks that TLS has its four settings and plain TCP a loopback address; `fallback` is
    /// `broker.upstream`.
    pub fn validate(&self, origin: &Path, fallback: SocketAddr) -> Result<(), ConfigError> {
        let addr = self.address.unwrap_or(fallback);
        match self.transport {
            TransportKind::Udp => Ok(()),
            TransportKind::Tcp if !addr.ip().is_loopback() => Err(invalid(
                origin,
                "upstream.address",
                addr.to_string(),
                "plain TCP is allowed to loopback addresses only; use transport = \"tls\"",
            )),
            TransportKind::Tcp => Ok(()),
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
                let config = tls::client_config(
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
    /// Refuses a non-loopback address.
    pub fn validate(&self, origin: &Path, field: &'static str) -> Result<(), ConfigError> {
        if !self.listen.ip().is_loopback() {
            return Err(invalid(
                origin,
                field,
                self.listen.to_string(),
                "plain CoAP over TCP has no authentication: loopback addresses only (use TLS)",
            ));
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
