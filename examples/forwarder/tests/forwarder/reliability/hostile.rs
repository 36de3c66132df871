//! Hostile input, property-tested (proptest; `MONCONN_FUZZ_CASES` cases per
//! parser, default 10,000): the forwarder's `-p` mapping parser, its config
//! parser, its IP/CIDR parser, and its admin API's path, method, header and
//! body handling. None may panic; every bad input gets an error that names
//! the bad value. The parsers are the example's own modules, compiled in
//! here; the admin API is the example's own server, run in-process.
//!
//! The end-to-end checks against the real process (admin exposure, tokens,
//! hex dumps, blacklist bypass spellings) are in `reliability_security.rs`.
// The example (and so its admin module) is built with the `metrics` feature.

use monconn_forwarder::addr;
use monconn_forwarder::admin;
use monconn_forwarder::cli;
use monconn_forwarder::config;

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use ipnet::IpNet;
use proptest::prelude::*;
use proptest::string::string_regex;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Cases per property: `MONCONN_FUZZ_CASES`, default 10,000.
fn cases() -> u32 {
    std::env::var("MONCONN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    })
}

/// Counts outcomes by label, printed at the end of a property (run with
/// `--nocapture` to see how the cases spread).
#[derive(Default)]
struct Outcomes(std::sync::Mutex<std::collections::BTreeMap<String, u64>>);

impl Outcomes {
    fn add(&self, label: impl Into<String>) {
        *self.0.lock().unwrap().entry(label.into()).or_default() += 1;
    }
    fn print(&self, what: &str) {
        println!("{what}: {:?}", self.0.lock().unwrap());
    }
}

fn re(pattern: &str) -> BoxedStrategy<String> {
    string_regex(pattern).expect("a valid regex").boxed()
}

/// Text an address parser may be fed: any Unicode, address-like noise,
/// near-misses of valid forms, and valid forms.
fn address_text() -> BoxedStrategy<String> {
    prop_oneof![
        any::<String>(),
        re("[0-9a-fA-F:.\\[\\]/%+\\- ]{0,48}"),
        re("(0|00|0[0-9]|[0-9]{1,4})(\\.(0|0[0-9]{1,3}|[0-9]{1,4})){0,4}(/[0-9]{0,4})?"),
        re("(::ffff:|0:0:0:0:0:ffff:|::|\\[)?[0-9a-f]{0,5}(:[0-9a-f]{0,5}){0,8}(\\])?(/[0-9]{1,3})?"),
        any::<IpAddr>().prop_map(|ip| ip.to_string()),
        (any::<IpAddr>(), 0u8..140).prop_map(|(ip, len)| format!("{ip}/{len}")),
        any::<std::net::Ipv4Addr>().prop_map(|ip| format!("::ffff:{ip}")),
    ]
    .boxed()
}

/// A message "names the bad value" when it quotes, in backticks, a part of
/// the input (or says which part: a port, a prefix length, a separator).
fn names_the_value(err: &str, input: &str) -> bool {
    let quoted = err.split('`').nth(1);
    quoted.is_some_and(|q| input.contains(q.trim()) || q.trim().is_empty())
        || err.contains("port")
        || err.contains("prefix length")
}

// === IP and CIDR ===

#[test]
fn ip_and_cidr_parser_never_panics_and_agrees_with_strict_std() {
    let seen = Outcomes::default();
    runner(cases())
        .run(&address_text(), |text| {
            let parsed = addr::parse_net(&text);
            seen.add(if parsed.is_ok() { "ok" } else { "error" });
            let t = text.trim();
            match &parsed {
                Err(e) => {
                    prop_assert!(!e.is_empty());
                    prop_assert!(names_the_value(e, &text), "{e:?} for {text:?}");
                }
                Ok(net) => {
                    // What it parsed reads back the same.
                    let again = addr::parse_net(&net.to_string());
                    prop_assert_eq!(again.as_ref(), Ok(net));
                    prop_assert!(net.prefix_len() <= net.max_prefix_len());
                }
            }
            // Oracle: std's strict parsers. Whatever std accepts (std refuses
            // leading zeros in IPv4) is accepted with the same meaning.
            let (ip_text, len) = match t.split_once('/') {
                Some((ip, len)) => (ip, Some(len)),
                None => (t, None),
            };
            if let Ok(ip) = IpAddr::from_str(ip_text) {
                let want = match len {
                    None => Some(IpNet::from(ip)),
                    Some(l) => l
                        .parse::<u8>()
                        .ok()
                        .and_then(|l| IpNet::new(ip, l).ok())
                        .map(|n| n.trunc()),
                };
                match want {
                    Some(want) => prop_assert_eq!(parsed, Ok(want), "{:?}", text),
                    None => prop_assert!(parsed.is_err(), "{text:?}"),
                }
            } else {
                prop_assert!(parsed.is_err(), "{text:?} accepted as {parsed:?}");
            }
            Ok(())
        })
        .unwrap();
    seen.print("parse_net");
}

#[test]
fn ipv4_with_leading_zeros_is_refused_by_name() {
    let strat = (prop::array::uniform4(0u8..=255), 0usize..4, 1usize..3);
    runner(cases())
        .run(&strat, |(octets, which, zeros)| {
            let text: Vec<String> = octets
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    if i == which {
                        format!("{}{o}", "0".repeat(zeros))
                    } else {
                        o.to_string()
                    }
                })
                .collect();
            let text = text.join(".");
            for candidate in [text.clone(), format!("{text}/24")] {
                let err = addr::parse_net(&candidate).unwrap_err();
                prop_assert!(err.contains("leading zeros"), "{err}");
                prop_assert!(err.contains(&text), "{err}");
            }
            let err = addr::parse_ip(&text).unwrap_err();
            prop_assert!(err.contains("leading zeros"), "{err}");
            Ok(())
        })
        .unwrap();
}

