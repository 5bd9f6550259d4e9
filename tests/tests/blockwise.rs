//! Block-wise transfer (RFC 7959) with CoAP peers not written here, through a real
//! `qos-aggregator broker` to a real `serve`:
//!
//! - aiocoap posts a batch of 60 summaries (over 2 KiB, so it goes in Block1 blocks on its
//!   own) and fetches `/.well-known/core` asking for 16-byte Block2 blocks;
//! - libcoap's `coap-client-notls -b` does the same with its own block sizes.
//!
//! Both also post such a batch straight to `serve`'s own CoAP port (it reassembles Block1
//! itself, `aggregator/server/src/coap_block.rs`); the answer to the last block is the
//! cumulative ack of the whole batch.
//!
//! Every record of each batch is stored once (none missing, no duplicate), and the fetched
//! link list is the whole one. Skipped, with the reason printed, only when the peer's tool is
//! missing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use qos_e2e::{free_udp_port, fresh_dir, start_broker, wait_for, Serve};
use qos_wire::ids::{EdgeId, Seq};

const WAIT: Duration = Duration::from_secs(90);
/// Summaries in each batch: well over 1 KiB encoded.
const RECORDS: usize = 60;
/// The broker's `/.well-known/core` (`qos_broker::WELL_KNOWN_CORE`).
const LINKS: &str =
    "</rd>;rt=\"core.rd\",</u>;rt=\"qos.uplink\";ct=60,</c>;rt=\"qos.config\";ct=60";

const AIOCOAP: &str = r#"
import asyncio, json, sys
import aiocoap, cbor2
from aiocoap.optiontypes import BlockOption

async def main():
    host, payload_hex = sys.argv[1], sys.argv[2]
    out = {}
    ctx = await aiocoap.Context.create_client_context()
    try:
        async def ask(msg):
            return await asyncio.wait_for(ctx.request(msg).response, 60)
        if len(sys.argv) < 4:
            get = aiocoap.Message(code=aiocoap.GET, uri=f"coap://{host}/.well-known/core")
            get.opt.block2 = BlockOption.BlockwiseTuple(0, False, 0)
            r = await ask(get)
            out["links"] = [str(r.code), r.payload.decode()]
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
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blockwise")
}

/// A batch of [`RECORDS`] summaries of edge `edge`, numbered from the start of epoch 1.
fn big_batch(edge: u32) -> Vec<u8> {
    let summaries: Vec<_> = (0..RECORDS)
        .map(|i| qos_wire::samples::http_summary::<128>(i as u64, 60, i as u32 % 3))
        .collect();
    let batch = qos_wire::samples::batch(EdgeId(edge), Seq::first_of_epoch(1), 0, &summaries)
        .expect("a batch");
    assert!(batch.len() > 2048, "{} bytes", batch.len());
    batch
}

/// Waits until serve stored every record of edge `edge`, then checks none twice.
fn stored_once(serve: &Serve, edge: u32) {
    let row = wait_for("serve to store every record", WAIT, || {
        let row = serve.edge_row(edge)?;
        match row["received"].as_u64() {
            Some(n) if n >= RECORDS as u64 => Ok(row),
            _ => Err(format!("{row}")),
        }
    });
    println!("edge {edge}: {row}");
    assert_eq!(row["received"], RECORDS as u64, "{row}");
    assert_eq!(row["duplicates"], 0, "{row}");
    assert_eq!(row["gaps"], 0, "{row}");
    assert_eq!(
        row["last_seq"],
        Seq::first_of_epoch(1).0 + RECORDS as u64 - 1,
        "{row}"
    );
}

#[test]
fn aiocoap_posts_a_large_batch_and_fetches_links_block_wise_through_the_broker() {
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
    let broker = start_broker(&dir, 0, listen, serve.coap, "");
    let batch = big_batch(93);
    let hex: String = batch.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .args(["-c", AIOCOAP, &listen.to_string(), &hex])
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
    assert!(v["links"][0].as_str().unwrap().starts_with("2.05"), "{v}");
    assert_eq!(v["links"][1], LINKS, "all 16-byte blocks, in order");
    assert!(v["batch"][0].as_str().unwrap().starts_with("2.04"), "{v}");
    assert_eq!(
        v["batch"][1][1],
        Seq::first_of_epoch(1).0 + RECORDS as u64 - 1,
        "cumulative ack of the whole batch: {v}"
    );
    stored_once(&serve, 93);
    broker.stop(WAIT);
    serve.proc.stop(WAIT);
}

