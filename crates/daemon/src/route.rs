//! `[[route]]` in `meethook.toml`: which handler an event goes to, each route with its own
//! timeout, attempts, order and parallelism. The first route that matches takes the event;
//! with none, `--forward-to` does, or else the event is journaled as unrouted.

use std::time::Duration;

use meethook_proto::meeting::Summary;

use crate::filter::Filter;
use crate::order::Order;

/// The route name journaled for an event no route took (no route may be named so).
pub const UNROUTED: &str = "unrouted";

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its name in the live lines, `events list` and the inspector.
    pub name: String,
    /// Event types (`bot.*` globs) and bot ids it takes; empty lists take any.
    pub filter: Filter,
    /// Sub-path it takes (`/calendar` takes `/calendar`, `/calendar/x` and
    /// `/calendar?x=1`; `/cal*` any path starting so); `None` takes any.
    pub path: Option<String>,
    /// Its handler.
    pub forward_to: String,
    /// Per-request timeout (`None`: `--timeout`).
    pub timeout: Option<Duration>,
    /// Attempts before giving up (`None`: `--max-attempts`).
    pub max_attempts: Option<u32>,
    /// What goes one at a time within it (`None`: `--order`).
    pub order: Option<Order>,
    /// Most sends at once under a keyed order (`None`: `--parallel`).
    pub parallel: Option<usize>,
}

impl Route {
    /// Whether an event with this summary, on this sub-path, takes this route.
    pub fn matches(&self, summary: Option<&Summary>, path: &str) -> bool {
        self.filter.wants(summary) && self.path.as_deref().is_none_or(|p| path_matches(p, path))
    }
}

fn path_matches(pattern: &str, path: &str) -> bool {
    let path = path.split_once('?').map_or(path, |(p, _)| p);
    match pattern.strip_suffix('*') {
        Some(prefix) => path.starts_with(prefix),
        None => {
            let pattern = pattern.trim_end_matches('/');
            path == pattern
                || path
                    .strip_prefix(pattern)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_bots_and_paths() {
        let r = Route {
            name: "bots".into(),
            filter: Filter {
                events: vec!["bot.*".into()],
                bots: vec![],
            },
            path: Some("/hooks".into()),
            forward_to: "http://127.0.0.1:1".into(),
            timeout: None,
            max_attempts: None,
            order: None,
            parallel: None,
        };
        let s = Summary {
            event: "bot.status_change".into(),
            ..Summary::default()
        };
        assert!(r.matches(Some(&s), "/hooks"));
        assert!(r.matches(Some(&s), "/hooks/x?y=1"));
        assert!(!r.matches(Some(&s), "/hooksy"));
        assert!(!r.matches(None, "/hooks"), "not a bot event");
        assert!(path_matches("/cal*", "/calendar/1"));
        assert!(path_matches("/", "/anything"));
    }
}
