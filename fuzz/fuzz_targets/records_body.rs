//! `POST /records` body decoding and validation, as the service does it:
//! never panics, and every accepted body round-trips.
#![no_main]

use libfuzzer_sys::fuzz_target;
use offload_records::api::records::parse_new_record;

fuzz_target!(|body: &[u8]| {
    match parse_new_record(body) {
        Ok(record) => {
            // What was accepted, sent again, is accepted unchanged.
            let again = serde_json::json!({ "name": record.name, "payload": record.payload });
            let bytes = serde_json::to_vec(&again).expect("strings always serialize");
            match parse_new_record(&bytes) {
                Ok(same) => assert_eq!(same, record),
                Err(problem) => panic!("accepted record refused when re-sent: {problem:?}"),
            }
        }
        Err(problem) => {
            // Only client errors: bad input is never a server failure.
            let status = problem.status().as_u16();
            assert!(matches!(status, 400 | 415 | 422), "status {status}");
        }
    }
});
