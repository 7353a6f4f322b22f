//! The JSON body of every endpoint that takes one, through the service's
//! own router and handlers with the admin key: any bytes are taken or
//! refused with a 4xx error, never a panic or a 5xx.
//!
//! `POST /v1/domains` is the exception: its body is read by the function
//! its handler calls (`read_new_domain`), without the rest of the handler,
//! whose 2048-bit RSA key generation for every new domain the fuzzer
//! invents would take most of the fuzzing time and is not outside input.
//!
//! Input: the first byte picks the endpoint, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use posthorn_fuzz::{harness, request};

const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/messages"),
    ("POST", "/v1/events"),
    ("PUT", "/v1/contacts/ann@example.com"),
    ("PATCH", "/v1/settings"),
    ("POST", "/v1/domains"),
    ("POST", "/v1/ingest/sources"),
];

const DOMAINS: usize = 4;

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let pick = usize::from(pick) % ENDPOINTS.len();
    if pick == DOMAINS {
        if let Err(e) = posthorn_server::api::domains::read_new_domain(body) {
            assert!(e.status.is_client_error(), "{e:?}");
        }
        return;
    }
    let (method, path) = ENDPOINTS[pick];
    let h = harness();
    h.runtime.block_on(async {
        let (status, answer) = request(&h.router, method, path, &h.admin_key, body.to_vec()).await;
        let text = String::from_utf8_lossy(&answer);
        assert!(status < 500, "{method} {path} answered {status}: {text}");
        let json: serde_json::Value = serde_json::from_slice(&answer)
            .unwrap_or_else(|_| panic!("{method} {path} answered {status} without JSON: {text}"));
        if status >= 400 {
            assert!(json["error"]["code"].is_string(), "{status}: {text}");
        }
    });
});
