//! Billing event bodies, generic and Stripe, as the endpoints parse them: never panics. The
//! first line of the input is the `webhook-id`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (id, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (None, data),
    };
    seatkeeper::fuzzing::billing_generic(body, id);
    seatkeeper::fuzzing::billing_stripe(body);
    seatkeeper::fuzzing::json_body(data);
});
