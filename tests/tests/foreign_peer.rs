//! A CoAP peer not written here (DESIGN.md §6 tier 4): the Python library aiocoap discovers a
//! real `qos-aggregator broker` (`GET /.well-known/core`), registers at its directory
//! (`POST /rd`, RFC 9176), and posts a batch of two summaries to `/u` (the CBOR made by our
//! sample generator, the ack decoded by the independent `cbor2`); it gets 2.04 with the
//! cumulative ack, and `serve` behind the broker stores both summaries. Skipped, with the
//! reason printed, only when aiocoap or cbor2 cannot be imported.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use qos_e2e::{free_udp_port, fresh_dir, start_broker, wait_for, Serve};
use qos_wire::ids::{EdgeId, Seq};

const WAIT: Duration = Duration::from_secs(90);

const PEER: &str = r#"
import asyncio, json, sys
import aiocoap, cbor2

async def main():
    host, payload_hex = sys.argv[1], sys.argv[2]
    out = {}
    ctx = await aiocoap.Context.create_client_context()
    try:
        async def ask(msg):
            return await asyncio.wait_for(ctx.request(msg).response, 60)
        r = await ask(aiocoap.Message(code=aiocoap.GET, uri=f"coap://{host}/.well-known/core"))
        out["discover"] = [str(r.code), r.payload.decode()]
        reg = aiocoap.Message(code=aiocoap.POST, uri=f"coap://{host}/rd",
                              payload=b'</c>;rt="qos.config"')
        reg.opt.content_format = 40
        reg.opt.uri_query = ["ep=foreign-91", "d=lab", "lt=120", "id=91"]
        r = await ask(reg)
        out["register"] = [str(r.code), "/".join(r.opt.location_path)]
        up = aiocoap.Message(code=aiocoap.POST, uri=f"coap://{host}/u",
                             payload=bytes.fromhex(payload_hex))
        up.opt.content_format = 60
        r = await ask(up)
        out["batch"] = [str(r.code), cbor2.loads(r.payload)]
    finally:
        await ctx.shutdown()
    print(json.dumps(out))

asyncio.run(main())
"#;

fn base() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("foreign")
}

#[test]
fn aiocoap_discovers_registers_and_posts_a_batch_through_the_broker() {
    let usable = Command::new("python3")
        .args(["-c", "import aiocoap, cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        println!("SKIPPED: python3 cannot import aiocoap and cbor2 (.ci/requirements.txt)");
        return;
    }
    let dir = fresh_dir(&base(), "aiocoap");
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, serve.coap, "report_interval_ms = 500");

    let first = Seq::first_of_epoch(1);
    let summaries = [
        qos_wire::samples::http_summary::<128>(11, 60, 0),
        qos_wire::samples::http_summary::<128>(12, 60, 2),
    ];
    let batch = qos_wire::samples::batch(EdgeId(91), first, 0, &summaries).expect("a batch");
    let hex: String = batch.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .args(["-c", PEER, &listen.to_string(), &hex])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiocoap peer failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        broker.log_tail()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from the peer");
    println!("aiocoap: {v}");
    assert!(
        v["discover"][0].as_str().unwrap().starts_with("2.05"),
        "{v}"
    );
    let links = v["discover"][1].as_str().unwrap();
    assert!(links.contains("</rd>") && links.contains("</u>"), "{v}");
    assert!(
        v["register"][0].as_str().unwrap().starts_with("2.01"),
        "{v}"
    );
    assert!(v["register"][1].as_str().unwrap().starts_with("rd/"), "{v}");
    assert!(v["batch"][0].as_str().unwrap().starts_with("2.04"), "{v}");
    // ack = [1, last seq]
    assert_eq!(v["batch"][1][0], 1, "{v}");
    assert_eq!(v["batch"][1][1], first.0 + 1, "{v}");

    let n = wait_for("serve to store both summaries", WAIT, || {
        match serve.received(91) {
            Ok(n) if n >= 2 => Ok(n),
            Ok(n) => Err(format!("{n} stored")),
            Err(e) => Err(e),
        }
    });
    assert_eq!(n, 2);
    // The registration made by the foreign peer reaches serve with the broker's report.
    let row = wait_for("the peer's registration in the edge's row", WAIT, || {
        let row = serve.edge_row(91)?;
        if row["name"] == "foreign-91" && row["registered"] == true {
            Ok(row)
        } else {
            Err(format!("{row}"))
        }
    });
    assert_eq!(row["region"], "lab", "{row}");
    println!("stored: {row}");
    broker.stop(WAIT);
    serve.proc.stop(WAIT);
}
