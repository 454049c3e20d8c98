//! Feeds arbitrary bytes to the server side of SCRAM-SHA-256 in the patched `vendor/pgwire`
//! (`api::auth::sasl::scram::ScramServerAuth`), the authentication StreamCell's PostgreSQL door
//! runs on every password log-in: the client-first message (the data of the
//! SASLInitialResponse) and the client-final message (the data of the SASLResponse), both
//! read before the client is authenticated.
//!
//! Input: bit 0 of the first byte picks the stored secret (a salted password, or the
//! verifier derived from it, the two `ScramSecret`s), the rest is the client-first message, a
//! NUL byte, and the client-final message. The server nonce is random, so the `r=` attribute
//! of the client-final message is replaced by the nonce of the server-first message (an
//! honest client echoes it); without it every final message would stop at the nonce check.
//!
//! Asserts: nothing panics; a client-final message whose proof is wrong is refused (only the
//! right password proves; the fuzzer cannot know it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramSecret, ScramServerAuth};

fuzz_target!(|data: &[u8]| {
    let Some((&opts, rest)) = data.split_first() else {
        return;
    };
    let (first, last) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let salt = b"streamcell-fuzz-salt".to_vec();
    let salted = gen_salted_password("a password the fuzzer does not know", &salt, 16);
    let secret = if opts & 1 == 0 {
        ScramSecret::SaltedPassword {
            salt: salt.clone(),
            salted_password: salted,
        }
    } else {
        ScramSecret::verifier_from_salted_password(salt, salted, 16)
    };
    let mut server = ScramServerAuth::new();
    server.set_iterations(16);
    let Ok((server_first, waiting)) = server.on_client_first_message_with_secret(first, secret)
    else {
        return;
    };
    let nonce = server_first
        .split(',')
        .find_map(|p| p.strip_prefix("r="))
        .expect("the server-first message has a nonce")
        .to_string();
    let Some(last) = last else { return };
    let text = String::from_utf8_lossy(last);
    let echoed: Vec<String> = text
        .split(',')
        .map(|p| {
            if p.starts_with("r=") {
                format!("r={nonce}")
            } else {
                p.to_string()
            }
        })
        .collect();
    let echoed = echoed.join(",");
    let _ = waiting.on_client_final_message(last);
    assert!(
        waiting.on_client_final_message(echoed.as_bytes()).is_err(),
        "a client-final message without the password was accepted: {echoed:?}"
    );
});
