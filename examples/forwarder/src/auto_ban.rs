//! The config file's auto-ban keys: `auto_ban_refused` or
//! `auto_ban_connections` (events from one client within the window),
//! `auto_ban_within` (the window, seconds) and `auto_ban_for` (the ban,
//! seconds; default 600). Off unless one of the first two is above 0.

use std::time::Duration;

use monconn::AutoBan;

/// The keys as read from one service of the file.
#[derive(Debug, Default)]
pub struct Keys {
    pub refused: Option<u32>,
    pub connections: Option<u32>,
    pub within: Option<Duration>,
    pub ban_for: Option<Duration>,
}

/// The service's rule, or why the keys do not make one.
pub fn rule(keys: Keys) -> Result<Option<AutoBan>, String> {
    let count = |v: Option<u32>| v.filter(|n| *n > 0);
    let rule = match (count(keys.refused), count(keys.connections)) {
        (Some(_), Some(_)) => {
            return Err("auto_ban_refused and auto_ban_connections are both set: pick one".into())
        }
        (None, None) => {
            let stray = [
                ("auto_ban_within", keys.within.is_some()),
                ("auto_ban_for", keys.ban_for.is_some()),
            ];
            return match stray.iter().find(|(_, set)| *set) {
                Some((key, _)) => Err(format!(
                    "{key} is set but auto_ban_refused and auto_ban_connections are not"
                )),
                None => Ok(None),
            };
        }
        (Some(n), None) => AutoBan::after_refusals(n, Duration::ZERO),
        (None, Some(n)) => AutoBan::after_connections(n, Duration::ZERO),
    };
    let window = keys.within.filter(|w| !w.is_zero()).ok_or(
        "auto_ban needs auto_ban_within: the window, in seconds, that the events are counted in",
    )?;
    let mut rule = AutoBan { window, ..rule };
    if let Some(time) = keys.ban_for {
        if time.is_zero() {
            return Err("auto_ban_for must be more than 0".into());
        }
        rule = rule.ban_for(time);
    }
    Ok(Some(rule))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn spec(extra: &str) -> Result<Option<AutoBan>, String> {
        parse(&format!("a: {{listen_port: 1, backend_port: 2{extra}}}"))
            .map(|s| s[0].config.auto_ban)
    }

    #[test]
    fn keys_make_a_rule_or_name_what_is_wrong() {
        assert_eq!(spec("").unwrap(), None);
        assert_eq!(spec(", auto_ban_refused: 0").unwrap(), None);
        let rule = spec(", auto_ban_refused: 20, auto_ban_within: 10")
            .unwrap()
            .unwrap();
        assert_eq!(rule, AutoBan::after_refusals(20, Duration::from_secs(10)));
        let rule = spec(", auto_ban_connections: 50, auto_ban_within: 1, auto_ban_for: 30")
            .unwrap()
            .unwrap();
        assert_eq!(
            rule,
            AutoBan::after_connections(50, Duration::from_secs(1)).ban_for(Duration::from_secs(30))
        );
        for (extra, want) in [
            (", auto_ban_refused: 5", "service `a`: auto_ban needs auto_ban_within"),
            (
                ", auto_ban_refused: 5, auto_ban_connections: 5, auto_ban_within: 1",
                "service `a`: auto_ban_refused and auto_ban_connections are both set: pick one",
            ),
            (
                ", auto_ban_for: 60",
                "service `a`: auto_ban_for is set but auto_ban_refused and auto_ban_connections are not",
            ),
            (
                ", auto_ban_refused: 5, auto_ban_within: 1, auto_ban_for: 0",
                "service `a`: auto_ban_for must be more than 0",
            ),
            (", auto_ban_refused: -1", "a.auto_ban_refused"),
        ] {
            let err = spec(extra).unwrap_err();
            assert!(err.contains(want), "{extra}: {err}");
        }
    }
}
