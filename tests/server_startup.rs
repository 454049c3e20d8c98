//! Starting the real binary: a second server on a held data directory or a taken port is
//! refused with a message that says why; SIGTERM stops the server cleanly.
#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    unreachable_pub
)] // a test: a failed expectation is the test failing

mod common;

use std::process::Command;

fn run_server(args: &[&str]) -> (bool, String) {
    let out = Command::new(common::bin())
        .arg("server")
        .args(args)
        .output()
        .expect("run streamcell");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test]
async fn refuses_a_locked_data_dir_and_a_taken_port_then_stops_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut server = common::Server::start(&data, &[]).await;

    let other_port = common::free_port().to_string();
    let (ok, err) = run_server(&[
        "--data-dir",
        data.to_str().expect("utf8"),
        "--port",
        &other_port,
    ]);
    assert!(!ok);
    assert!(err.contains("locked by another running server"), "{err}");

    let other_dir = dir.path().join("other");
    let port = server.port.to_string();
    let (ok, err) = run_server(&[
        "--data-dir",
        other_dir.to_str().expect("utf8"),
        "--port",
        &port,
    ]);
    assert!(!ok);
    assert!(
        err.contains("Address already in use") && err.contains("--port"),
        "{err}"
    );

    assert!(
        server.stop(),
        "SIGTERM should stop the server with status 0"
    );
    assert!(server.log_text().contains("stopped cleanly"));
    // The lock is released with the process.
    server.restart().await;
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "port = \"not a number\"\n").expect("write");
    let (ok, err) = run_server(&["--config", cfg.to_str().expect("utf8")]);
    assert!(!ok);
    assert!(err.contains("bad.toml") && err.contains("port"), "{err}");
    let d = dir.path().join("d");
    let d = d.to_str().expect("utf8");
    for (args, needle) in [
        (vec!["--max-record-size", "10"], "max-record-size"),
        (
            vec!["--max-record-size", "18446744073709551615"],
            "max-record-size",
        ),
        (vec!["--retention-check-secs", "0"], "retention-check-secs"),
        (vec!["--sync", "interval:0"], "sync interval"),
        (
            vec!["--advertised-address", "robot 7"],
            "advertised-address",
        ),
        (
            vec!["--advertised-address", "host:9999"],
            "advertised-address",
        ),
    ] {
        let mut all = vec!["--data-dir", d, "--port", "0"];
        all.extend(args.iter().copied());
        let (ok, err) = run_server(&all);
        assert!(!ok, "{args:?} was accepted");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    std::fs::write(&cfg, "data_dir = \"\"\n").expect("write");
    let (ok, err) = run_server(&["--config", cfg.to_str().expect("utf8"), "--port", "0"]);
    assert!(!ok);
    assert!(err.contains("data-dir is empty"), "{err}");
}
