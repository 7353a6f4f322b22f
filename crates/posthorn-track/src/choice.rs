//! What a copy tracks: each party that may have a say (the message, its
//! stream, its tenant, the server's default) is asked in that order, and
//! the first that speaks decides.

use posthorn_core::config::Config;

/// One party's say on tracking: `None` leaves it to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Say {
    pub opens: Option<bool>,
    pub clicks: Option<bool>,
}

/// What one copy tracks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackingChoice {
    pub opens: bool,
    pub clicks: bool,
    pub text_links: bool,
}

/// What a copy tracks: the message's say first, then its stream's, its
/// tenant's, and the server's default.
pub fn choice(config: &Config, stream: &str, message: Say, tenant: Say) -> TrackingChoice {
    let stream = config.streams.get(stream);
    TrackingChoice {
        opens: message
            .opens
            .or(stream.and_then(|s| s.track_opens))
            .or(tenant.opens)
            .unwrap_or(config.tracking.opens),
        clicks: message
            .clicks
            .or(stream.and_then(|s| s.track_clicks))
            .or(tenant.clicks)
            .unwrap_or(config.tracking.clicks),
        text_links: config.tracking.text_links,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use posthorn_core::config::StreamConfig;

    #[test]
    fn the_most_specific_choice_wins() {
        let opens = |config: &Config, message, tenant, stream| {
            choice(
                config,
                stream,
                Say {
                    opens: message,
                    clicks: None,
                },
                Say {
                    opens: tenant,
                    clicks: None,
                },
            )
            .opens
        };
        let mut config = Config::default();
        config.streams.insert(
            "news".into(),
            StreamConfig {
                track_clicks: Some(false),
                ..Default::default()
            },
        );
        assert!(opens(&config, None, None, "transactional"));
        assert!(!opens(&config, None, Some(false), "transactional"));
        assert!(opens(&config, Some(true), Some(false), "news"));
        let clicks = choice(
            &config,
            "news",
            Say::default(),
            Say {
                opens: None,
                clicks: Some(true),
            },
        );
        assert!(!clicks.clicks, "the stream's say comes before the tenant's");
        config.tracking.opens = false;
        assert!(!opens(&config, None, None, "news"));
    }
}
