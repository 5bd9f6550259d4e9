//! serve's HTTP request reader on arbitrary bytes: `find_head_end` and `parse_head` (the
//! request line, headers, `Content-Length`, `Connection`, `Expect`), then what handlers read
//! from a request: percent-decoded query pairs and headers, and the API-token check
//! (`http::auth`) with a viewer and an admin token configured. A refusal renders as a JSON
//! answer; a request without `Authorization` is never let through where a role is needed, and
//! only the configured tokens are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_aggregator::http::auth::{self, Auth, Role, TokenEntry};
use qos_aggregator::http::parse::{find_head_end, parse_head, percent_decode};
use qos_aggregator::http::Request;

const VIEWER: &str = "qos_viewer";
const ADMIN: &str = "qos_admin";

fn auth() -> Auth {
    let entry = |name: &str, role, token: &str| TokenEntry {
        name: name.into(),
        role,
        sha256: auth::hex(&auth::sha256(token.as_bytes())),
    };
    Auth::new(&[
        entry("wall", Role::Viewer, VIEWER),
        entry("ops", Role::Admin, ADMIN),
    ])
    .expect("valid entries")
}

fuzz_target!(|data: &[u8]| {
    let Some(end) = find_head_end(data, 0) else {
        return;
    };
    assert!(end <= data.len());
    match parse_head(&data[..end]) {
        Err(e) => {
            let r = e.to_response();
            assert!((400..600).contains(&r.status));
            serde_json::from_slice::<serde_json::Value>(&r.body).expect("a JSON error");
        }
        Ok(head) => {
            let request = Request {
                head,
                body: data[end..].to_vec(),
            };
            let _ = request.query_pairs();
            if let Some(q) = request.query() {
                let _ = percent_decode(q);
            }
            let a = auth();
            let needed = Auth::needed(&request);
            match a.check(&request) {
                Ok(Some(name)) => {
                    let header = request.header("Authorization").expect("a token was sent");
                    assert!(header.contains(VIEWER) || header.contains(ADMIN));
                    assert!(name == "ops" || needed == Some(Role::Viewer));
                }
                Ok(None) => assert!(needed.is_none()),
                Err((failure, role)) => {
                    assert_eq!(Some(role), needed);
                    let r = failure.response(role);
                    assert!(r.status == 401 || r.status == 403);
                }
            }
        }
    }
});
