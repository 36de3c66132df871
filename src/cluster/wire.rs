//! The shared list in Redis: one sorted set per service
//! (`{key}:bans:{sid}`, each net scored by its expiry in unix ms, `+inf`
//! for none) and one channel (`{key}:bans`) carrying each change as JSON.

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::registry::NEVER;

/// One change on the channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Delta {
    /// The instance that made it (it skips its own).
    pub(super) from: u64,
    pub(super) sid: String,
    pub(super) net: IpNet,
    /// Expiry in unix ms (`None`: none); ignored for an unban.
    pub(super) until: Option<u64>,
    #[serde(default)]
    pub(super) unban: bool,
}

/// The sorted set of `sid`'s bans.
pub(super) fn set_key(key: &str, sid: &str) -> String {
    format!("{key}:bans:{sid}")
}

/// The channel of every change.
pub(super) fn channel(key: &str) -> String {
    format!("{key}:bans")
}

/// A score for an expiry.
pub(super) fn score(until: Option<u64>) -> String {
    match until {
        Some(ms) if ms != NEVER => ms.to_string(),
        _ => "+inf".to_owned(),
    }
}

/// An expiry from a score.
pub(super) fn until(score: &str) -> Option<u64> {
    match score {
        "inf" | "+inf" => Some(NEVER),
        s => s
            .parse::<f64>()
            .ok()
            .filter(|v| *v >= 0.0)
            .map(|v| v as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_round_trip() {
        assert_eq!(
            until(&score(Some(1_700_000_000_123))),
            Some(1_700_000_000_123)
        );
        assert_eq!(until(&score(None)), Some(NEVER));
        assert_eq!(until("inf"), Some(NEVER));
        assert_eq!(until("1.7e12"), Some(1_700_000_000_000));
        assert_eq!(until("nope"), None);
        let delta = Delta {
            from: 7,
            sid: "web".into(),
            net: "10.0.0.0/8".parse().unwrap(),
            until: Some(5),
            unban: false,
        };
        let json = serde_json::to_string(&delta).unwrap();
        assert_eq!(
            json,
            r#"{"from":7,"sid":"web","net":"10.0.0.0/8","until":5,"unban":false}"#
        );
        assert_eq!(serde_json::from_str::<Delta>(&json).unwrap(), delta);
    }
}
