//! Signature headers (Standard Webhooks and Stripe-Signature): never panic, and random bytes
//! never verify. Input lines: id, timestamp, signature; the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\n');
    let id = parts.next().unwrap_or_default();
    let ts = parts.next().unwrap_or_default();
    let sig = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default().as_bytes();
    assert!(!seatkeeper::fuzzing::standard_headers(id, ts, sig, body));
    assert!(!seatkeeper::fuzzing::stripe_header(sig, body));
});
