//! The shared ban list (`monconn::cluster`): the config file's reserved
//! `cluster:` section (`redis:`, `key:`) and `--cluster-redis URL`
//! (`MONCONN_CLUSTER_REDIS`), read at start.
//!
//! ```yaml
//! cluster:
//!   redis: "redis://:password@10.0.0.5:6379/0"
//!   key: edge            # default monconn
//! web:
//!   listen_port: 80
//!   backend_port: 8080
//! ```
//!
//! Every instance with the same Redis and key shares its bans (admin API,
//! auto-ban rules); connection counts and limits stay per instance.

use std::collections::BTreeMap;
use std::fmt;

use monconn::cluster::{Cluster, ClusterConfig};
use monconn::Registry;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use crate::config::FileService;

/// The reserved top-level key.
pub const KEY: &str = "cluster";

/// The `cluster:` section.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClusterSpec {
    /// The Redis URL (may hold credentials: never logged).
    pub redis: Option<String>,
    /// The key prefix the instances share.
    pub key: Option<String>,
}

impl fmt::Debug for ClusterSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSpec")
            .field("redis", &self.redis.as_ref().map(|_| "<redacted>"))
            .field("key", &self.key)
            .finish()
    }
}

/// The config file as a whole: services by name, and the `cluster:` section.
#[derive(Debug, Default)]
pub(crate) struct File {
    pub(crate) services: BTreeMap<String, FileService>,
    pub(crate) cluster: Option<ClusterSpec>,
}

impl<'de> Deserialize<'de> for File {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = File;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of service names to their settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<File, A::Error> {
                let mut file = File::default();
                while let Some(name) = map.next_key::<String>()? {
                    if name == KEY {
                        file.cluster = Some(map.next_value::<ClusterSpec>()?);
                    } else {
                        let service = map.next_value::<FileService>()?;
                        file.services.insert(name, service);
                    }
                }
                Ok(file)
            }
        }
        d.deserialize_map(Entries)
    }
}

impl<'de> Deserialize<'de> for ClusterSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, serde_yaml_ng::Value>::deserialize(d)?;
        let mut spec = ClusterSpec::default();
        let text = |key: &str, v: &serde_yaml_ng::Value| match v {
            serde_yaml_ng::Value::String(s) => Ok(s.clone()),
            _ => Err(de::Error::custom(format!("cluster.{key} must be a string"))),
        };
        for (key, value) in &map {
            match key.as_str() {
                "redis" => spec.redis = Some(text(key, value)?),
                "key" => spec.key = Some(text(key, value)?),
                "listen_port" | "backend_port" | "listen_ip" | "backend_ip" => {
                    return Err(de::Error::custom(
                        "`cluster` is a reserved key (the shared ban list's settings: redis, key): \
                         a service cannot be named `cluster`; rename the service",
                    ))
                }
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{other}` in `cluster`: expected `redis` or `key`"
                    )))
                }
            }
        }
        Ok(spec)
    }
}

/// The settings to start with: `--cluster-redis` (or its environment
/// variable) over the file's `redis:`, `--cluster-key` over its `key:`.
/// `None` when no Redis is named.
///
/// # Errors
/// A bad URL or key, named (credentials masked).
pub fn settings(
    file: Option<&ClusterSpec>,
    flag_url: Option<&str>,
    flag_key: Option<&str>,
) -> Result<Option<ClusterConfig>, String> {
    let url = flag_url.or(file.and_then(|f| f.redis.as_deref()));
    let Some(url) = url.filter(|u| !u.trim().is_empty()) else {
        return Ok(None);
    };
    let mut config = ClusterConfig::new(url.trim()).map_err(|e| format!("cluster: {e}"))?;
    if let Some(key) = flag_key.or(file.and_then(|f| f.key.as_deref())) {
        if key.is_empty() {
            return Err("cluster: the key is empty".into());
        }
        config = config.key(key);
    }
    Ok(Some(config))
}

/// Starts the sync of `registry`'s bans; logs the address alone.
///
/// # Errors
/// When the sync cannot start (no runtime).
pub fn start(registry: &Registry, config: ClusterConfig) -> Result<Cluster, String> {
    let addr = config.addr();
    let cluster = Cluster::start(registry, config).map_err(|e| format!("cluster: {e}"))?;
    tracing::info!(redis = %addr, "sharing bans through Redis");
    Ok(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_file;

    #[test]
    fn the_section_is_read_and_a_service_named_cluster_is_refused() {
        let file = parse_file(
            "cluster:\n  redis: \"redis://:pw@127.0.0.1:6390\"\n  key: edge\na: {listen_port: 1, backend_port: 2}\n",
        )
        .unwrap();
        assert_eq!(file.services.len(), 1);
        let spec = file.cluster.unwrap();
        assert_eq!(spec.key.as_deref(), Some("edge"));
        assert!(!format!("{spec:?}").contains("pw"));
        let config = settings(Some(&spec), None, None).unwrap().unwrap();
        assert_eq!(config.addr(), "127.0.0.1:6390");

        let err = parse_file("cluster: {listen_port: 1, backend_port: 2}\n").unwrap_err();
        assert!(err.contains("a service cannot be named `cluster`"), "{err}");
        assert!(err.starts_with("line 1"), "{err}");
        let err =
            parse_file("cluster: {redis: x, port: 1}\na: {listen_port: 1, backend_port: 2}\n")
                .unwrap_err();
        assert!(err.contains("unknown key `port` in `cluster`"), "{err}");
        // A file with only the section defines no service.
        let err = parse_file("cluster: {redis: \"redis://127.0.0.1\"}\n").unwrap_err();
        assert!(err.contains("defines no service"), "{err}");
    }

    #[test]
    fn flags_win_and_bad_urls_are_named_without_credentials() {
        let spec = ClusterSpec {
            redis: Some("redis://127.0.0.1:1".into()),
            key: None,
        };
        let config = settings(Some(&spec), Some("redis://127.0.0.1:2"), Some("k"))
            .unwrap()
            .unwrap();
        assert_eq!(config.addr(), "127.0.0.1:2");
        assert!(settings(None, None, None).unwrap().is_none());
        let err = settings(None, Some("redis://:hunter2@host:port"), None).unwrap_err();
        assert!(
            err.starts_with("cluster: bad Redis URL \"redis://***@host:port\""),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "{err}");
        let err = settings(None, Some("redis://127.0.0.1"), Some("")).unwrap_err();
        assert_eq!(err, "cluster: the key is empty");
    }
}
