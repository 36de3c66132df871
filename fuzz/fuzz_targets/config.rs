//! The forwarder's config file parser: no input may panic; every accepted
//! config is usable (a service created with it admits and releases).
#![no_main]

use monconn_forwarder::config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::parse(text) {
        Ok(specs) => {
            for spec in specs {
                let service = monconn::Registry::new().create(&spec.sid, spec.config).unwrap();
                drop(service.admit(([127, 0, 0, 1], 4000).into()));
                assert_eq!(service.connections(), 0);
            }
        }
        Err(e) => assert!(!e.is_empty()),
    }
});
