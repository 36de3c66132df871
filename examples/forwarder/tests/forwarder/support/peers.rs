//! Real PROXY-protocol peers, as child processes with their own config in a
//! temporary directory: HAProxy in front (`send-proxy`, `send-proxy-v2`)
//! and nginx's stream module behind (`listen ... proxy_protocol`, logging
//! `$proxy_protocol_addr`). `scripts/test-deps.sh` installs them. Each is
//! started in the foreground and killed by its PID on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, WAIT};

/// A child process and its directory, killed and removed on drop.
#[derive(Debug)]
pub struct Peer {
    child: Child,
    pub dir: PathBuf,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(name: &str) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "monconn-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("create a temp dir");
    dir
}

/// Whether a socket listens on 127.0.0.1:`port` (read from
/// `/proc/net/tcp`, so that waiting for a peer opens no connection that
/// would show in the counts under test).
fn listening(port: u16) -> bool {
    let text = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).any(|l| {
        l.split_whitespace().nth(1) == Some(&local) && l.split_whitespace().nth(3) == Some("0A")
    })
}

fn start(mut cmd: Command, dir: PathBuf, port: u16, what: &str) -> Peer {
    let log = std::fs::File::create(dir.join("output")).expect("output file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup"))
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("start {what} (run scripts/test-deps.sh): {e}"));
    let mut peer = Peer {
        child,
        dir,
        addr: ([127, 0, 0, 1], port).into(),
    };
    let deadline = Instant::now() + WAIT;
    while !listening(port) {
        if let Some(status) = peer.child.try_wait().expect("try_wait") {
            let output = std::fs::read_to_string(peer.dir.join("output")).unwrap_or_default();
            panic!("{what} exited with {status}: {output}");
        }
        assert!(
            Instant::now() < deadline,
            "{what} not listening after {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    peer
}

/// HAProxy in TCP mode on 127.0.0.1 (a free port), relaying to `server`
/// with `send` (`send-proxy` or `send-proxy-v2`).
pub fn haproxy(server: SocketAddr, send: &str) -> Peer {
    let dir = temp_dir("haproxy");
    let port = free_port();
    let config = format!(
        "global\n    maxconn 100\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 30s\n    timeout server 30s\n\
         frontend front\n    bind 127.0.0.1:{port}\n    default_backend forwarder\n\
         backend forwarder\n    server fwd {server} {send}\n"
    );
    std::fs::write(dir.join("haproxy.cfg"), config).expect("write haproxy.cfg");
    let mut cmd = Command::new("haproxy");
    cmd.arg("-db").arg("-f").arg(dir.join("haproxy.cfg"));
    start(cmd, dir, port, "haproxy")
}

/// nginx's stream module on 127.0.0.1 (a free port), reading a PROXY
/// header on every connection, answering `hello from nginx` and logging
/// `$proxy_protocol_addr:$proxy_protocol_port` to [`nginx_log`]. One
/// process (`master_process off`): killing it by its PID leaves no worker
/// behind.
pub fn nginx() -> Peer {
    let dir = temp_dir("nginx");
    let port = free_port();
    let d = dir.display();
    let config = format!(
        "load_module /usr/lib/nginx/modules/ngx_stream_module.so;\n\
         pid {d}/nginx.pid;\n\
         error_log {d}/error.log info;\n\
         master_process off;\n\
         events {{ worker_connections 64; }}\n\
         stream {{\n\
         \x20   log_format pp '$proxy_protocol_addr:$proxy_protocol_port $remote_addr';\n\
         \x20   server {{\n\
         \x20       listen 127.0.0.1:{port} proxy_protocol;\n\
         \x20       access_log {d}/access.log pp;\n\
         \x20       return \"hello from nginx\\n\";\n\
         \x20   }}\n\
         }}\n"
    );
    std::fs::write(dir.join("nginx.conf"), config).expect("write nginx.conf");
    let mut cmd = Command::new("nginx");
    cmd.arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-g")
        .arg("daemon off;");
    start(cmd, dir, port, "nginx")
}

/// Waits until nginx's access log has `n` lines, and returns them.
pub async fn nginx_log(nginx: &Peer, n: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(nginx.dir.join("access.log")).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        if lines.len() >= n {
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "nginx logged {lines:?}, not {n} lines"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// redis-server on 127.0.0.1:`port` with the password `password`, in the
/// foreground, nothing saved to disk (a restart starts empty). Killed by
/// its PID on drop.
pub fn redis_on(port: u16, password: &str) -> Peer {
    let dir = temp_dir("redis");
    let mut cmd = Command::new("redis-server");
    cmd.arg("--port")
        .arg(port.to_string())
        .arg("--bind")
        .arg("127.0.0.1")
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--requirepass")
        .arg(password)
        .arg("--dir")
        .arg(&dir);
    start(cmd, dir, port, "redis-server")
}
