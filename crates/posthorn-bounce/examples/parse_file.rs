//! Prints the records `posthorn_bounce::parse` reads from each file named
//! on the command line, as JSON lines: for looking at one message.
//!
//! `cargo run -p posthorn-bounce --example parse_file -- message.eml`

fn main() {
    for path in std::env::args().skip(1) {
        match std::fs::read(&path) {
            Ok(raw) => {
                for record in posthorn_bounce::parse(&raw) {
                    let json = serde_json::to_string(&record).unwrap_or_default();
                    println!("{path}: {json}");
                }
            }
            Err(e) => eprintln!("{path}: {e}"),
        }
    }
}
