//! Where the shared ban list lives and how the sync behaves.

use std::fmt;
use std::time::Duration;

/// The settings of a [`Cluster`](super::Cluster): the Redis (or Valkey)
/// server, the key prefix the instances share, and the sync's timings.
///
/// The URL may carry credentials (`redis://user:password@host:6379/0`);
/// they are never logged, and `Debug` shows the address alone.
///
/// # Examples
/// ```
/// use std::time::Duration;
/// use monconn::cluster::ClusterConfig;
///
/// let config = ClusterConfig::new("redis://:s3cret@127.0.0.1:6379/0")
///     .unwrap()
///     .key("edge")
///     .max_backoff(Duration::from_secs(5));
/// assert_eq!(format!("{config:?}"), "ClusterConfig { addr: \"127.0.0.1:6379\", key: \"edge\" }");
/// let err = ClusterConfig::new("http://127.0.0.1").unwrap_err();
/// assert!(err.to_string().starts_with("bad Redis URL \"http://127.0.0.1\""), "{err}");
/// ```
#[derive(Clone)]
pub struct ClusterConfig {
    pub(super) client: redis::Client,
    pub(super) key: String,
    pub(super) max_backoff: Duration,
    pub(super) resync_every: Duration,
    pub(super) timeout: Duration,
}

/// Why a [`Cluster`](super::Cluster) cannot start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClusterError {
    /// The Redis URL does not parse; the URL is shown without its
    /// credentials.
    BadUrl {
        /// The URL, credentials masked.
        url: String,
        /// What the parser said.
        reason: String,
    },
    /// The key prefix is empty.
    EmptyKey,
    /// [`Cluster::start`](super::Cluster::start) was called outside a tokio runtime.
    NoRuntime,
}

impl fmt::Display for ClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClusterError::BadUrl { url, reason } => write!(
                f,
                "bad Redis URL \"{url}\": {reason} (expected redis://[user:password@]host[:port][/db], \
                 rediss://... or unix:///path)"
            ),
            ClusterError::EmptyKey => f.write_str("the cluster key prefix is empty"),
            ClusterError::NoRuntime => {
                f.write_str("the cluster sync must be started within a tokio runtime")
            }
        }
    }
}

impl std::error::Error for ClusterError {}

/// `url` with whatever sits between `://` and the last `@` masked.
pub(super) fn masked(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme + 3 => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl ClusterConfig {
    /// The server at `url` (`redis://`, `rediss://` where the `redis`
    /// crate was built with TLS, `unix://`); key prefix `monconn`, reconnect
    /// backoff up to 2 s, a full resync every 30 s, 1 s per command.
    ///
    /// # Errors
    /// [`ClusterError::BadUrl`] naming the URL (credentials masked).
    pub fn new(url: &str) -> Result<Self, ClusterError> {
        let client = redis::Client::open(url).map_err(|e| ClusterError::BadUrl {
            url: masked(url),
            reason: e.to_string(),
        })?;
        Ok(ClusterConfig {
            client,
            key: "monconn".to_owned(),
            max_backoff: Duration::from_secs(2),
            resync_every: Duration::from_secs(30),
            timeout: Duration::from_secs(1),
        })
    }

    /// Sets the prefix of the keys and channel the instances share
    /// (`{key}:bans:{sid}` sorted sets, the `{key}:bans` channel). Default
    /// `monconn`.
    #[must_use]
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = key.into();
        self
    }

    /// Sets the longest wait between reconnect attempts (they start at
    /// 100 ms and double). Default 2 s.
    #[must_use]
    pub fn max_backoff(mut self, time: Duration) -> Self {
        self.max_backoff = time.max(Duration::from_millis(100));
        self
    }

    /// Sets how often the whole list is read again (a safety net for a lost
    /// message, and how a service added later learns the list). Default 30 s.
    #[must_use]
    pub fn resync_every(mut self, time: Duration) -> Self {
        self.resync_every = time.max(Duration::from_millis(100));
        self
    }

    /// Sets how long a connect or a command may take. Default 1 s.
    #[must_use]
    pub fn command_timeout(mut self, time: Duration) -> Self {
        self.timeout = time.max(Duration::from_millis(10));
        self
    }

    /// The server's address (`host:port` or a socket path), without
    /// credentials: what the logs show.
    pub fn addr(&self) -> String {
        self.client.get_connection_info().addr().to_string()
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("addr", &self.addr())
            .field("key", &self.key)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked() {
        assert_eq!(masked("redis://u:p@h:1/0"), "redis://***@h:1/0");
        assert_eq!(masked("redis://h:1"), "redis://h:1");
        let err = ClusterConfig::new("redis://:pw@host:notaport").unwrap_err();
        assert!(!err.to_string().contains("pw"), "{err}");
        assert!(
            err.to_string().contains("redis://***@host:notaport"),
            "{err}"
        );
    }
}
