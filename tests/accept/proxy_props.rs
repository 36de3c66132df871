//! Property tests of the PROXY header parser: any bytes, no panic, and an
//! error that names what is wrong; a valid header followed by any payload
//! parses to its length, whatever the payload.

use monconn::layers::proxy::{HeaderError, ProxyHeader};
use proptest::prelude::*;

fn v2_signature() -> Vec<u8> {
    b"\r\n\r\n\0\r\nQUIT\n".to_vec()
}

/// Bytes that look like a header often enough to reach the parser's depths:
/// a v1 or v2 start, then anything.
fn headerish() -> impl Strategy<Value = Vec<u8>> {
    let start = prop_oneof![
        Just(b"PROXY ".to_vec()),
        Just(b"PROXY TCP4 ".to_vec()),
        Just(b"PROXY TCP6 ".to_vec()),
        Just(v2_signature()),
        Just([v2_signature(), vec![0x21, 0x11]].concat()),
        Just(Vec::new()),
    ];
    (start, prop::collection::vec(any::<u8>(), 0..200)).prop_map(|(s, rest)| [s, rest].concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn any_bytes_parse_or_name_what_is_wrong(bytes in headerish()) {
        match ProxyHeader::parse(&bytes) {
            Ok((header, len)) => {
                prop_assert!(len <= bytes.len());
                prop_assert!(header.version() == 1 || header.version() == 2);
                // The TLVs iterate without panicking and cover their bytes.
                let covered: usize = header.tlvs().map(|(_, v)| 3 + v.len()).sum();
                prop_assert_eq!(covered, header.tlv_bytes().len());
            }
            Err(e) => {
                let text = e.to_string();
                let named = match &e {
                    HeaderError::NotProxy { .. } => text.starts_with("not a PROXY header"),
                    HeaderError::Malformed { .. } => text.starts_with("malformed PROXY v"),
                    HeaderError::Oversized { .. } => text.starts_with("PROXY header too long"),
                    HeaderError::Truncated { .. } => {
                        text.contains("PROXY header truncated") || text.contains("closed before")
                    }
                    other => panic!("parse cannot fail with {other:?}"),
                };
                prop_assert!(named, "{:?}: {}", e, text);
                // Something past the kind: the parser's own words, a byte, a length.
                prop_assert!(text.len() > 24, "{}", text);
            }
        }
    }

    #[test]
    fn a_header_then_any_payload_parses_to_its_length(
        v4 in any::<bool>(),
        ports in any::<(u16, u16)>(),
        v2 in any::<bool>(),
        payload in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (source, destination) = if v4 {
            (format!("192.0.2.1:{}", ports.0), format!("10.0.0.1:{}", ports.1))
        } else {
            (format!("[2001:db8::1]:{}", ports.0), format!("[2001:db8::2]:{}", ports.1))
        };
        let sent = ProxyHeader::proxied(source.parse().unwrap(), destination.parse().unwrap());
        let header = if v2 { sent.to_v2() } else { sent.to_v1() };
        let bytes = [header.clone(), payload].concat();
        let (got, len) = ProxyHeader::parse(&bytes).unwrap();
        prop_assert_eq!(len, header.len());
        prop_assert_eq!(got.source(), sent.source());
        prop_assert_eq!(got.destination(), sent.destination());
        // Every cut within the header is truncated, never wrong.
        for cut in 0..header.len() {
            let truncated = matches!(ProxyHeader::parse(&bytes[..cut]), Err(HeaderError::Truncated { .. }));
            prop_assert!(truncated, "cut at {}", cut);
        }
    }
}
