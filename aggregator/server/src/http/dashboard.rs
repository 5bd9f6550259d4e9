//! The dashboard: a small single-page application (HTML, one CSS file, JavaScript modules)
//! embedded in the binary and served at `/`. It reads only the JSON API under `/api/v1/`, draws
//! its charts as inline SVG itself and loads nothing from elsewhere.
//!
//! | path | answer |
//! |---|---|
//! | `GET /` (and `/index.html`) | the page, `text/html; charset=utf-8` |
//! | `GET /assets/{file}` | the stylesheet and the modules (`text/css`, `text/javascript`) |
//!
//! Every asset has a strong `ETag` (a hash of its bytes, fixed at build time) and
//! `Cache-Control: no-cache` (the browser keeps it and revalidates; `If-None-Match` with the
//! current tag answers 304 with no body). Other methods than `GET`/`HEAD` answer 405.

use serde_json::json;

use super::{Request, Response};

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../assets/index.html"),
    },
    Asset {
        path: "/assets/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../assets/style.css"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/app.js"),
    },
    Asset {
        path: "/assets/charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../assets/charts.js"),
    },
    Asset {
        path: "/favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../assets/favicon.svg"),
    },
];

/// FNV-1a, 64 bits: the assets' entity tags.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `ETag` of an asset's bytes (quoted, strong).
pub fn etag(body: &[u8]) -> String {
    format!("\"{:016x}\"", fnv1a(body))
}

/// Whether `If-None-Match` (a list of tags or `*`) matches `tag`.
fn matches(if_none_match: &str, tag: &str) -> bool {
    if_none_match
        .split(',')
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == "*" || t == tag)
}

/// Total size of the embedded assets, bytes.
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

/// The answer for a path outside `/api/v1/`, or `None` when it is no asset.
pub fn serve(request: &Request) -> Option<Response> {
    let path = match request.path() {
        "/" => "/index.html",
        p => p,
    };
    let asset = ASSETS.iter().find(|a| a.path == path)?;
    if !matches!(request.method(), "GET" | "HEAD") {
        return Some(
            Response::json(
                405,
                &json!({"error": "method not allowed", "method": request.method(), "path": request.path()}),
            )
            .with_header("Allow", "GET, HEAD"),
        );
    }
    let tag = etag(asset.body);
    let fresh = request
        .header("If-None-Match")
        .is_some_and(|v| matches(v, &tag));
    Some(Response {
        status: if fresh { 304 } else { 200 },
        content_type: asset.content_type,
        headers: vec![
            ("Cache-Control", "no-cache".into()),
            ("ETag", tag),
            ("X-Content-Type-Options", "nosniff".into()),
        ],
        body: if fresh {
            Vec::new()
        } else {
            asset.body.to_vec()
        },
        close: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_and_match_lists() {
        let t = etag(b"abc");
        assert_eq!(t, etag(b"abc"));
        assert_ne!(t, etag(b"abd"));
        assert!(matches(&format!("\"x\", {t}"), &t));
        assert!(matches(&format!("W/{t}"), &t));
        assert!(matches("*", &t));
        assert!(!matches("\"other\"", &t));
    }

    #[test]
    fn assets_are_small_and_self_contained() {
        assert!(total_bytes() < 60 * 1024, "{} bytes", total_bytes());
        for a in ASSETS {
            let text = std::str::from_utf8(a.body).unwrap();
            let text = text.replace("http://www.w3.org/2000/svg", "");
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{} refers to another origin",
                a.path
            );
        }
    }
}
