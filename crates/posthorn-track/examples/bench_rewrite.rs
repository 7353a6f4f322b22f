//! Throughput of send-time rewriting and of tokens, on one core:
//!
//! ```text
//! cargo run --release -p posthorn-track --example bench_rewrite
//! ```
//!
//! A benchmark, not a test: it prints numbers and asserts nothing about time.

use posthorn_core::DeliveryId;
use posthorn_track::{
    Key, Purpose, RewriteOptions, SignedUrls, Target, TokenKeys, rewrite_html, rewrite_text, sign,
    verify_as,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// A newsletter shaped like the real ones: nested layout tables, inline
/// styles, an Outlook conditional comment, 30 links (28 tracked, a mailto
/// and the unsubscribe placeholder), about 20 KB.
fn newsletter() -> String {
    let mut html = String::from(
        "<!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\" \
         \"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\"><head>\
         <meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\" />\
         <title>Weekly news</title>\
         <!--[if mso]><style>table{border-collapse:collapse}td{font-family:Arial}</style><![endif]-->\
         <style>body{margin:0;padding:0}.btn{background:#06c;color:#fff}</style></head>\n\
         <body style=\"margin:0;padding:0;background:#f4f4f4\">\n\
         <table role=\"presentation\" width=\"100%\" cellpadding=\"0\" cellspacing=\"0\" border=\"0\">\n",
    );
    for i in 0..28 {
        html.push_str(&format!(
            "<tr><td style=\"padding:16px 24px;font-family:Helvetica,Arial,sans-serif;font-size:15px;\
             line-height:22px;color:#333333\">\n<table role=\"presentation\" width=\"100%\"><tr>\
             <td width=\"120\" valign=\"top\"><img src=\"https://cdn.example.com/img/{i}.jpg\" \
             width=\"120\" height=\"80\" alt=\"Story {i}\" style=\"display:block;border:0\" /></td>\
             <td valign=\"top\" style=\"padding-left:12px\"><h2 style=\"margin:0 0 8px;font-size:18px\">\
             Story number {i} of this week</h2>\n<p style=\"margin:0 0 8px\">Lorem ipsum dolor sit \
             amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore et dolore \
             magna aliqua &amp; more.</p>\n<a class=\"btn\" href=\"https://news.example.com/stories/{i}?\
             utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=weekly\" \
             style=\"color:#0066cc;text-decoration:underline\">Read more</a></td></tr></table>\n\
             </td></tr>\n"
        ));
    }
    html.push_str(
        "<tr><td style=\"padding:24px;font-size:12px;color:#888888\">\
         Questions? <a href=\"mailto:help@news.example.com\">Write to us</a>. \
         <a href=\"{{unsubscribe_url}}\">Unsubscribe</a>.</td></tr>\n</table>\n</body>\n</html>\n",
    );
    html
}

fn rate(iterations: u32, elapsed: Duration) -> f64 {
    f64::from(iterations) / elapsed.as_secs_f64()
}

/// Runs `f` for about `budget`, after a warm-up, and returns calls/s.
fn measure(budget: Duration, mut f: impl FnMut()) -> f64 {
    for _ in 0..50 {
        f();
    }
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        for _ in 0..10 {
            f();
        }
        n += 10;
    }
    rate(n, start.elapsed())
}

fn main() {
    let html = newsletter();
    let text = "Read this week's stories at https://news.example.com/stories/1 and \
                https://news.example.com/stories/2.\n\nUnsubscribe: {{unsubscribe_url}}\n"
        .repeat(4);
    let keys = TokenKeys {
        signing: Key::derive(2, b"bench server secret"),
        also_accepted: vec![Key::derive(1, b"old bench server secret")],
    };
    let delivery = DeliveryId::generate();
    let urls = SignedUrls::new("https://t.example.com", &keys, &delivery);
    let both = RewriteOptions {
        track_opens: true,
        track_clicks: true,
        first_link_index: 0,
    };
    let off = RewriteOptions::default();

    let sample = rewrite_html(&html, &both, &urls).expect("rewrites");
    let budget = Duration::from_secs(2);
    println!(
        "input: {} bytes of HTML, {} links tracked, output {} bytes",
        html.len(),
        sample.links.len(),
        sample.body.len()
    );

    let html_both = measure(budget, || {
        black_box(rewrite_html(black_box(&html), &both, &urls).expect("rewrites"));
    });
    let per_byte = html_both * html.len() as f64 / 1e6;
    println!(
        "rewrite_html, opens+clicks (signed URLs): {html_both:>9.0} rewrites/s  ({per_byte:.0} MB/s)"
    );
    let html_off = measure(budget, || {
        black_box(rewrite_html(black_box(&html), &off, &urls).expect("rewrites"));
    });
    println!("rewrite_html, tracking off (placeholder): {html_off:>9.0} rewrites/s");
    let text_both = measure(budget, || {
        black_box(rewrite_text(black_box(&text), &both, &urls));
    });
    println!(
        "rewrite_text, clicks ({} bytes):          {text_both:>9.0} rewrites/s",
        text.len()
    );

    let no_placeholder = html.replace("{{unsubscribe_url}}", "https://t.example.com/u/x");
    let np = measure(budget, || {
        black_box(rewrite_html(black_box(&no_placeholder), &both, &urls).expect("rewrites"));
    });
    println!("rewrite_html, opens+clicks, no placeholder: {np:>9.0} rewrites/s");
    let target = Target::Click(delivery.clone(), 17);
    let token = sign(&keys, &target);
    println!("click token: {} chars ({token})", token.len());
    let signs = measure(budget, || {
        black_box(sign(&keys, black_box(&target)));
    });
    println!("token sign:          {signs:>9.0} /s");
    let verifies = measure(budget, || {
        black_box(verify_as(&keys, black_box(&token), Purpose::Click)).expect("verifies");
    });
    println!("token verify:        {verifies:>9.0} /s");
    let round = measure(budget, || {
        let t = sign(&keys, black_box(&target));
        black_box(verify_as(&keys, &t, Purpose::Click)).expect("verifies");
    });
    println!("token sign+verify:   {round:>9.0} /s");
    let forged = format!("{}A{}", &token[..10], &token[11..]);
    let rejects = measure(budget, || {
        black_box(verify_as(&keys, black_box(&forged), Purpose::Click));
    });
    println!("token reject forged: {rejects:>9.0} /s");
}
