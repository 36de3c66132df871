//! `-p LISTEN=BACKEND` through the forwarder's real clap parser: no input
//! may panic; an error is a clap error with a message.
#![no_main]

use monconn_forwarder::{addr, cli};

use clap::Parser;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match cli::Args::try_parse_from(["forwarder", "-p", text]) {
        Ok(args) => {
            let m = &args.mappings[0];
            assert_eq!(addr::ListenAddr::parse(&m.listen.to_string()), Ok(m.listen));
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