// === -p LISTEN=BACKEND ===

fn mapping_text() -> BoxedStrategy<String> {
    let port = prop_oneof![
        (0u32..70_000).prop_map(|p| p.to_string()),
        re("[+\\-]?[0-9]{0,7}|0x[0-9a-f]{1,4}| ?[0-9]{1,5} ?"),
    ];
    let host = prop_oneof![
        address_text(),
        re("[a-zA-Z0-9._\\-]{0,70}"),
        Just(String::new()),
        re("\\[[0-9a-f:.]{0,40}\\]"),
    ];
    let side = (host, port.clone()).prop_map(|(h, p)| format!("{h}:{p}"));
    let listen = prop_oneof![port.prop_map(|p| format!(":{p}")), side.clone()];
    prop_oneof![
        (listen, side).prop_map(|(l, b)| format!("{l}={b}")),
        (any::<SocketAddr>(), any::<SocketAddr>()).prop_map(|(l, b)| format!("{l}={b}")),
        (
            any::<u16>(),
            re("[a-z][a-z0-9\\-]{0,10}(\\.[a-z]{1,5}){0,2}"),
            any::<u16>()
        )
            .prop_map(|(l, h, b)| format!(":{l}={h}:{b}")),
        any::<String>(),
        re("[:=\\[\\]0-9.a-f]{0,40}"),
    ]
    .boxed()
}

