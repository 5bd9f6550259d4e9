//! `qos_oscore` on arbitrary bytes, as a receiver meets them: the first byte picks what the
//! rest is.
//! - 0: a datagram to a server context (`request_kid`, `unprotect_request`): whatever it is,
//!   no panic; one that unprotects is refused as a replay the second time, and never accepted
//!   by a context with other keys.
//! - 1: a response to a client context (`unprotect_response` and its in-place variant): both
//!   agree.
//! - 2: a plaintext CoAP request that the client protects: the server unprotects it exactly
//!   once, and a flipped bit in its ciphertext is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qos_oscore::{request_kid, Context, Error};

const SECRET: [u8; 16] = *b"fuzzing-secret-k";
const SALT: [u8; 8] = *b"saltsalt";

fn pair() -> (Context, Context) {
    let client = Context::derive(&SECRET, &SALT, None, &[0x0e], &[0x5e]).expect("client");
    let server = Context::derive(&SECRET, &SALT, None, &[0x5e], &[0x0e]).expect("server");
    (client, server)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (mut client, mut server) = pair();
    // Unprotecting needs about twice the datagram (the API's documented room).
    let mut out = vec![0u8; 2 * data.len() + 64];
    match mode % 3 {
        0 => {
            let _ = request_kid(rest);
            if server.unprotect_request(rest, &mut out).is_ok() {
                assert_eq!(
                    server.unprotect_request(rest, &mut out).err(),
                    Some(Error::Replay)
                );
                let mut other =
                    Context::derive(b"another-secret!!", &SALT, None, &[0x5e], &[0x0e]).unwrap();
                assert!(other.unprotect_request(rest, &mut out).is_err());
            }
        }
        1 => {
            // A request the client really sent, so the response is bound to something.
            let plain = [0x40, 0x01, 0x12, 0x34, 0xb1, b'u'];
            let mut sent = [0u8; 256];
            let Ok((_, info)) = client.protect_request(&plain, &mut sent) else {
                panic!("a plain GET protects");
            };
            let copied = client.unprotect_response(rest, &info, &mut out).map(|n| out[..n].to_vec());
            let mut in_place = rest.to_vec();
            let mut out2 = vec![0u8; 2 * data.len() + 64];
            let inplace = client
                .unprotect_response_in_place(&mut in_place, &info, &mut out2)
                .map(|n| out2[..n].to_vec());
            match (&copied, &inplace) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                _ => panic!("copying and in-place unprotect disagree: {copied:?} {inplace:?}"),
            }
        }
        _ => {
            let mut protected = vec![0u8; 2 * rest.len() + 64];
            let Ok((n, _)) = client.protect_request(rest, &mut protected) else {
                return;
            };
            let protected = &protected[..n];
            // The last 9 bytes are always ciphertext (the encrypted code and the 8-byte tag);
            // the CoAP header, token and message id are not protected by OSCORE.
            for i in 0..protected.len().min(9) {
                let mut bad = protected.to_vec();
                bad[protected.len() - 1 - i] ^= 0x01;
                let mut fresh = pair().1;
                assert!(
                    fresh.unprotect_request(&bad, &mut out).is_err(),
                    "a flipped bit at {i} from the end was accepted"
                );
            }
            server
                .unprotect_request(protected, &mut out)
                .expect("what the client protected unprotects");
            assert_eq!(
                server.unprotect_request(protected, &mut out).err(),
                Some(Error::Replay)
            );
        }
    }
});
