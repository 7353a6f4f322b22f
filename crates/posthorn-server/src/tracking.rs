//! Tracking at send time: a copy's bodies rewritten by `posthorn-track`
//! (click URLs, the open pixel, `{{unsubscribe_url}}`), and its
//! `List-Unsubscribe` headers (RFC 2369, one-click per RFC 8058).

use crate::delivery::verp::VerpSigner;
use posthorn_core::DeliveryId;
use posthorn_core::config::Config;
use posthorn_store::{DeliveryRecord, MessageRecord};
use posthorn_track::{Key, RewriteOptions, SignedUrls, TokenKeys, TrackingChoice, TrackingUrls};

/// The tracker's keys and base URL.
pub struct Tracking {
    pub keys: TokenKeys,
    pub public_url: String,
}

/// A copy's bodies and headers with tracking applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedCopy {
    pub html: Option<String>,
    pub text: Option<String>,
    /// The original URLs of the tracked links, by index (the same for every
    /// copy of a message: the rewriting is deterministic).
    pub links: Vec<String>,
    /// `List-Unsubscribe` value: the https URL and the mailto address.
    pub list_unsubscribe: String,
}

impl Tracking {
    /// Keys from the server secret (signing) and the configured earlier
    /// secrets (still accepted). A key's id is derived from its secret, so
    /// tokens name the secret that signed them.
    pub fn new(secret: &[u8], config: &Config) -> Self {
        let previous = config
            .tracking
            .previous_secrets
            .iter()
            .map(|s| Key::from_secret(&s.0))
            .collect();
        Self {
            keys: TokenKeys {
                signing: Key::from_secret(secret),
                also_accepted: previous,
            },
            public_url: config.server.public_url(),
        }
    }

    pub fn urls<'a>(&'a self, delivery: &'a DeliveryId) -> SignedUrls<'a> {
        SignedUrls::new(&self.public_url, &self.keys, delivery)
    }

    /// The copy of `message` for `delivery` as it leaves. The unsubscribe
    /// mailto goes to the inbound MX at `mailto_domain`. A part the HTML
    /// rewriter cannot handle goes untracked rather than not at all.
    pub fn prepare(
        &self,
        message: &MessageRecord,
        delivery: &DeliveryRecord,
        choice: TrackingChoice,
        verp: &VerpSigner,
        mailto_domain: &str,
    ) -> TrackedCopy {
        let urls = self.urls(&delivery.id);
        let mut links = Vec::new();
        let mut next = 0;
        let html = message.content.html.as_deref().map(|html| {
            let options = RewriteOptions {
                track_opens: choice.opens,
                track_clicks: choice.clicks,
                first_link_index: 0,
            };
            match posthorn_track::rewrite_html(html, &options, &urls) {
                Ok(rewritten) => {
                    next = rewritten.next_link_index();
                    links.extend(rewritten.links);
                    rewritten.body
                }
                Err(e) => {
                    tracing::warn!(delivery = %delivery.id, error = %e, "HTML sent untracked");
                    html.to_owned()
                }
            }
        });
        let text = message.content.text.as_deref().map(|text| {
            let options = RewriteOptions {
                track_opens: false,
                track_clicks: choice.clicks && choice.text_links,
                first_link_index: next,
            };
            let rewritten = posthorn_track::rewrite_text(text, &options, &urls);
            links.extend(rewritten.links);
            rewritten.body
        });
        let mailto =
            posthorn_core::address::unsubscribe_address(&verp.token(&delivery.id), mailto_domain);
        TrackedCopy {
            html,
            text,
            links,
            list_unsubscribe: format!(
                "<{}>, <mailto:{mailto}?subject=unsubscribe>",
                urls.unsubscribe_url()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_rotate_through_previous_secrets() {
        let old = Tracking::new(b"old secret", &Config::default());
        let delivery = DeliveryId::generate();
        let token = old.urls(&delivery).open_url();
        let token = token.rsplit('/').next().unwrap().to_owned();

        let mut config = Config::default();
        config
            .tracking
            .previous_secrets
            .push(posthorn_core::config::HexSecret(b"old secret".to_vec()));
        let new = Tracking::new(b"new secret", &config);
        assert!(posthorn_track::verify(&new.keys, &token).is_some());
        let forgotten = Tracking::new(b"new secret", &Config::default());
        assert!(posthorn_track::verify(&forgotten.keys, &token).is_none());
    }
}
