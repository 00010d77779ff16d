//! Coverage-guided fuzzing of the reader profile's frame decoder and
//! reassembler: bytes from a reader must give a typed error, never a panic,
//! and whatever reassembles must have passed its CRC.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pos_reader::frame::{encode, Kind, Pushed, Reassembler};

fuzz_target!(|data: &[u8]| {
    // The input is a sequence of frames, each prefixed by its length byte.
    let mut r = Reassembler::new();
    let mut rest = data;
    let mut now = 0u64;
    while let Some((&len, tail)) = rest.split_first() {
        let n = usize::from(len).min(tail.len());
        let (frame, next) = tail.split_at(n);
        if let Ok(Pushed::Complete { bytes, .. }) = r.push(frame, now) {
            assert!(bytes.len() <= pos_reader::frame::MAX_MESSAGE);
        }
        now += 700;
        r.expire(now);
        rest = next;
    }
    // And whatever the bytes, encoding them reassembles to the same bytes.
    let mtu = 23 + usize::from(data.first().copied().unwrap_or(0));
    if let Ok(frames) = encode(1, Kind::Message, data, mtu) {
        let mut r = Reassembler::new();
        let mut out = None;
        for f in frames.iter().rev() {
            if let Ok(Pushed::Complete { bytes, .. }) = r.push(f, 0) {
                out = Some(bytes);
            }
        }
        assert_eq!(out.as_deref(), Some(data));
    }
});
