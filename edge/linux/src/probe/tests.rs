//! Every probe kind against real servers on 127.0.0.1 (see [`super::testutil`]).

use qos_wire::codec::List;
use qos_wire::outcome::ErrorClass;
use qos_wire::phase::Phase;
use qos_wire::probe::{DnsType, HttpMethod, ProbeKind, Step};

use super::testutil::*;
use super::{test_probe as probe, test_probe_with as probe_with, Options, Report};

fn http(url: &str) -> ProbeKind<'_> {
    ProbeKind::Http {
        method: HttpMethod::Get,
        url,
        body: b"",
        expect_status: 0,
        expect_body: None,
        max_redirects: 5,
    }
}

fn phase(r: &Report, p: Phase) -> u32 {
    r.result
        .phases
        .get(p)
        .unwrap_or_else(|| panic!("{p:?} missing in {r:?}"))
}

#[test]
fn http_ok_has_every_phase_and_they_add_up() {
    let a = http_server(None);
    let url = format!("http://{a}/ok");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 200,
            expect_body: Some("lo wor"),
            max_redirects: 0,
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    assert_eq!(r.result.detail, 200);
    assert_eq!(r.result.phases.get(Phase::Dns), None);
    assert_eq!(r.result.phases.get(Phase::Tls), None);
    let sum = phase(&r, Phase::Connect) + phase(&r, Phase::FirstByte) + phase(&r, Phase::Download);
    assert!(sum <= phase(&r, Phase::Total), "{r:?}");
    assert_eq!(r.cert_days_left, None);
}

#[test]
fn http_by_name_records_dns() {
    let a = http_server(None);
    let url = format!("http://localhost:{}/ok", a.port());
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Dns);
}

#[test]
fn http_status_and_content_mismatch() {
    let a = http_server(None);
    let url = format!("http://{a}/missing");
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, Some(ErrorClass::HttpStatus));
    assert_eq!(r.result.detail, 404);
    assert!(r.result.error_after_us.is_some());
    // 404 expected: fine.
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 404,
            expect_body: None,
            max_redirects: 0,
        },
        2000,
    );
    assert_eq!(r.result.error, None);
    let url = format!("http://{a}/ok");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 0,
            expect_body: Some("goodbye"),
            max_redirects: 0,
        },
        2000,
    );
    assert_eq!(r.result.error, Some(ErrorClass::ContentMismatch));
}

#[test]
fn redirects_are_followed_counted_and_limited() {
    let a = http_server(None);
    let url = format!("http://{a}/redirect/3");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 0,
            expect_body: Some("arrived"),
            max_redirects: 5,
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    assert_eq!((r.result.redirects, r.result.detail), (3, 200));
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 0,
            expect_body: None,
            max_redirects: 2,
        },
        2000,
    );
    assert_eq!(r.result.error, Some(ErrorClass::HttpStatus));
    assert_eq!((r.result.redirects, r.result.detail), (2, 302));
    let url = format!("http://{a}/loop");
    let r = probe(http(&url), 2000);
    assert_eq!(
        (r.result.error, r.result.redirects),
        (Some(ErrorClass::HttpStatus), 5)
    );
    // Expecting the redirect itself: not followed.
    let url = format!("http://{a}/redirect/1");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 302,
            expect_body: None,
            max_redirects: 5,
        },
        2000,
    );
    assert_eq!((r.result.error, r.result.redirects), (None, 0));
}

#[test]
fn slow_first_byte_shows_in_its_phase() {
    let a = http_server(None);
    let url = format!("http://{a}/slow");
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, None, "{r:?}");
    let fb = phase(&r, Phase::FirstByte);
    assert!((140_000..1_000_000).contains(&fb), "first byte {fb}");
    assert!(phase(&r, Phase::Connect) < 50_000);
    // A timeout shorter than the server's delay.
    let r = probe(http(&url), 60);
    assert_eq!(r.result.error, Some(ErrorClass::Timeout), "{r:?}");
    let after = r.result.error_after_us.unwrap();
    assert!((55_000..140_000).contains(&after), "{after}");
}

#[test]
fn chunked_body_download_and_match() {
    let a = http_server(None);
    let url = format!("http://{a}/chunked");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 200,
            expect_body: Some("chunked world"),
            max_redirects: 0,
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    // Three chunks 5 ms apart: the download spans at least ~10 ms.
    assert!(phase(&r, Phase::Download) >= 8_000, "{r:?}");
}

