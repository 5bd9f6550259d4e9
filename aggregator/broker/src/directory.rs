//! The registration interface of the CoRE Resource Directory (RFC 9176) over a [`Registry`],
//! shared by the broker and the super-manager (whose CoAP socket is a directory too, for edges
//! that send straight to it):
//!
//! - `POST /rd?ep=..&d=..&lt=..&id=..[&fw=..][&cfg=..]`: 2.01 Created with Location-Path
//!   `rd/<n>`; 4.00 with the reason for bad parameters;
//! - `POST /rd/<n>` (refresh, optional `lt=`): 2.04; `DELETE /rd/<n>`: 2.02; 4.04 when the
//!   registration is unknown or expired (the edge registers again); 4.05 for other methods.

use qos_coap::{option, Code, Message, MessageWriter, WriteError};
use qos_wire::registration::{Registration, DIRECTORY_PATH, MIN_LIFETIME};

use crate::broker::RejectReason;
use crate::registry::Registry;

/// The answer to a directory request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryAnswer {
    /// The response code.
    pub code: Code,
    /// The registration number for the Location-Path `rd/<n>` of a 2.01.
    pub location: Option<u32>,
    /// Diagnostic payload of an error.
    pub body: Vec<u8>,
    /// Why it was refused, for the counters.
    pub reject: Option<RejectReason>,
    /// Whether a registration was created or renewed.
    pub registered: bool,
}

impl DirectoryAnswer {
    fn refuse(code: Code, reason: RejectReason, text: &str) -> Self {
        DirectoryAnswer {
            code,
            location: None,
            body: text.as_bytes().to_vec(),
            reject: Some(reason),
            registered: false,
        }
    }

    fn ok(code: Code, location: Option<u32>, registered: bool) -> Self {
        DirectoryAnswer {
            code,
            location,
            body: Vec::new(),
            reject: None,
            registered,
        }
    }

    /// Writes the Location-Path options (of a 2.01); call before options numbered above 8.
    pub fn write_location(&self, w: &mut MessageWriter<'_>) -> Result<(), WriteError> {
        if let Some(n) = self.location {
            w.option(option::LOCATION_PATH, DIRECTORY_PATH.as_bytes())?;
            w.option(option::LOCATION_PATH, n.to_string().as_bytes())?;
        }
        Ok(())
    }
}

/// The edge id (`id=` query) of a registration, `POST /rd`; `None` for any other request or
/// without one (the registration itself refuses it then).
pub fn registering_edge(m: &Message<'_>) -> Option<u32> {
    let path: Vec<&[u8]> = m.uri_path().collect();
    if m.code() != Code::POST || path.as_slice() != [DIRECTORY_PATH.as_bytes()] {
        return None;
    }
    m.uri_queries().find_map(|q| {
        core::str::from_utf8(q.strip_prefix(b"id=")?)
            .ok()?
            .parse()
            .ok()
    })
}

/// Serves `m` from `from` at `now` when its path is `/rd` or `/rd/<n>`; `None` for any other
/// path.
pub fn serve<A: Copy>(
    registry: &mut Registry<A>,
    now: u64,
    from: A,
    m: &Message<'_>,
) -> Option<DirectoryAnswer> {
    let path: Vec<&[u8]> = m.uri_path().collect();
    match path.as_slice() {
        [p] if *p == DIRECTORY_PATH.as_bytes() => Some(register(registry, now, from, m)),
        [p, n] if *p == DIRECTORY_PATH.as_bytes() => Some(update(registry, now, from, m, n)),
        _ => None,
    }
}

fn register<A: Copy>(
    registry: &mut Registry<A>,
    now: u64,
    from: A,
    m: &Message<'_>,
) -> DirectoryAnswer {
    if m.code() != Code::POST {
        return DirectoryAnswer::refuse(
            Code::METHOD_NOT_ALLOWED,
            RejectReason::MethodNotAllowed,
            "POST only",
        );
    }
    let queries: Option<Vec<&str>> = m
        .uri_queries()
        .map(|q| core::str::from_utf8(q).ok())
        .collect();
    let Some(queries) = queries else {
        return DirectoryAnswer::refuse(
            Code::BAD_REQUEST,
            RejectReason::BadRegistration,
            "Uri-Query is not UTF-8",
        );
    };
    match Registration::from_query(queries.iter().copied()) {
        Ok(reg) => {
            let n = registry.register(now, from, &reg);
            // `cfg=<etag>`: the central configuration in force on the edge (decimal).
            let cfg = queries
                .iter()
                .find_map(|q| q.strip_prefix("cfg="))
                .and_then(|v| v.parse::<u32>().ok());
            registry.set_config_etag(reg.id, cfg);
            DirectoryAnswer::ok(Code::CREATED, Some(n), true)
        }
        Err(e) => DirectoryAnswer::refuse(
            Code::BAD_REQUEST,
            RejectReason::BadRegistration,
            &e.to_string(),
        ),
    }
}

fn update<A: Copy>(
    registry: &mut Registry<A>,
    now: u64,
    from: A,
    m: &Message<'_>,
    n: &[u8],
) -> DirectoryAnswer {
    let not_found = || {
        DirectoryAnswer::refuse(
            Code::NOT_FOUND,
            RejectReason::NotFound,
            "no such registration",
        )
    };
    let Some(location) = core::str::from_utf8(n)
        .ok()
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return not_found();
    };
    let found = if m.code() == Code::POST {
        let mut lt = None;
        for q in m.uri_queries() {
            if let Some(v) = q.strip_prefix(b"lt=") {
                match core::str::from_utf8(v).ok().and_then(|v| v.parse().ok()) {
                    Some(v) if v >= MIN_LIFETIME => lt = Some(v),
                    _ => {
                        return DirectoryAnswer::refuse(
                            Code::BAD_REQUEST,
                            RejectReason::BadRegistration,
                            "invalid registration parameter `lt`",
                        )
                    }
                }
            }
        }
        registry.refresh(now, from, location, lt)
    } else if m.code() == Code::DELETE {
        registry.remove(now, location)
    } else {
        return DirectoryAnswer::refuse(
            Code::METHOD_NOT_ALLOWED,
            RejectReason::MethodNotAllowed,
            "POST or DELETE only",
        );
    };
    if !found {
        return not_found();
    }
    if m.code() == Code::POST {
        DirectoryAnswer::ok(Code::CHANGED, None, true)
    } else {
        DirectoryAnswer::ok(Code::DELETED, None, false)
    }
}
