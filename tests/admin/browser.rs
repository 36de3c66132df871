//! The dashboard in a real browser: Debian's `chromium`, headless, driven by
//! `chromedriver` over WebDriver (the `fantoccini` crate). The test starts
//! chromedriver itself and kills it by its PID. Without chromium the test
//! fails, naming `scripts/test-deps.sh`: it never skips. Kicks, bans and
//! a tap with a known payload's hex, as an operator does them.

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use monconn::admin::Admin;
use monconn::{Registry, ServiceMonitor};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::http::{closed_by_server, echo, round_trip, serve_admin};
use crate::support::{connect_from, eventually, quiet_config, within, PATIENCE};

const TOKEN: &str = "browser-test-token";

/// Where the screenshot goes with `MONCONN_UPDATE_SCREENSHOT=1`: the
/// forwarder's docs (its README shows it). Otherwise it goes to a
/// temporary file, so that a test run leaves the work tree as it was.
const SCREENSHOT: &str = "examples/forwarder/docs/dashboard.png";

/// `name`'s path on `PATH`, if any.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(name))
        .find(|p| p.is_file())
}

/// A chromedriver we started, killed by its PID when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    async fn start() -> Driver {
        let (Some(_), Some(driver)) = (which("chromium"), which("chromedriver")) else {
            panic!(
                "the browser test needs Debian's `chromium` and `chromium-driver` \
                 (`chromium` and `chromedriver` on PATH): run scripts/test-deps.sh"
            );
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = Driver { child, port };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while TcpStream::connect(addr).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver does not listen on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        driver
    }

    async fn browser(&self) -> Client {
        let chromium = which("chromium").expect("chromium on PATH");
        let caps = json!({
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,1500"],
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // By PID: this child only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` until it returns something truthy; returns that.
async fn until(page: &Client, what: &str, script: &str) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let v = page.execute(script, vec![]).await.expect("a script");
        let truthy =
            !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
        if truthy {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not seen on the page after {PATIENCE:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A script returning the number the page shows for service `sid`
/// (`data-k` = `key`) once it satisfies `cond` (JS, on `v`), else null.
fn figure(sid: &str, key: &str, cond: &str) -> String {
    format!(
        "const e = document.querySelector('.svc[data-sid=\"{sid}\"] [data-k=\"{key}\"]'); \
         const v = e ? Number(e.dataset.v) : null; return v !== null && ({cond}) ? v : null;"
    )
}

/// Clicks the element at `css`, found afresh (the page redraws each second).
async fn click(page: &Client, css: &str) {
    for _ in 0..20 {
        if let Ok(e) = page.find(Locator::Css(css)).await {
            if e.click().await.is_ok() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot click {css}");
}

async fn type_into(page: &Client, css: &str, text: &str) {
    let e = page.find(Locator::Css(css)).await.expect(css);
    e.clear().await.unwrap();
    e.send_keys(text).await.unwrap();
}

/// A client that echoes `chunk` bytes every `every` until aborted.
fn traffic(addr: SocketAddr, src: IpAddr, chunk: usize, every: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut client = connect_from(src, addr).await;
        // Uneven, so that the sparklines have a shape.
        for k in 0usize.. {
            let payload = vec![b'm'; chunk * (1 + (k / 10) % 5) / 3];
            round_trip(&mut client, &payload).await;
            tokio::time::sleep(every).await;
        }
    })
}

async fn held(addr: SocketAddr, src: IpAddr) -> TcpStream {
    let mut client = connect_from(src, addr).await;
    round_trip(&mut client, b"hello").await;
    client
}

fn blacklisted(svc: &ServiceMonitor) -> u64 {
    svc.snapshot().rejected["blacklisted"]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_live_traffic_kicks_and_bans_in_chromium() {
    let driver = Driver::start().await;
    let registry = Registry::new();
    let web = registry.create("web", quiet_config()).unwrap();
    let api = registry.create("api", quiet_config()).unwrap();
    let (web_addr, api_addr) = (echo(&web).await, echo(&api).await);
    let localhost: IpAddr = "127.0.0.1".parse().unwrap();
    let mut load = Vec::new();
    for (i, src) in ["127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"]
        .iter()
        .enumerate()
    {
        let src = src.parse().unwrap();
        load.push(traffic(
            web_addr,
            src,
            8_000 * (i + 1),
            Duration::from_millis(40),
        ));
        load.push(traffic(
            api_addr,
            src,
            2_000,
            Duration::from_millis(25 * (i as u64 + 1)),
        ));
    }
    let mut victim = held(web_addr, localhost).await;
    let mut nine = held(web_addr, "127.0.0.9".parse().unwrap()).await;
    let admin = serve_admin(Admin::new(registry.clone()).token(TOKEN)).await;

    let page = driver.browser().await;
    page.goto(&format!("http://{admin}/")).await.unwrap();
    // The token, once, in the page's form: it buys a session cookie.
    until(
        &page,
        "the sign-in form",
        "return !document.getElementById('auth').hidden;",
    )
    .await;
    type_into(&page, "#token", "wrong").await;
    click(&page, "#token-btn").await;
    let err = until(
        &page,
        "the wrong token's error",
        "return document.getElementById('token-err').textContent;",
    )
    .await;
    assert_eq!(err, "missing or wrong bearer token (or session cookie)");
    type_into(&page, "#token", TOKEN).await;
    click(&page, "#token-btn").await;
    until(
        &page,
        "the live status",
        "return document.getElementById('status').textContent === 'live';",
    )
    .await;
    assert!(!page.current_url().await.unwrap().as_str().contains(TOKEN));

    // Live counters: 4 loaders and 2 held clients on web, bytes moving.
    let conns = until(
        &page,
        "web's 6 connections",
        &figure("web", "connections", "v == 6"),
    )
    .await;
    assert_eq!(conns, json!(6));
    let before = until(&page, "web's bytes", &figure("web", "bytes_read", "v > 0")).await;
    let before = before.as_f64().unwrap();
    let after = until(
        &page,
        "web's bytes growing",
        &figure("web", "bytes_read", &format!("v > {before}")),
    )
    .await;
    assert!(after.as_f64().unwrap() > before);
    let out = until(
        &page,
        "web's bytes out",
        &figure("web", "bytes_written", "v > 0"),
    )
    .await;
    assert!(out.as_f64().unwrap() > 0.0);
    let _extra = held(web_addr, localhost).await;
    until(
        &page,
        "a 7th connection",
        &figure("web", "connections", "v == 7"),
    )
    .await;

    // Kick the victim from its row: the client sees its connection close.
    let victim_row = format!(
        "tr[data-peer=\"{}\"] button[data-kick]",
        victim.local_addr().unwrap()
    );
    until(
        &page,
        "the victim's row",
        &format!(
            "return !!document.querySelector('{}');",
            victim_row.replace('\'', "\\'")
        ),
    )
    .await;
    click(&page, &victim_row).await;
    within("the kick", closed_by_server(&mut victim)).await;
    let msg = until(
        &page,
        "the kick's message",
        "return document.getElementById('kick-msg').textContent;",
    )
    .await;
    assert!(
        msg.as_str().unwrap().starts_with("kicked connection"),
        "{msg}"
    );

    // Bad input: the API's error next to the field.
    type_into(&page, "#ban-ip", "10.0.0.300").await;
    click(&page, "#ban-btn").await;
    let err = until(
        &page,
        "the ban's error",
        "return document.getElementById('ban-err').textContent;",
    )
    .await;
    assert_eq!(err, "bad IP or CIDR \"10.0.0.300\"");
    type_into(&page, "#filter", "1.2.3").await;
    click(&page, "#filter-btn").await;
    let err = until(
        &page,
        "the filter's error",
        "return document.getElementById('filter-err').textContent;",
    )
    .await;
    assert_eq!(err, "bad IP or CIDR \"1.2.3\"");

    // Ban a CIDR with its live connections kicked; a new client from it is refused.
    page.find(Locator::Css("#ban-sid"))
        .await
        .unwrap()
        .select_by_value("web")
        .await
        .unwrap();
    type_into(&page, "#ban-ip", "127.0.0.8/30").await;
    click(&page, "#ban-btn").await;
    let ok = until(
        &page,
        "the ban's message",
        "return document.getElementById('ban-ok').textContent;",
    )
    .await;
    assert_eq!(ok, "banned 127.0.0.8/30 on web (kicked 1)");
    within("the banned client's close", closed_by_server(&mut nine)).await;
    let mut refused = connect_from("127.0.0.9".parse().unwrap(), web_addr).await;
    within("the refusal", closed_by_server(&mut refused)).await;
    eventually("counted as blacklisted", || blacklisted(&web) == 1).await;
    until(&page, "blacklisted on the page", "return document.querySelector('.svc[data-sid=\"web\"] [data-k=\"reasons\"]').textContent.includes('blacklisted');").await;
    until(
        &page,
        "the refused client in the last rejections",
        "return [...document.querySelectorAll('#rejections tbody tr')]\
           .some((r) => r.textContent.includes('127.0.0.9:') && r.textContent.includes('blacklisted'));",
    )
    .await;
    until(
        &page,
        "the blacklist chip",
        "return !!document.querySelector('[data-net=\"127.0.0.8/30\"]');",
    )
    .await;

    // A ban for ten minutes: listed with its time left, on the page and in the service.
    type_into(&page, "#ban-ip", "127.0.0.12").await;
    type_into(&page, "#ban-for", "10m").await;
    click(&page, "#ban-btn").await;
    until(
        &page,
        "the timed ban's message",
        "return document.getElementById('ban-ok').textContent == 'banned 127.0.0.12 on web for 10m (kicked 0)';",
    )
    .await;
    let timed = web.timed_bans();
    assert_eq!(timed.len(), 1, "{timed:?}");
    assert_eq!(timed[0].net.to_string(), "127.0.0.12/32");
    assert!(
        timed[0]
            .remaining_ms
            .is_some_and(|ms| ms > 590_000 && ms <= 600_000),
        "{timed:?}"
    );
    until(
        &page,
        "the timed ban's chip",
        "const c = document.querySelector('[data-timed][data-net=\"127.0.0.12/32\"]'); return !!c && /\\(\\d+m\\d+s left, local\\)/.test(c.textContent);",
    )
    .await;
    let mut twelve = connect_from("127.0.0.12".parse().unwrap(), web_addr).await;
    within("the timed ban's refusal", closed_by_server(&mut twelve)).await;
    type_into(&page, "#ban-for", "").await;

    // A filter that matches narrows the table to 127.0.0.2.
    type_into(&page, "#filter", "127.0.0.2").await;
    click(&page, "#filter-btn").await;
    until(&page, "the filtered table", "const r = [...document.querySelectorAll('#conns tbody tr')]; return r.length == 2 && r.every(t => t.dataset.peer.startsWith('127.0.0.2:'));").await;
    click(&page, "#filter-clear").await;
    until(
        &page,
        "the whole table",
        "return document.querySelectorAll('#conns tbody tr').length >= 8;",
    )
    .await;

    // A tap on web and 127.0.0.5: a known payload's hex shows in the page.
    type_into(&page, "#tap-ip", "10.0.0.300").await;
    click(&page, "#tap-start").await;
    let err = until(
        &page,
        "the tap's error",
        "return document.getElementById('tap-err').textContent;",
    )
    .await;
    assert_eq!(err, "bad IP or CIDR \"10.0.0.300\"");
    page.find(Locator::Css("#tap-sid"))
        .await
        .unwrap()
        .select_by_value("web")
        .await
        .unwrap();
    type_into(&page, "#tap-ip", "127.0.0.5").await;
    click(&page, "#tap-start").await;
    until(
        &page,
        "the tap on",
        "return document.getElementById('tap-state').textContent.startsWith('on: sid web, ip 127.0.0.5/32');",
    )
    .await;
    let mut tapped = connect_from("127.0.0.5".parse().unwrap(), web_addr).await;
    let tapped_peer = tapped.local_addr().unwrap().to_string();
    round_trip(&mut tapped, b"monconn-tap-payload!").await;
    let hex = "00000000: 6d6f 6e63 6f6e 6e2d 7461 702d 7061 796c  monconn-tap-payl\n\
               00000010: 6f61 6421                                oad!\n";
    let shown = until(
        &page,
        "the payload's hex in the tap",
        "const e = document.querySelector('#tap-log .tap-ev.read pre.hex'); return e ? e.textContent : null;",
    )
    .await;
    assert_eq!(shown, hex);
    drop(tapped);
    let close = until(
        &page,
        "the tapped connection's close",
        "const e = document.querySelector('#tap-log .tap-ev.close'); return e ? e.textContent : null;",
    )
    .await;
    let close = close.as_str().unwrap();
    assert!(
        close.contains(&tapped_peer) && close.contains("normal · in 20 B · out 20 B"),
        "{close}"
    );
    // Only 127.0.0.5 on web: the loaders from 127.0.0.1-4 are not in it.
    let others = page
        .execute(
            "return [...document.querySelectorAll('#tap-log .tap-ev')].filter(e => !e.textContent.includes(arguments[0])).length;",
            vec![json!(tapped_peer)],
        )
        .await
        .unwrap();
    assert_eq!(others, json!(0));
    click(&page, "#tap-stop").await;
    until(
        &page,
        "the tap off",
        "return document.getElementById('tap-state').textContent === 'off';",
    )
    .await;

    // The screenshot, under load, with some history in the sparklines.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let png = page.screenshot().await.unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = if std::env::var_os("MONCONN_UPDATE_SCREENSHOT").is_some() {
        root.join(SCREENSHOT)
    } else {
        std::env::temp_dir().join(format!("monconn-dashboard-{}.png", std::process::id()))
    };
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    println!("screenshot: {}", path.display());
    std::fs::write(&path, &png).unwrap();

    // Unban from the chip: the next client is welcome.
    click(&page, ".chip[data-net=\"127.0.0.8/30\"] button").await;
    let ok = until(
        &page,
        "the unban's message",
        "return document.getElementById('ban-ok').textContent.startsWith('unbanned');",
    )
    .await;
    assert_eq!(ok, json!(true));
    let _back = held(web_addr, "127.0.0.9".parse().unwrap()).await;

    page.close().await.unwrap();
    for task in load {
        task.abort();
    }
    drop(driver);
}