#[test]
fn post_uploads_and_echo_comes_back() {
    let a = http_server(None);
    let url = format!("http://{a}/echo");
    let body = vec![b'z'; 100_000];
    let mut body_with_marker = body.clone();
    body_with_marker.extend_from_slice(b"END-MARK");
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Post,
            url: &url,
            body: &body_with_marker,
            expect_status: 200,
            expect_body: Some("zzEND-MARK"),
            max_redirects: 0,
        },
        3000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Upload);
    let r = probe(
        ProbeKind::Http {
            method: HttpMethod::Head,
            url: &url,
            body: b"",
            expect_status: 200,
            expect_body: None,
            max_redirects: 0,
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
}

#[test]
fn reset_refused_and_closed() {
    let a = http_server(None);
    let url = format!("http://{a}/reset");
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, Some(ErrorClass::Reset), "{r:?}");
    let url = format!("http://{a}/close");
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, Some(ErrorClass::Protocol), "{r:?}");
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", l.local_addr().unwrap());
    drop(l);
    let r = probe(http(&url), 2000);
    assert_eq!(r.result.error, Some(ErrorClass::Refused), "{r:?}");
    let r = probe(http("http://no-such-host.invalid/"), 2000);
    assert_eq!(r.result.error, Some(ErrorClass::DnsFailure), "{r:?}");
}

#[test]
fn https_with_our_ca_and_with_a_wrong_one() {
    let good = pki("good");
    let wrong = pki("wrong");
    let a = http_server(Some(good.server.clone()));
    let url = format!("https://localhost:{}/ok", a.port());
    let opts = Options {
        ca_file: Some(good.ca_file.clone()),
    };
    let r = probe_with(
        ProbeKind::Http {
            method: HttpMethod::Get,
            url: &url,
            body: b"",
            expect_status: 200,
            expect_body: Some("hello"),
            max_redirects: 0,
        },
        3000,
        &opts,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Tls);
    phase(&r, Phase::FirstByte);
    let days = r.cert_days_left.expect("certificate days");
    assert!((20_000..40_000).contains(&days), "{days}");
    // By IP address (the certificate has an IP SAN).
    let url_ip = format!("https://127.0.0.1:{}/redirect/1", a.port());
    let r = probe_with(http(&url_ip), 3000, &opts);
    assert_eq!((r.result.error, r.result.redirects), (None, 1), "{r:?}");

    let r = probe_with(
        http(&url),
        3000,
        &Options {
            ca_file: Some(wrong.ca_file.clone()),
        },
    );
    assert_eq!(r.result.error, Some(ErrorClass::TlsFailure), "{r:?}");
    assert!(r.message.unwrap().contains("certificate"));
    // No CA at all (system store only).
    let r = probe(http(&url), 3000);
    assert_eq!(r.result.error, Some(ErrorClass::TlsFailure), "{r:?}");
    // TLS to a plain HTTP server.
    let plain = http_server(None);
    let url = format!("https://127.0.0.1:{}/ok", plain.port());
    let r = probe_with(http(&url), 3000, &opts);
    assert_eq!(r.result.error, Some(ErrorClass::TlsFailure), "{r:?}");
}

fn dns<'a>(
    resolver: &'a str,
    name: &'a str,
    qtype: DnsType,
    expect: Option<&'a str>,
) -> ProbeKind<'a> {
    ProbeKind::Dns {
        resolver,
        name,
        qtype,
        expect,
    }
}

#[test]
fn dns_answers_and_failures() {
    let s = dns_server().to_string();
    let r = probe(dns(&s, "ok.test", DnsType::A, Some("10.0.0.1")), 1000);
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Dns);
    let r = probe(
        dns(&s, "OK.test.", DnsType::Aaaa, Some("2001:db8::1")),
        1000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    let r = probe(dns(&s, "ok.test", DnsType::A, None), 1000);
    assert_eq!(r.result.error, None, "{r:?}");
    let r = probe(dns(&s, "ok.test", DnsType::A, Some("10.0.0.2")), 1000);
    assert_eq!(r.result.error, Some(ErrorClass::DnsFailure), "{r:?}");
    let r = probe(dns(&s, "nx.test", DnsType::A, None), 1000);
    assert_eq!(
        (r.result.error, r.result.detail),
        (Some(ErrorClass::DnsFailure), 3)
    );
    let r = probe(dns(&s, "fail.test", DnsType::A, None), 1000);
    assert_eq!(
        (r.result.error, r.result.detail),
        (Some(ErrorClass::DnsFailure), 2)
    );
    let r = probe(dns(&s, "trunc.test", DnsType::A, None), 1000);
    assert_eq!(r.result.error, Some(ErrorClass::Protocol), "{r:?}");
    let r = probe(dns(&s, "garbage.test", DnsType::A, None), 1000);
    assert_eq!(r.result.error, Some(ErrorClass::Protocol), "{r:?}");
    let r = probe(dns(&s, "silent.test", DnsType::A, None), 150);
    assert_eq!(r.result.error, Some(ErrorClass::Timeout), "{r:?}");
    // A resolver port with nothing behind it: ICMP port unreachable → refused.
    let (silent, sock) = silent_udp();
    drop(sock);
    let r = probe(dns(&silent, "ok.test", DnsType::A, None), 500);
    assert_eq!(r.result.error, Some(ErrorClass::Refused), "{r:?}");
}

