//! Cursor decoding (RFC 9865 cursors are opaque to clients, so they arrive as anything):
//! never panics, and a cursor that decodes encodes back to one that decodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(pos) = scim::list::CursorPos::decode(text) {
        let again = scim::list::CursorPos::decode(&pos.encode()).expect("re-encoded cursor");
        assert_eq!(pos, again);
    }
});
