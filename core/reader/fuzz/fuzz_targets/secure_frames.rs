//! Coverage-guided fuzzing of the secure link: arbitrary bytes as handshake
//! messages to both sides, and arbitrary frames (mixed with genuine sealed
//! messages, some of them altered) into a phone channel that completed a
//! handshake. Nothing may panic, and every message delivered must be one
//! the reader really sealed.

#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use pos_rules::reader_trust::{ReaderAuthority, ReaderIdentity};
use pos_reader::frame::{encode, Kind};
use pos_reader::link::{Channel, Inbound, MemoryLink};
use pos_reader::secure::{LinkTrust, PhoneHandshake, ReaderHandshake, Session};

struct Fixture {
    identity: ReaderIdentity,
    trust: LinkTrust,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let authority = ReaderAuthority::from_seed(&[1; 32]).expect("authority");
        let identity =
            ReaderIdentity::provision(&[2; 32], &authority, "FUZZ-1", "Fuzz").expect("identity");
        Fixture {
            identity,
            trust: LinkTrust {
                authorities: vec![authority.public_key()],
                remembered: vec![],
                online: true,
            },
        }
    })
}

/// The phone's and the reader's sessions of one genuine handshake.
fn sessions(fx: &Fixture) -> Option<(Session, Session)> {
    let (phone, m1) = PhoneHandshake::start().ok()?;
    let (reader, m2) = ReaderHandshake::respond(&fx.identity, &m1).ok()?;
    let done = phone.finish(&m2, &fx.trust).ok()?;
    Some((done.session, reader.finish(&done.m3).ok()?))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fx = fixture();
    if mode % 2 == 0 {
        // The bytes as M1 to a reader, as M2 to a phone, as M3 to a reader
        // that answered a genuine M1.
        let _ = ReaderHandshake::respond(&fx.identity, rest);
        if let Ok((phone, m1)) = PhoneHandshake::start() {
            if let Ok((reader, _)) = ReaderHandshake::respond(&fx.identity, &m1) {
                let _ = reader.finish(rest);
            }
            let _ = phone.finish(rest, &fx.trust);
        }
        return;
    }
    let Some((phone_session, mut reader_session)) = sessions(fx) else {
        return;
    };
    let mtu = 23 + usize::from(mode / 2);
    let (end, _peer) = MemoryLink::pair(mtu);
    let phone = Channel::new(Arc::new(end));
    phone.install_session(phone_session);
    let mut genuine: Vec<Vec<u8>> = Vec::new();
    let mut next_id = 1u16;
    // Length-prefixed chunks. A chunk starting 0xFF asks the reader for a
    // genuine sealed message (the rest of the chunk after its second byte),
    // altered at the position the second byte gives unless it is 0; any
    // other chunk is a frame as it is.
    let mut rest = rest;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (chunk, next) = tail.split_at(n);
        rest = next;
        let frames = match chunk {
            [0xFF, alter, plain @ ..] => {
                let Ok(body) = reader_session.seal(next_id, Kind::Sealed.byte(), plain) else {
                    return;
                };
                let Ok(mut frames) = encode(next_id, Kind::Sealed, &body, mtu) else {
                    continue;
                };
                next_id = next_id.wrapping_add(1).max(1);
                if *alter == 0 {
                    genuine.push(plain.to_vec());
                } else {
                    let total: usize = frames.iter().map(Vec::len).sum();
                    let mut at = usize::from(*alter) * 7 % total;
                    for f in &mut frames {
                        if at < f.len() {
                            f[at] ^= *alter;
                            break;
                        }
                        at -= f.len();
                    }
                    // An alteration may leave the message intact (a byte
                    // of a header field that is never read).
                    genuine.push(plain.to_vec());
                }
                frames
            }
            frame => vec![frame.to_vec()],
        };
        for f in &frames {
            if let Some(Ok(Inbound::Message(m))) = phone.push_frame(f) {
                assert!(genuine.contains(&m), "a message nobody sealed was delivered");
            }
        }
    }
});
