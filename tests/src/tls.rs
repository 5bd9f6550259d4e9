//! Helpers for CoAP over TLS between real processes: certificates made at test time with
//! `rcgen` into the test's directory (never committed), a broker started from a whole
//! configuration file, and `serve` with extra sections.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::{binary, wait_for, Proc, PATIENCE};

/// A certificate authority in a directory: `<name>-ca.pem`, and leaf certificates it issues.
pub struct Pki {
    dir: PathBuf,
    name: String,
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").field("ca", &self.ca).finish()
    }
}

/// A certificate and its key (PEM files).
#[derive(Debug, Clone)]
pub struct Leaf {
    /// The certificate.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

impl Pki {
    /// A new CA named `name`, its certificate written to `dir/<name>-ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Pki {
        std::fs::create_dir_all(dir).expect("create the certificate directory");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, cert.pem()).expect("write the CA certificate");
        Pki {
            dir: dir.to_path_buf(),
            name: name.into(),
            issuer: Issuer::new(params, key),
            ca,
        }
    }

    /// A certificate for `host` (a DNS name), usable as server and client certificate.
    pub fn issue(&self, host: &str) -> Leaf {
        let mut params = CertificateParams::new(vec![host.to_string()]).expect("leaf parameters");
        params.distinguished_name.push(DnType::CommonName, host);
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("leaf certificate");
        let base = self.dir.join(format!("{}-{host}", self.name));
        let leaf = Leaf {
            cert: base.with_extension("pem"),
            key: base.with_extension("key"),
        };
        std::fs::write(&leaf.cert, cert.pem()).expect("write the certificate");
        std::fs::write(&leaf.key, key.serialize_pem()).expect("write the key");
        leaf
    }
}

/// `[upstream]` over TLS to `address`, checking the name `localhost`.
pub fn upstream_tls(address: SocketAddr, ca: &Path, me: &Leaf) -> String {
    format!(
        "[upstream]\ntransport = \"tls\"\naddress = \"{address}\"\nca_file = {:?}\n\
         cert_file = {:?}\nkey_file = {:?}\nserver_name = \"localhost\"\n",
        ca.display().to_string(),
        me.cert.display().to_string(),
        me.key.display().to_string()
    )
}

/// A TLS listener section (`[coap_tls]`, `[downstream_tls]`) on `listen`.
pub fn listen_tls(section: &str, listen: SocketAddr, me: &Leaf, client_ca: &Path) -> String {
    format!(
        "[{section}]\nlisten = \"{listen}\"\ncert_file = {:?}\nkey_file = {:?}\n\
         client_ca_file = {:?}\n",
        me.cert.display().to_string(),
        me.key.display().to_string(),
        client_ca.display().to_string()
    )
}

/// Starts `qos-aggregator broker` with `[broker]` on `listen` (queue in `dir/broker-data`,
/// ACK timeout 500 ms) plus the sections in `extra`; waits until it listens. `run` numbers the
/// log file (`dir/broker-<run>.log`).
pub fn start_broker_with(dir: &Path, run: usize, listen: SocketAddr, extra: &str) -> Proc {
    let config = dir.join("broker.toml");
    std::fs::write(
        &config,
        format!(
            "[broker]\nlisten = \"{listen}\"\ndata_dir = {:?}\nmax_queue_bytes = 10485760\n\
             report_interval_ms = 1000\n\n[broker.reliability]\nack_timeout_ms = 500\n\n{extra}\n",
            dir.join("broker-data").display().to_string()
        ),
    )
    .expect("write the broker configuration");
    let log = dir.join(format!("broker-{run}.log"));
    let mut proc = Proc::spawn(
        "qos-aggregator broker",
        &binary("qos-aggregator"),
        &["broker", "--config", config.to_str().expect("UTF-8 path")],
        &log,
    );
    wait_for("the broker to listen", PATIENCE, || {
        if let Some(status) = proc.exited() {
            panic!("the broker exited with {status}\n{}", proc.log_tail());
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("broker listening") {
            Ok(())
        } else {
            Err(proc.log_tail())
        }
    });
    proc
}

/// Waits until the log at `path` holds `needle` `times` times or more.
pub fn wait_log(path: &Path, needle: &str, times: usize) -> String {
    wait_for(
        &format!("{needle:?} in {}", path.display()),
        PATIENCE,
        || {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.matches(needle).count() >= times {
                Ok(text)
            } else {
                Err(text.lines().rev().take(5).collect::<Vec<_>>().join("\n"))
            }
        },
    )
}

/// A second, reasonably long wait for things that depend on back-off.
pub const BACKOFF_PATIENCE: Duration = Duration::from_secs(120);

/// Waits (up to [`BACKOFF_PATIENCE`]) until serve holds exactly `n` records of `edge`.
pub fn wait_received(serve: &crate::Serve, edge: u32, n: u64) {
    wait_for(
        &format!("serve to hold {n} records of edge {edge}"),
        BACKOFF_PATIENCE,
        || match serve.received(edge) {
            Ok(got) if got == n => Ok(()),
            Ok(got) => Err(format!("{got} records")),
            Err(e) => Err(e),
        },
    );
}

/// Sends batches `seqs` from `edge`, each answered 2.04.
pub fn send(edge: &crate::FakeEdge, seqs: std::ops::RangeInclusive<u64>) {
    for seq in seqs {
        let a = edge.send_batch(seq).expect("the broker answers");
        assert_eq!(a.code, qos_coap::Code::CHANGED, "batch {seq}: {a:?}");
    }
}
