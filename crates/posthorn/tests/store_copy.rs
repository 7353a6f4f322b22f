//! `posthorn store copy` as users run it: a data directory made by the
//! binary itself (tenants, a DKIM key file) copied into an empty
//! PostgreSQL database (`POSTHORN_TEST_POSTGRES`), then refused into the
//! same database again and into a URL that is not PostgreSQL, with a
//! non-zero exit each time.

mod common;

use common::BIN;
use posthorn_testkit::postgres::TestDatabase;
use std::process::Command;

fn posthorn(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env("POSTHORN_LOG", "warn")
        .output()
        .expect("run posthorn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn store_copy_moves_a_data_directory_into_postgres_once() {
    let Some(db) = TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    for tenant in ["acme", "other"] {
        let (ok, _, err) = posthorn(&["keys", "create", "--tenant", tenant, "--data-dir", data]);
        assert!(ok, "{err}");
    }

    // A DKIM key whose record is published: every node on the database
    // must sign with it after the move.
    let (ok, _, err) = posthorn(&[
        "domains",
        "add",
        "sender.example",
        "--tenant",
        "acme",
        "--data-dir",
        data,
    ]);
    assert!(ok, "{err}");
    let key_file = dir.path().join("data/dkim/sender.example.posthorn.pem");
    let pem = std::fs::read_to_string(&key_file).unwrap();

    // The node's secret: links and return paths it signed must keep
    // verifying on the nodes that share the database after the move.
    let secret = "ab".repeat(32);
    std::fs::write(dir.path().join("data/secret.key"), format!("{secret}\n")).unwrap();

    let (ok, out, err) = posthorn(&["store", "copy", "--from", data, "--to", db.url()]);
    assert!(ok, "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("the counts of every table match"), "{out}");
    assert!(out.contains("as the server secret"), "{out}");
    let tenants = out
        .lines()
        .find(|l| l.trim_start().starts_with("tenants "))
        .unwrap_or_else(|| panic!("a line for tenants:\n{out}"));
    assert_eq!(tenants.split_whitespace().last(), Some("2"), "{out}");
    assert!(err.contains("rows/s"), "progress on stderr:\n{err}");
    let mut c = db.client();
    let keys: i64 = c
        .query_one("SELECT COUNT(*) FROM api_keys", &[])
        .unwrap()
        .get(0);
    assert_eq!(keys, 2);
    let kept: Vec<u8> = c
        .query_one(
            "SELECT value FROM shared_secrets WHERE name = 'server'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(hex::encode(kept), secret);
    let dkim = out
        .lines()
        .find(|l| l.trim_start().starts_with("dkim_keys "))
        .unwrap_or_else(|| panic!("a line for dkim_keys:\n{out}"));
    assert_eq!(dkim.split_whitespace().last(), Some("1"), "{out}");
    let copied: Vec<(String, String, String)> = c
        .query(
            "SELECT domain, selector, private_key_pem FROM dkim_keys",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        copied,
        [("sender.example".into(), "posthorn".into(), pem.clone())]
    );
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        pem,
        "the source data directory is left as it was"
    );

    let (ok, out, err) = posthorn(&["store", "copy", "--from", data, "--to", db.url()]);
    assert!(!ok, "a second copy is refused:\n{out}");
    assert!(err.contains("not empty"), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    let tenants: i64 = c
        .query_one("SELECT COUNT(*) FROM tenants", &[])
        .unwrap()
        .get(0);
    assert_eq!(tenants, 2);

    let (ok, _, err) = posthorn(&[
        "store",
        "copy",
        "--from",
        data,
        "--to",
        "mysql://root@127.0.0.1/posthorn",
    ]);
    assert!(!ok);
    assert!(err.contains("postgres://"), "{err}");
}