#[test]
fn port_mapping_parser_never_panics_and_names_the_bad_part() {
    let seen = Outcomes::default();
    runner(cases())
        .run(&mapping_text(), |text| {
            let parsed = cli::Args::try_parse_from(["forwarder", "-p", &text]);
            seen.add(match &parsed {
                Ok(_) => "ok".to_owned(),
                Err(e) => format!("{:?}", e.kind()),
            });
            match parsed {
                Ok(args) => {
                    let m = &args.mappings[0];
                    let (l, b) = text.split_once('=').expect("a valid mapping has =");
                    prop_assert_eq!(&m.text, l);
                    // The parsed forms read back the same.
                    let listen = addr::ListenAddr::parse(&m.listen.to_string());
                    prop_assert_eq!(listen, Ok(m.listen));
                    let backend = addr::Backend::parse(&m.backend.to_string());
                    prop_assert_eq!(backend, Ok(m.backend.clone()));
                    prop_assert!(m.listen.port() != 0);
                    prop_assert!(!b.is_empty());
                }
                Err(e) => {
                    let msg = e.to_string();
                    prop_assert!(
                        matches!(
                            e.kind(),
                            clap::error::ErrorKind::ValueValidation
                                | clap::error::ErrorKind::InvalidValue
                                | clap::error::ErrorKind::UnknownArgument
                                | clap::error::ErrorKind::InvalidUtf8
                        ),
                        "{:?}: {msg}",
                        e.kind()
                    );
                    if e.kind() == clap::error::ErrorKind::ValueValidation {
                        // clap quotes the value, then names the flag, and our
                        // reason follows that (the value itself may hold `': `).
                        let reason = msg.split("<LISTEN=BACKEND>': ").nth(1).unwrap_or("");
                        prop_assert!(
                            reason.contains("LISTEN=BACKEND")
                                || reason.starts_with("listen address")
                                || reason.starts_with("backend"),
                            "{msg}"
                        );
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    seen.print("-p mappings");
}

#[test]
fn valid_mappings_are_accepted_as_written() {
    let strat = (any::<IpAddr>(), 1u16.., any::<IpAddr>(), 1u16..);
    runner(cases() / 4)
        .run(&strat, |(lip, lport, bip, bport)| {
            let l = SocketAddr::new(lip, lport);
            let b = SocketAddr::new(bip, bport);
            let args = cli::Args::try_parse_from(["forwarder", "-p", &format!("{l}={b}")])
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(args.mappings[0].listen, addr::ListenAddr::Addr(l));
            prop_assert_eq!(&args.mappings[0].backend, &addr::Backend::Addr(b));
            Ok(())
        })
        .unwrap();
}

// === the config file ===

/// Values, hostile or not, for any key.
fn value() -> BoxedStrategy<String> {
    prop_oneof![
        Just("-1".to_owned()),
        Just("1e309".to_owned()),
        Just("-0.0".to_owned()),
        Just(".nan".to_owned()),
        Just(".inf".to_owned()),
        Just("1e18".to_owned()),
        Just("1e-300".to_owned()),
        Just("0x10".to_owned()),
        Just("99999999999999999999999".to_owned()),
        Just("~".to_owned()),
        Just("\"\"".to_owned()),
        Just("[]".to_owned()),
        Just("[1.1.1.1, 010.0.0.1]".to_owned()),
        Just("[\"::ffff:1.2.3.4/120\", 0:0:0:0:0:ffff:7f00:2]".to_owned()),
        Just("{a: 1}".to_owned()),
        Just("true".to_owned()),
        Just("&a 1".to_owned()),
        Just("*a".to_owned()),
        Just("!!binary aGVsbG8=".to_owned()),
        (0u64..100_000).prop_map(|n| n.to_string()),
        (-1e6f64..1e6).prop_map(|f| f.to_string()),
        address_text().prop_map(|s| format!("{s:?}")),
        re("[a-z0-9 .:\\-\\[\\]{},\"'#&*!|>%@`]{0,20}"),
    ]
    .boxed()
}

const KEYS: &[&str] = &[
    "listen_ip",
    "listen_port",
    "backend_ip",
    "backend_port",
    "read_timeout",
    "write_timeout",
    "wait_timeout",
    "max_idle",
    "idle_interval",
    "conn_limit",
    "ip_limit",
    "per_ip_limit",
    "rate_limit",
    "rate_burst",
    "keepalive",
    "nodelay",
    "print_bytes",
    "pause_at_limit",
    "connect_timeout",
    "ip_blacklist",
    "ip_allowlist",
    "ip_blaklist",
];

fn config_text() -> BoxedStrategy<String> {
    let service =
        prop::collection::vec((prop::sample::select(KEYS), value()), 0..8).prop_map(|pairs| {
            let mut text = String::from("svc:\n  listen_port: 8080\n  backend_port: 80\n");
            for (k, v) in pairs {
                text.push_str(&format!("  {k}: {v}\n"));
            }
            text
        });
    prop_oneof![
        4 => service,
        1 => any::<String>(),
        1 => re("([a-z_]{1,12}:( [a-z0-9.:\\[\\]{}-]{0,12})?\n( {2,4}|- )?){0,6}"),
    ]
    .boxed()
}

#[test]
fn config_parser_never_panics_and_locates_errors() {
    let seen = Outcomes::default();
    runner(cases())
        .run(&config_text(), |text| {
            let parsed = config::parse(&text);
            seen.add(match &parsed {
                Ok(specs) => format!("ok, {} service(s)", specs.len()),
                Err(e) if e.starts_with("line ") => "error with its line".to_owned(),
                Err(e) if e.starts_with("service `") => "error naming the service".to_owned(),
                Err(_) => "other error".to_owned(),
            });
            match parsed {
                Err(e) => {
                    prop_assert!(!e.is_empty());
                    // A YAML or key error carries its line; a bad value in a
                    // well-formed service names the service.
                    prop_assert!(
                        e.starts_with("line ") || e.starts_with("service `") || e.contains(':'),
                        "{e:?} for {text:?}"
                    );
                }
                Ok(specs) => {
                    for spec in &specs {
                        let c = &spec.config;
                        // Nothing a file says may make a setting unusable:
                        // the library takes it as it is (checked by use).
                        let service = monconn::Registry::new()
                            .create(&spec.sid, c.clone())
                            .unwrap();
                        let peer: SocketAddr = ([127, 0, 0, 1], 4000).into();
                        for _ in 0..3 {
                            drop(service.admit(peer));
                        }
                        prop_assert_eq!(service.connections(), 0);
                    }
                }
            }
            Ok(())
        })
        .unwrap();
    seen.print("config");
}

// === the admin API ===

/// The admin API, in-process: services `web`, `:22` and `a/b`, one
/// connection live in `web`; with a bearer token when `token` is set.
struct AdminRig {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    token: Option<&'static str>,
}

impl AdminRig {
    fn new(token: Option<&'static str>) -> AdminRig {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let addr = rt.block_on(async {
            let registry = monconn::Registry::new();
            for sid in ["web", ":22", "a/b"] {
                registry
                    .create(sid, monconn::ServiceConfig::default())
                    .unwrap();
            }
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle();
            let admin = admin::Admin {
                registry,
                metrics,
                token: token.map(Arc::from),
                cluster: None,
            };
            tokio::spawn(admin::serve(listener, admin));
            addr
        });
        AdminRig { rt, addr, token }
    }

    /// Sends a whole request and reads the answer: status and body, or
    /// `None` when the server closed without one.
    fn send(&self, raw: &[u8]) -> Option<(u16, String)> {
        self.exchange(raw, false)
    }

    /// Sends `raw`, then ends the stream (what a request cut short looks
    /// like), and reads whatever answer comes.
    fn send_and_close(&self, raw: &[u8]) -> Option<(u16, String)> {
        self.exchange(raw, true)
    }

    fn exchange(&self, raw: &[u8], close: bool) -> Option<(u16, String)> {
        self.rt.block_on(async {
            let mut s = tokio::net::TcpStream::connect(self.addr).await.unwrap();
            let _ = s.write_all(raw).await;
            if close {
                let _ = s.shutdown().await;
            }
            let mut out = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out));
            read.await
                .expect("the admin API answered or closed in time")
                .ok()?;
            let text = String::from_utf8_lossy(&out).into_owned();
            let status = text.split(' ').nth(1)?.parse().ok()?;
            let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
            Some((status, body))
        })
    }

    fn request(&self, method: &str, target: &str, headers: &str, body: &[u8]) -> Vec<u8> {
        let auth = self
            .token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let mut raw = format!(
            "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{headers}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw
    }

    /// The API still answers a plain request.
    fn alive(&self) {
        let (status, body) = self
            .send(&self.request("GET", "/stats/web", "", b""))
            .expect("an answer");
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"sid\":\"web\""), "{body}");
    }
}

