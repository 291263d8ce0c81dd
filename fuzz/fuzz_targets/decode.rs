//! Request decoding: the JSON body of every write endpoint (deserialize + validation into
//! domain values, as the handlers do) and the list queries and cursors. The first byte picks
//! what the rest is decoded as (`shopd::fuzzing::Target`). A panic, or a refusal that is not a
//! client error, is a finding.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shopd::fuzzing::fuzz_one(data);
});
