//! How long a reload (SIGHUP) of a big config holds up forwarding and the
//! admin API. Not a criterion bench: it drives the real forwarder binary.
//!
//! ```text
//! cargo bench -p monconn-forwarder --bench reload_stall
//! ```
//!
//! It starts the forwarder (`--threads 1`: the admin API, the reload and the
//! probe's connection share the main runtime) with one service whose
//! blacklist has `ENTRIES` (100,000) addresses, then, while a probe
//! connection echoes 8 bytes through it every 2 ms and an admin client asks
//! `GET /stats/a` every 5 ms, changes one setting and sends SIGHUP,
//! `RELOADS` (5) times. For each reload: how long it took (SIGHUP to
//! `config reloaded` in the log), the slowest echo and the slowest admin
//! answer from the SIGHUP to 200 ms after the reload; and the same for a
//! second with no reload. The goal: no reload stalls either by more than
//! 50 ms.
//!
//! Environment: `FORWARDER` (the binary; by default the one cargo built for
//! this bench, in the bench profile), `ENTRIES`, `RELOADS`, `THREADS`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One timed exchange: when it started and how long it took.
type Samples = Arc<Mutex<Vec<(Instant, Duration)>>>;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn config(port: u16, backend: u16, conn_limit: u32, entries: u32) -> String {
    let mut yaml = format!(
        "a:\n  listen_ip: 127.0.0.1\n  listen_port: {port}\n  backend_port: {backend}\n  \
         conn_limit: {conn_limit}\n  ip_blacklist:\n"
    );
    for i in 0..entries {
        let [_, a, b, c] = (i + 1).to_be_bytes();
        let _ = writeln!(yaml, "    - 10.{a}.{b}.{c}");
    }
    yaml
}

/// Writes `text` to `path` at once (write, then rename).
fn write_config(path: &Path, text: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, text).expect("write the config");
    std::fs::rename(&tmp, path).expect("rename the config");
}

struct Forwarder {
    child: Child,
    stderr: PathBuf,
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Forwarder {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    async fn wait_log(&self, needle: &str, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.log().matches(needle).count() < count {
            assert!(Instant::now() < deadline, "no {needle} in:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Echoes 8 bytes through the forwarder every 2 ms, timing each.
async fn probe(to: SocketAddr, samples: Samples) {
    let mut stream = TcpStream::connect(to).await.expect("connect the probe");
    stream.set_nodelay(true).expect("nodelay");
    let mut back = [0u8; 8];
    loop {
        let start = Instant::now();
        stream.write_all(b"probe..\n").await.expect("probe write");
        stream.read_exact(&mut back).await.expect("probe read");
        samples.lock().unwrap().push((start, start.elapsed()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Asks the admin API for `/stats/a` every 5 ms, timing each answer.
async fn admin(addr: SocketAddr, samples: Samples) {
    let request = format!("GET /stats/a HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    loop {
        let start = Instant::now();
        let mut stream = TcpStream::connect(addr)
            .await
            .expect("connect the admin API");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await.expect("read");
        assert!(body.starts_with(b"HTTP/1.1 200"), "admin answered {body:?}");
        samples.lock().unwrap().push((start, start.elapsed()));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The slowest exchange that overlapped `from..to`.
fn worst(samples: &Samples, from: Instant, to: Instant) -> Duration {
    let samples = samples.lock().unwrap();
    samples
        .iter()
        .filter(|(start, took)| *start < to && *start + *took > from)
        .map(|(_, took)| *took)
        .max()
        .unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let binary = match std::env::var_os("FORWARDER") {
        Some(path) => PathBuf::from(path),
        None => PathBuf::from(env!("CARGO_BIN_EXE_monconn-forwarder")),
    };
    let entries: u32 = env_or("ENTRIES", 100_000);
    let reloads: usize = env_or("RELOADS", 5);
    let threads: usize = env_or("THREADS", 1);

    // An echo backend.
    let backend = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let backend_port = backend.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = backend.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    let dir = std::env::temp_dir().join(format!("monconn-reload-stall-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("config.yaml");
    let port = free_port();
    let admin_addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    write_config(&path, &config(port, backend_port, 1000, entries));
    let stderr = dir.join("stderr");
    let child = Command::new(&binary)
        .arg("-c")
        .arg(&path)
        .args(["--admin", &admin_addr.to_string()])
        .args(["--threads", &threads.to_string()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).expect("stderr file"))
        .spawn()
        .expect("start the forwarder");
    let fwd = Forwarder { child, stderr };
    let started = Instant::now();
    while TcpStream::connect(admin_addr).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "{}",
            fwd.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "forwarder {} --threads {threads}: {entries} blacklist entries, started in {} ms",
        binary.display(),
        ms(started.elapsed())
    );

    let echoes = Samples::default();
    let answers = Samples::default();
    let probe = tokio::spawn(probe(([127, 0, 0, 1], port).into(), echoes.clone()));
    let admin = tokio::spawn(admin(admin_addr, answers.clone()));

    println!("| run | reload ms | slowest echo ms | slowest admin answer ms |");
    println!("|---|---|---|---|");
    let (mut stalls, mut waits) = (Vec::new(), Vec::new());
    for n in 1..=reloads {
        // A second without a reload: the baseline.
        let quiet = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = Instant::now();
        println!(
            "| quiet {n} | - | {} | {} |",
            ms(worst(&echoes, quiet, now)),
            ms(worst(&answers, quiet, now))
        );

        write_config(&path, &config(port, backend_port, 1000 + n as u32, entries));
        let sighup = Instant::now();
        // SAFETY: kill(2) on our own child; no memory involved.
        let rc = unsafe { libc::kill(fwd.child.id() as i32, libc::SIGHUP) };
        assert_eq!(rc, 0, "SIGHUP");
        fwd.wait_log("config reloaded", n).await;
        let took = sighup.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let end = Instant::now();
        let (stall, wait) = (worst(&echoes, sighup, end), worst(&answers, sighup, end));
        println!(
            "| reload {n} | {} | {} | {} |",
            ms(took),
            ms(stall),
            ms(wait)
        );
        stalls.push(stall);
        waits.push(wait);
    }
    println!(
        "median of {reloads} reloads: slowest echo {} ms, slowest admin answer {} ms",
        ms(median(stalls)),
        ms(median(waits))
    );
    probe.abort();
    admin.abort();
    drop(fwd);
    let _ = std::fs::remove_dir_all(&dir);
}
