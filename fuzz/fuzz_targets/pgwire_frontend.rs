//! Feeds arbitrary bytes, as what a client sends on a PostgreSQL connection, to the server
//! side's frontend message decoder of the patched `vendor/pgwire` (`PgWireMessageServerCodec`,
//! the codec `process_socket` frames the socket with; `vendor/pgwire/STREAMCELL.md`).
//!
//! Input: the first byte picks where the connection starts (bits 0-1: 0 before the SSL
//! request, 1 before the startup message, 2 or 3 after start-up; bit 2: protocol 3.0 instead
//! of 3.2); the rest is the byte stream from the client. Messages are decoded one after the
//! other while the connection state advances as the server's would (SSL negotiation, then the
//! startup message, whose version is negotiated, then regular messages), up to 64 messages,
//! until the decoder needs more bytes or fails. Every password-family message (`p`) is also
//! coerced the three ways the authentication handlers do: `into_password` (cleartext, MD5),
//! `into_sasl_initial_response` and `into_sasl_response` (SCRAM, which StreamCell's door uses,
//! before the client is authenticated).
//!
//! Asserts: nothing panics (the patch's promise for Parse, Bind, Describe, Close and Execute,
//! and the same for every other message); a decoded message consumed exactly the bytes its
//! length announced (no decoder reads into the next message, the other half of the patch),
//! except the SSL and GSS requests, which pgwire always reads as their 8 bytes; a decoder
//! that needs more bytes consumed none.
#![no_main]

use std::net::{Ipv4Addr, SocketAddr};

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use pgwire::messages::startup::PasswordMessageFamily;
use pgwire::messages::{PgWireFrontendMessage, ProtocolVersion, SslNegotiationMetaMessage};
use pgwire::tokio::server::PgWireMessageServerCodec;
use streamcell_fuzz::skip_known;
use tokio_util::codec::Decoder;

const MAX_MESSAGES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let Some((&opts, stream)) = data.split_first() else {
        return;
    };
    let mut client = DefaultClient::<()>::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 5432)), false);
    client.set_state(match opts & 3 {
        0 => PgWireConnectionState::AwaitingSslRequest,
        1 => PgWireConnectionState::AwaitingStartup,
        _ => PgWireConnectionState::ReadyForQuery,
    });
    if opts & 4 != 0 {
        client.set_protocol_version(ProtocolVersion::PROTOCOL3_0);
    }
    let mut codec = PgWireMessageServerCodec::new(client);
    let mut buf = BytesMut::from(stream);
    for _ in 0..MAX_MESSAGES {
        let before = buf.len();
        let state = codec.client_info.state();
        // What the frame says its length is: after the type byte once started up.
        let typed = !matches!(
            state,
            PgWireConnectionState::AwaitingSslRequest | PgWireConnectionState::AwaitingStartup
        );
        let off = usize::from(typed);
        let announced = buf
            .get(off..off + 4)
            .map(|l| i32::from_be_bytes(l.try_into().expect("4 bytes")) as u32 as usize + off);
        let msg = match codec.decode(&mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => {
                assert_eq!(
                    buf.len(),
                    before,
                    "a decoder that needs more bytes consumed some"
                );
                return;
            }
            Err(_) => return,
        };
        let consumed = before - buf.len();
        let expected = match &msg {
            PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::None) => Some(0),
            // pgwire reads these as 8 bytes whatever their length field says (docs/fuzzing.md,
            // observation O1): the rest of an overlong one is read as the next message.
            PgWireFrontendMessage::SslNegotiation(_) => Some(8),
            _ => announced,
        };
        assert_eq!(
            Some(consumed),
            expected,
            "{msg:?} consumed {consumed} bytes, its frame announced {announced:?}"
        );
        let info = &mut codec.client_info;
        match msg {
            PgWireFrontendMessage::SslNegotiation(_) => {
                info.set_state(PgWireConnectionState::AwaitingStartup)
            }
            PgWireFrontendMessage::Startup(s) => {
                // As the startup handlers negotiate: a version the server knows, else its newest.
                let v = ProtocolVersion::from_version_number(
                    s.protocol_number_major,
                    s.protocol_number_minor,
                )
                .unwrap_or(ProtocolVersion::PROTOCOL3_2);
                info.set_protocol_version(v);
                info.set_state(PgWireConnectionState::AuthenticationInProgress);
            }
            PgWireFrontendMessage::CancelRequest(_) => return,
            PgWireFrontendMessage::PasswordMessageFamily(PasswordMessageFamily::Raw(body)) => {
                let _ = PasswordMessageFamily::Raw(body.clone()).into_password();
                // K2 (docs/fuzzing.md): a short or overlong SASLInitialResponse panics.
                if !skip_known() || well_formed_sasl_initial(&body) {
                    let _ = PasswordMessageFamily::Raw(body.clone()).into_sasl_initial_response();
                }
                let _ = PasswordMessageFamily::Raw(body).into_sasl_response();
            }
            PgWireFrontendMessage::Terminate(_) => return,
            _ => {}
        }
    }
});

/// Whether `body` is a SASLInitialResponse as the protocol defines it: a mechanism name ending
/// in NUL, then an i32 length, then that many bytes (or -1 and nothing).
fn well_formed_sasl_initial(body: &[u8]) -> bool {
    let Some(nul) = body.iter().position(|&b| b == 0) else {
        return false;
    };
    let rest = &body[nul + 1..];
    let Some(len) = rest.get(..4) else {
        return false;
    };
    let len = i32::from_be_bytes(len.try_into().expect("4 bytes"));
    len == -1 && rest.len() == 4 || usize::try_from(len).is_ok_and(|l| rest.len() == 4 + l)
}
