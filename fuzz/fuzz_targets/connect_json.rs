//! `ConnectOptions::merge_json` on arbitrary bytes: never panics, and
//! decoding the same accepted JSON twice over the result changes nothing
//! (Go's `json.Unmarshal` into an existing struct is idempotent).
#![no_main]

use libfuzzer_sys::fuzz_target;
use natsgate::protocol::connect::ConnectOptions;

fuzz_target!(|data: &[u8]| {
    let mut options = ConnectOptions::default();
    if options.merge_json(data).is_ok() {
        let once = options.clone();
        options
            .merge_json(data)
            .expect("accepted once, refused the second time");
        assert_eq!(
            once, options,
            "merging the same JSON again changed the options"
        );
    }
});