fn segment() -> BoxedStrategy<String> {
    prop_oneof![
        prop::sample::select(vec![
            "stats",
            "services",
            "blacklist",
            "connections",
            "kick",
            "metrics",
            "web",
            "%3A22",
            "a%2Fb",
            "",
            ".",
            "..",
            "%2e%2e",
            "%00",
            "%FF%FE",
            "%C0%AF",
            "%",
            "%2",
            "%zz",
            "127.0.0.1",
            "10.0.0.0%2F8",
            "::ffff:10.0.0.1",
            "0:0:0:0:0:ffff:7f00:2",
            "18446744073709551616",
            "-1",
            "0",
        ])
        .prop_map(str::to_owned),
        re("[A-Za-z0-9._~!$&'()*+,;=:@\\-]{0,24}"),
        prop::collection::vec(any::<u8>(), 0..12).prop_map(|b| {
            percent_encoding::percent_encode(&b, percent_encoding::NON_ALPHANUMERIC).to_string()
        }),
        (1usize..5000).prop_map(|n| "a".repeat(n)),
    ]
    .boxed()
}

fn target() -> BoxedStrategy<String> {
    let sid = prop_oneof![
        3 => prop::sample::select(vec!["web", "%3A22", "a%2Fb", "%77eb"]).prop_map(str::to_owned),
        1 => segment(),
    ];
    let net = prop_oneof![
        address_text().prop_map(|t| {
            percent_encoding::utf8_percent_encode(&t, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        }),
        segment(),
    ];
    let routes = prop_oneof![
        Just("/stats".to_owned()),
        Just("/metrics".to_owned()),
        sid.clone().prop_map(|s| format!("/stats/{s}")),
        sid.clone().prop_map(|s| format!("/stats/{s}/connections")),
        (sid.clone(), net).prop_map(|(s, n)| format!("/services/{s}/blacklist/{n}")),
        (sid, segment()).prop_map(|(s, id)| format!("/services/{s}/connections/{id}/kick")),
    ];
    let random =
        prop::collection::vec(segment(), 0..7).prop_map(|segs| format!("/{}", segs.join("/")));
    (
        prop_oneof![3 => routes, 1 => random],
        prop::option::of(re("(kick|kick=1|kick=true|[a-z=&%0-9]{0,16})")),
    )
        .prop_map(|(mut t, query)| {
            if let Some(q) = query {
                t.push('?');
                t.push_str(&q);
            }
            t
        })
        .boxed()
}

fn method() -> BoxedStrategy<String> {
    prop_oneof![
        6 => prop::sample::select(vec!["GET", "POST", "DELETE"]),
        1 => prop::sample::select(vec!["PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "get", "FOO"]),
    ]
    .prop_map(str::to_owned)
    .boxed()
}

#[test]
fn admin_api_answers_any_path_method_and_body_with_json() {
    let rig = AdminRig::new(None);
    let seen = Outcomes::default();
    let strat = (
        method(),
        target(),
        prop::collection::vec(any::<u8>(), 0..2048),
    );
    runner((cases() / 5).max(1))
        .run(&strat, |(method, target, body)| {
            let raw = rig.request(&method, &target, "", &body);
            let Some((status, text)) = rig.send(&raw) else {
                return Err(TestCaseError::fail(format!(
                    "no answer to {method} {target}"
                )));
            };
            seen.add(status.to_string());
            // 403: the dashboard's routes refuse a state-changing request
            // without `X-Monconn-Request`.
            prop_assert!(
                [200, 400, 403, 404, 405].contains(&status),
                "{status} for {method} {target}: {text}"
            );
            if method == "HEAD" {
                return Ok(());
            }
            // The dashboard's page.
            if status == 200 && text.starts_with("<!doctype html>") {
                return Ok(());
            }
            if target.starts_with("/metrics") && status == 200 {
                return Ok(());
            }
            let json: serde_json::Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("{e}: {text:?} for {target}")))?;
            if status >= 400 {
                let msg = json["error"].as_str().unwrap_or("");
                prop_assert!(!msg.is_empty(), "{text}");
            }
            Ok(())
        })
        .unwrap();
    rig.alive();
    seen.print("admin API statuses");
}

#[test]
fn admin_api_survives_raw_garbage() {
    let rig = AdminRig::new(None);
    let strat = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..4096),
        (method(), re("[ -~]{0,64}"), re("[ -~\\r\\n]{0,256}"))
            .prop_map(|(m, t, rest)| format!("{m} {t} HTTP/1.1\r\n{rest}").into_bytes()),
        re("(GET|POST) /stats HTTP/1\\.[0-9]\r\n(Transfer-Encoding: chunked\r\n|Content-Length: -?[0-9]{1,22}\r\n|[A-Za-z-]{1,8}: [ -~]{0,20}\r\n){0,4}\r\n[0-9a-fA-F]{0,6}\r\n[ -~]{0,16}")
            .prop_map(String::into_bytes),
    ];
    let n = (cases() / 10).max(1);
    runner(n)
        .run(&strat, |raw| {
            if let Some((status, _)) = rig.send_and_close(&raw) {
                prop_assert!((200..600).contains(&status));
            }
            Ok(())
        })
        .unwrap();
    rig.alive();
}

