//! Runs the real `monconn-forwarder` binary as a child process, for
//! end-to-end tests (cargo builds it for this test binary:
//! `CARGO_BIN_EXE_monconn-forwarder`). Each [`Forwarder`] owns a temporary
//! directory (config file, stdout, stderr) and its child, killed and
//! removed on drop.

pub mod peers;
pub mod reliability;

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Generous: the machine is small and shared.
pub const WAIT: Duration = Duration::from_secs(30);

/// The forwarder binary, built by cargo for this test binary.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_monconn-forwarder"))
}

/// A port that was free a moment ago (bound and released).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a free port")
        .port()
}

/// 127.0.0.1:`port`: where the tests' services listen.
pub fn local(port: u16) -> SocketAddr {
    ([127, 0, 0, 1], port).into()
}

/// What to start: the config file's text (if any) and the arguments.
/// `--admin` is added by [`Forwarder::start`].
#[derive(Clone, Debug, Default)]
pub struct Setup {
    pub config: Option<String>,
    pub args: Vec<String>,
    /// No `--admin`: the process is ready once it logs `ready`.
    pub no_admin: bool,
    /// `RUST_LOG` for the process; by default debug for the forwarder and
    /// monconn (a line per connection).
    pub log: Option<&'static str>,
    /// The process's `RLIMIT_NOFILE` (soft, hard); by default the test's.
    pub nofile: Option<(u64, u64)>,
    /// stderr goes to a pipe that nobody reads (a stalled log collector)
    /// instead of the `stderr` file: once the pipe's buffer is full, every
    /// write to it blocks. [`Forwarder::stderr`] is empty then.
    pub stderr_unread: bool,
}

impl Setup {
    /// A config file and no other argument.
    pub fn config(text: String) -> Setup {
        Setup {
            config: Some(text),
            ..Setup::default()
        }
    }

    /// One `-p MAPPING` (`127.0.0.1:PORT=BACKEND`, say) and no config file.
    pub fn mapping(mapping: String) -> Setup {
        Setup {
            args: vec!["-p".into(), mapping],
            ..Setup::default()
        }
    }
}

/// A forwarder of one `-p` mapping to `backend` whose admin API needs
/// `token`.
pub fn start_with_token(backend: SocketAddr, token: &str) -> Forwarder {
    Forwarder::start(|| Setup {
        args: vec![
            "-p".into(),
            format!("127.0.0.1:{}={backend}", free_port()),
            "--admin-token".into(),
            token.into(),
        ],
        ..Setup::default()
    })
}

/// One service of a config file: `name` on 127.0.0.1:`port` to the
/// backend port `backend` (on the default backend_ip), then `extra` (YAML
/// lines, two spaces in).
pub fn service_yaml(name: &str, port: u16, backend: u16, extra: &str) -> String {
    format!(
        "{name}:\n  listen_ip: 127.0.0.1\n  listen_port: {port}\n  backend_port: {backend}\n{extra}"
    )
}

/// A running forwarder process.
#[derive(Debug)]
pub struct Forwarder {
    child: Child,
    dir: PathBuf,
    pub admin: SocketAddr,
}

