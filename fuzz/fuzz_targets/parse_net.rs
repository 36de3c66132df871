//! The forwarder's strict IP and CIDR parser, and its listen and backend
//! address parsers: no input may panic; what parses reads back the same.
#![no_main]

use monconn_forwarder::addr;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match addr::parse_net(text) {
        Ok(net) => assert_eq!(addr::parse_net(&net.to_string()), Ok(net)),
        Err(e) => assert!(!e.is_empty()),
    }
    if let Ok(ip) = addr::parse_ip(text) {
        assert_eq!(addr::parse_ip(&ip.to_string()), Ok(ip));
    }
    if let Ok(listen) = addr::ListenAddr::parse(text) {
        assert_eq!(addr::ListenAddr::parse(&listen.to_string()), Ok(listen));
    }
    if let Ok(backend) = addr::Backend::parse(text) {
        assert_eq!(addr::Backend::parse(&backend.to_string()), Ok(backend));
    }
});