#[test]
fn admin_token_wrong_or_missing_gets_401_on_every_route() {
    let rig = AdminRig::new(Some("s3cret-token"));
    let strat = (
        method(),
        target(),
        prop_oneof![
            Just(String::new()),
            Just("Authorization: Bearer\r\n".to_owned()),
            Just("Authorization: bearer s3cret-tokeN\r\n".to_owned()),
            Just("Authorization: Bearer s3cret-toke\r\n".to_owned()),
            Just("Authorization: Bearer s3cret-tokenX\r\n".to_owned()),
            Just("Authorization: Basic czNjcmV0LXRva2Vu\r\n".to_owned()),
            re("Authorization: Bearer [!-~]{0,20}\r\n"),
            re("X-Token: s3cret-token\r\n"),
        ],
    );
    runner((cases() / 10).max(1))
        .run(&strat, |(method, target, header)| {
            // Only the Bearer scheme (in any case) with the exact token is
            // let in; the rig adds none here.
            let raw = format!(
                "{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{header}Content-Length: 0\r\n\r\n"
            );
            let (status, text) = rig
                .send(raw.as_bytes())
                .ok_or_else(|| TestCaseError::fail("no answer"))?;
            // The dashboard's page and the probes are open to GET and HEAD.
            let path = target.split('?').next().unwrap_or_default();
            if ["GET", "HEAD"].contains(&method.as_str()) && ["/", "/healthz", "/readyz"].contains(&path) {
                prop_assert_eq!(status, 200, "{} {}: {}", method, target, text);
                return Ok(());
            }
            prop_assert_eq!(status, 401, "{} {} {:?}: {}", method, target, header, text);
            Ok(())
        })
        .unwrap();
    rig.alive();
}

/// A YAML error with no place in the text (found by the property test above:
/// `&0]` reads as more than one document) still says where: the whole file.
#[test]
fn a_yaml_error_without_a_location_names_the_whole_file() {
    let e = config::parse("&0]").unwrap_err();
    assert!(e.starts_with("the whole file: "), "{e}");
    assert!(e.contains("more than one document"), "{e}");
}