fn temp_dir() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "monconn-forwarder-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Starts `cmd`'s process with `RLIMIT_NOFILE` at (soft, hard).
fn set_nofile(cmd: &mut Command, (soft, hard): (u64, u64)) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: soft as libc::rlim_t,
        rlim_max: hard as libc::rlim_t,
    };
    // SAFETY: runs in the child between fork and exec, where only
    // async-signal-safe calls are allowed: setrlimit(2) is one, and the
    // closure allocates nothing (the error is built from errno).
    unsafe {
        cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

/// Runs the forwarder to its end (for start errors, `--check-config`,
/// `--help`): exit status, stdout, stderr.
pub fn run_to_end(config: Option<&str>, args: &[&str]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(binary());
    let dir = temp_dir();
    if let Some(text) = config {
        let path = dir.join("config.yaml");
        std::fs::write(&path, text).expect("write config");
        cmd.arg("-c").arg(path);
    }
    let mut child = cmd
        .args(args)
        .env_remove("MONCONN_ADMIN_TOKEN")
        .env_remove("MONCONN_CLUSTER_REDIS")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn forwarder");
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("forwarder {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let _ = std::fs::remove_dir_all(&dir);
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Forwarder {
    /// Starts the forwarder from `make()` (called again, for new ports, if
    /// a port turned out to be taken) and waits until its admin API, bound
    /// after every service, accepts connections.
    pub fn start(make: impl Fn() -> Setup) -> Forwarder {
        let mut last = String::new();
        for _ in 0..3 {
            let setup = make();
            let admin: SocketAddr = ([127, 0, 0, 1], free_port()).into();
            let mut cmd = Command::new(binary());
            let dir = temp_dir();
            if let Some(text) = &setup.config {
                std::fs::write(dir.join("config.yaml"), text).expect("write config");
                cmd.arg("-c").arg(dir.join("config.yaml"));
            }
            let stdout = std::fs::File::create(dir.join("stdout")).expect("stdout file");
            let stderr = if setup.stderr_unread {
                Stdio::piped()
            } else {
                std::fs::File::create(dir.join("stderr"))
                    .expect("stderr file")
                    .into()
            };
            cmd.args(&setup.args);
            if !setup.no_admin {
                cmd.arg("--admin").arg(admin.to_string());
            }
            let log = setup
                .log
                .unwrap_or("info,monconn=debug,monconn::hexdump=trace,monconn_forwarder=debug");
            if let Some(limits) = setup.nofile {
                set_nofile(&mut cmd, limits);
            }
            let child = cmd
                .env_remove("MONCONN_ADMIN_TOKEN")
                .env_remove("MONCONN_CLUSTER_REDIS")
                .env("RUST_LOG", log)
                .stdin(Stdio::null())
                .stdout(stdout)
                .stderr(stderr)
                .spawn()
                .expect("spawn forwarder");
            let mut fwd = Forwarder { child, dir, admin };
            match fwd.wait_ready(setup.no_admin) {
                Ok(()) => return fwd,
                Err(e) => last = e,
            }
            if !last.contains("in use") {
                break;
            }
        }
        panic!("forwarder did not start: {last}");
    }

    /// [`Forwarder::start`] with `N` ports that were free a moment ago,
    /// new ones on every attempt: `make` builds the setup from them.
    /// Returns the forwarder and the ports it runs with.
    pub fn start_with_ports<const N: usize>(
        make: impl Fn([u16; N]) -> Setup,
    ) -> (Forwarder, [u16; N]) {
        let ports = std::cell::Cell::new([0; N]);
        let fwd = Forwarder::start(|| {
            ports.set(std::array::from_fn(|_| free_port()));
            make(ports.get())
        });
        (fwd, ports.get())
    }

    /// Waits until the admin API accepts connections or, with `no_admin`,
    /// until the process logs `ready` (its services listen by then).
    fn wait_ready(&mut self, no_admin: bool) -> Result<(), String> {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}: {}", self.stderr()));
            }
            let ready = if no_admin {
                self.stderr().contains(" ready")
            } else {
                std::net::TcpStream::connect(self.admin).is_ok()
            };
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("not ready in {WAIT:?}: {}", self.stderr()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The descriptors the process has open now.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .expect("read /proc/PID/fd")
            .count()
    }

    /// Sends `sig` (libc::SIGHUP, say) to the child.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid; no memory involved.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig})", self.pid());
    }

    /// The config file path (to rewrite it before a SIGHUP).
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// Replaces the config file at once (write, then rename).
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.join("config.yaml.new");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, self.config_path()).expect("rename config");
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr")).unwrap_or_default()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.dir.join("stdout")).unwrap_or_default()
    }

    /// Waits until stderr contains `needle` `n` times (the `n`th reload, say).
    pub async fn wait_stderr_count(&self, needle: &str, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.stderr().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "`{needle}` not {n} times in stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until stderr contains `needle`; panics with the log otherwise.
    pub async fn wait_stderr(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.stderr().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the child to exit, up to `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "forwarder still running:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// An admin request: status and body.
    /// `method path` to the admin API, with the `X-Monconn-Request`
    /// header every state change needs (as the dashboard sends it).
    pub async fn http(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin, method, path, &[("X-Monconn-Request", "1")]).await
    }

    /// `GET /stats/{sid}` as JSON.
    pub async fn stats(&self, sid: &str) -> serde_json::Value {
        let path = format!("/stats/{}", encode(sid));
        let (status, body) = self.http("GET", &path).await;
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// Polls `GET /stats/{sid}` until `check` holds; returns that snapshot.
    pub async fn wait_stats(
        &self,
        sid: &str,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let stats = self.stats(sid).await;
            if check(&stats) {
                return stats;
            }
            assert!(Instant::now() < deadline, "never {what}: {stats}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("forwarder stderr:\n{}", self.stderr());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encodes a path segment (a sid such as `127.0.0.1:80`, a CIDR).
pub fn encode(segment: &str) -> String {
    percent_encoding::utf8_percent_encode(segment, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// A minimal HTTP/1.1 client: one request, `Connection: close`.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&raw).into_owned())
    };
    let raw = tokio::time::timeout(WAIT, exchange)
        .await
        .expect("admin request timed out")
        .expect("admin request");
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response: {raw}"));
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Connects to `to` from the source address `from` (127.0.0.x).
pub async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    // Without SO_REUSEADDR, the TIME_WAIT this client leaves on
    // 127.0.0.x:PORT would keep a later test from listening on [::]:PORT
    // (`:PORT` services) for a minute.
    socket.set_reuseaddr(true).expect("SO_REUSEADDR");
    // The port is chosen at connect (IP_BIND_ADDRESS_NO_PORT), unique for
    // the whole address pair. One chosen at bind, with SO_REUSEADDR, can
    // repeat a pair whose earlier connection still lingers on the server's
    // side (an orphaned FIN_WAIT2 of an earlier test's forwarder on the same
    // port), which answers the SYN with a reset: a connect refused.
    bind_address_no_port(&socket);
    socket.bind((from, 0).into()).expect("bind source address");
    tokio::time::timeout(WAIT, socket.connect(to))
        .await
        .expect("connect timed out")
        .expect("connect")
}

/// Sets `IP_BIND_ADDRESS_NO_PORT` on `socket` (Linux; elsewhere nothing).
#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_: &TcpSocket) {}

/// Sets `IP_BIND_ADDRESS_NO_PORT` on `socket` (Linux; elsewhere nothing).
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor, and an option value of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "IP_BIND_ADDRESS_NO_PORT: {}",
        std::io::Error::last_os_error()
    );
}

/// Reads until EOF or an error, up to [`WAIT`]: what a client of a refused
/// or closed connection sees. Returns the bytes read before the end.
pub async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("connection still open after {WAIT:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => return got,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// === backends ===

/// A backend that greets every connection with `hello\n`, then echoes.
pub async fn banner_backend() -> SocketAddr {
    named_backend("127.0.0.1:0", "hello").await
}

/// A backend on `bind` that greets every connection with `name` and a
/// newline, then echoes.
pub async fn named_backend(bind: &str, name: &'static str) -> SocketAddr {
    backend_on(bind, move |mut stream| async move {
        let _ = async {
            stream.write_all(format!("{name}\n").as_bytes()).await?;
            let (mut r, mut w) = stream.split();
            tokio::io::copy(&mut r, &mut w).await?;
            w.shutdown().await
        }
        .await;
    })
    .await
}

/// A backend on 127.0.0.1 (any port) whose connections `handle` serves,
/// each in its own task.
pub async fn backend<F, Fut>(handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    backend_on("127.0.0.1:0", handle).await
}

/// A backend on `bind` whose connections `handle` serves, each in its own
/// task, until an accept fails.
pub async fn backend_on<F, Fut>(bind: &str, handle: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .expect("bind backend");
    let addr = listener.local_addr().expect("backend addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(handle(stream));
        }
    });
    addr
}

/// Closes `stream` with SO_LINGER 0, which sends a RST: a peer that
/// crashed or vanished.
pub fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(stream);
}

/// Opens a connection from `from` through the forwarder at `to` to a
/// [`banner_backend`]: `Some` once the greeting came through, `None` when the
/// forwarder closed it without a byte (refused).
pub async fn open(from: [u8; 4], to: SocketAddr) -> Option<TcpStream> {
    let mut stream = connect_from(from, to).await;
    let mut hello = [0u8; 6];
    match tokio::time::timeout(WAIT, stream.read_exact(&mut hello)).await {
        Err(_) => panic!("neither greeted nor closed after {WAIT:?}"),
        Ok(Ok(_)) => {
            assert_eq!(&hello, b"hello\n");
            Some(stream)
        }
        Ok(Err(_)) => None,
    }
}

/// Reads a [`named_backend`]'s greeting line.
pub async fn greeting(stream: &mut TcpStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => line.push(byte[0]),
            other => panic!("no greeting: {other:?} after {line:?}"),
        }
    }
    line.pop();
    String::from_utf8(line).expect("utf-8 greeting")
}

/// Writes `msg` and reads the echo back.
pub async fn echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(WAIT, stream.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .expect("echo");
    assert_eq!(back, msg);
}
