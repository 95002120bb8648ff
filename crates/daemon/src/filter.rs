//! `listen --events / --bot`: which events a listener delivers (the others are journaled,
//! acked and shown as skipped).

use meethook_proto::meeting::Summary;

/// Event types and bot ids to deliver; empty lists let everything through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Event types (`bot.status_change`, or a prefix glob `bot.*`).
    pub events: Vec<String>,
    /// Bot ids, or their first characters.
    pub bots: Vec<String>,
}

impl Filter {
    /// Whether anything is filtered (delivery then needs each summary before sending).
    pub fn is_active(&self) -> bool {
        !self.events.is_empty() || !self.bots.is_empty()
    }

    /// Whether an event with this summary is delivered.
    pub fn wants(&self, summary: Option<&Summary>) -> bool {
        let matches = |pattern: &str, value: &str| match pattern.strip_suffix('*') {
            Some(prefix) => value.starts_with(prefix),
            None => value == pattern,
        };
        let event_ok = self.events.is_empty()
            || summary.is_some_and(|s| self.events.iter().any(|p| matches(p, &s.event)));
        let bot_ok = self.bots.is_empty()
            || summary
                .and_then(|s| s.bot_id.as_deref())
                .is_some_and(|b| self.bots.iter().any(|p| b.starts_with(p.as_str())));
        event_ok && bot_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(event: &str, bot: &str) -> Summary {
        Summary {
            event: event.into(),
            bot_id: Some(bot.into()),
            ..Summary::default()
        }
    }

    #[test]
    fn globs_prefixes_and_unparsed_bodies() {
        let all = Filter::default();
        assert!(!all.is_active() && all.wants(None));
        let f = Filter {
            events: vec!["bot.*".into(), "complete".into()],
            bots: vec!["8d2f".into()],
        };
        assert!(f.wants(Some(&summary("bot.status_change", "8d2f4c1a"))));
        assert!(f.wants(Some(&summary("complete", "8d2f4c1a"))));
        assert!(!f.wants(Some(&summary("failed", "8d2f4c1a"))));
        assert!(!f.wants(Some(&summary("complete", "11112222"))));
        assert!(
            !f.wants(None),
            "a body that is not a webhook matches no event filter"
        );
    }
}