#[test]
fn aiocoap_posts_a_large_batch_block_wise_straight_to_serve() {
    let usable = Command::new("python3")
        .args(["-c", "import aiocoap, cbor2"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        println!("SKIPPED: python3 cannot import aiocoap and cbor2 (.ci/requirements.txt)");
        return;
    }
    let dir = fresh_dir(&base(), "aiocoap-serve");
    let serve = Serve::start(&dir);
    let batch = big_batch(95);
    let hex: String = batch.iter().map(|b| format!("{b:02x}")).collect();
    let out = Command::new("python3")
        .args(["-c", AIOCOAP, &serve.coap.to_string(), &hex, "post-only"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "aiocoap peer failed: {stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serve.proc.log_tail()
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON from the peer");
    println!("aiocoap: {v}");
    assert!(v["batch"][0].as_str().unwrap().starts_with("2.04"), "{v}");
    assert_eq!(
        v["batch"][1][1],
        Seq::first_of_epoch(1).0 + RECORDS as u64 - 1,
        "cumulative ack of the whole batch: {v}"
    );
    stored_once(&serve, 95);
    serve.proc.stop(WAIT);
}

#[test]
fn libcoap_client_posts_a_large_batch_block_wise_straight_to_serve() {
    let usable = Command::new("coap-client-notls").arg("-h").output().is_ok();
    if !usable {
        println!("SKIPPED: coap-client-notls not installed (Debian libcoap3-bin)");
        return;
    }
    let dir = fresh_dir(&base(), "libcoap-serve");
    let serve = Serve::start(&dir);
    let file = dir.join("batch.cbor");
    std::fs::write(&file, big_batch(96)).expect("write the batch");
    let post = Command::new("coap-client-notls")
        .args(["-B", "30", "-m", "post", "-t", "60", "-b", "512", "-f"])
        .arg(&file)
        .arg(format!("coap://{}/u", serve.coap))
        .output()
        .expect("run coap-client-notls");
    assert!(
        post.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&post.stdout),
        String::from_utf8_lossy(&post.stderr),
        serve.proc.log_tail()
    );
    stored_once(&serve, 96);
    serve.proc.stop(WAIT);
}

#[test]
fn libcoap_client_posts_a_large_batch_and_fetches_links_block_wise_through_the_broker() {
    let usable = Command::new("coap-client-notls").arg("-h").output().is_ok();
    if !usable {
        println!("SKIPPED: coap-client-notls not installed (Debian libcoap3-bin)");
        return;
    }
    let dir = fresh_dir(&base(), "libcoap");
    let serve = Serve::start(&dir);
    let listen = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let broker = start_broker(&dir, 0, listen, serve.coap, "");

    let get = Command::new("coap-client-notls")
        .args(["-B", "30", "-b", "16"])
        .arg(format!("coap://{listen}/.well-known/core"))
        .output()
        .expect("run coap-client-notls");
    let links = String::from_utf8_lossy(&get.stdout);
    assert!(get.status.success(), "{links}\n{}", broker.log_tail());
    assert_eq!(links.trim_end(), LINKS);

    let file = dir.join("batch.cbor");
    std::fs::write(&file, big_batch(94)).expect("write the batch");
    let post = Command::new("coap-client-notls")
        .args(["-B", "30", "-m", "post", "-t", "60", "-b", "256", "-f"])
        .arg(&file)
        .arg(format!("coap://{listen}/u"))
        .output()
        .expect("run coap-client-notls");
    assert!(
        post.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&post.stdout),
        String::from_utf8_lossy(&post.stderr),
        broker.log_tail()
    );
    stored_once(&serve, 94);
    broker.stop(WAIT);
    serve.proc.stop(WAIT);
}