#[test]
fn transactions_redis_and_postgres() {
    let redis = redis_like().to_string();
    let steps = [
        Step {
            send: b"PING\r\n",
            expect: b"+PONG",
        },
        Step {
            send: b"PING\r\n",
            expect: b"+PONG\r\n",
        },
    ];
    let r = probe(
        ProbeKind::Transaction {
            target: &redis,
            steps: List::from_slice(&steps),
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    assert_eq!((r.result.detail, r.steps_us.len()), (2, 2));
    phase(&r, Phase::Connect);
    phase(&r, Phase::FirstByte);
    let bad = [Step {
        send: b"HELLO\r\n",
        expect: b"+PONG",
    }];
    let r = probe(
        ProbeKind::Transaction {
            target: &redis,
            steps: List::from_slice(&bad),
        },
        2000,
    );
    assert_eq!(
        (r.result.error, r.result.detail),
        (Some(ErrorClass::ContentMismatch), 0)
    );

    let pg = postgres_like().to_string();
    let steps = [Step {
        send: &SSL_REQUEST,
        expect: b"N",
    }];
    let r = probe(
        ProbeKind::Transaction {
            target: &pg,
            steps: List::from_slice(&steps),
        },
        2000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    // Expecting more than the peer says before closing.
    let steps = [Step {
        send: &SSL_REQUEST,
        expect: b"NX",
    }];
    let r = probe(
        ProbeKind::Transaction {
            target: &pg,
            steps: List::from_slice(&steps),
        },
        2000,
    );
    assert_eq!(r.result.error, Some(ErrorClass::Protocol), "{r:?}");
    // A peer that never answers: timeout.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let quiet = l.local_addr().unwrap().to_string();
    let r = probe(
        ProbeKind::Transaction {
            target: &quiet,
            steps: List::from_slice(&steps),
        },
        200,
    );
    assert_eq!(r.result.error, Some(ErrorClass::Timeout), "{r:?}");
    drop(l);
}

#[test]
fn udp_echo_and_coap_ping() {
    let echo = udp_echo_server().to_string();
    let r = probe(
        ProbeKind::UdpEcho {
            target: &echo,
            payload: b"hello echo",
        },
        1000,
    );
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Connect);
    let (silent, _sock) = silent_udp();
    let r = probe(
        ProbeKind::UdpEcho {
            target: &silent,
            payload: b"x",
        },
        150,
    );
    assert_eq!(r.result.error, Some(ErrorClass::Timeout), "{r:?}");

    let coap = coap_server().to_string();
    let r = probe(ProbeKind::CoapPing { target: &coap }, 1000);
    assert_eq!(r.result.error, None, "{r:?}");
    phase(&r, Phase::Connect);
    // The echo server sends our CON back: not an RST.
    let r = probe(ProbeKind::CoapPing { target: &echo }, 1000);
    assert_eq!(r.result.error, Some(ErrorClass::Protocol), "{r:?}");
    let r = probe(ProbeKind::CoapPing { target: &silent }, 150);
    assert_eq!(r.result.error, Some(ErrorClass::Timeout), "{r:?}");
}

#[test]
fn coap_ping_against_libcoap_if_installed() {
    let Ok(path) = std::env::var("PATH") else {
        return;
    };
    let Some(bin) = std::env::split_paths(&path)
        .map(|d| d.join("coap-server-notls"))
        .find(|p| p.exists())
    else {
        eprintln!("coap-server-notls not on PATH: skipped");
        return;
    };
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(bin)
        .args(["-A", "127.0.0.1", "-p", &port.to_string()])
        .spawn()
        .unwrap();
    let target = format!("127.0.0.1:{port}");
    let mut ok = false;
    for _ in 0..20 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if probe(ProbeKind::CoapPing { target: &target }, 300)
            .result
            .ok()
        {
            ok = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(ok, "libcoap's server did not answer our ping");
}

#[test]
fn icmp_to_loopback_or_a_clear_sysctl_error() {
    let r = probe(ProbeKind::Icmp { host: "127.0.0.1" }, 1000);
    match r.result.error {
        None => {
            phase(&r, Phase::Connect);
        }
        Some(ErrorClass::Other) => {
            let m = r.message.unwrap();
            assert!(m.contains("net.ipv4.ping_group_range"), "{m}");
        }
        other => panic!("{other:?}: {r:?}"),
    }
}
