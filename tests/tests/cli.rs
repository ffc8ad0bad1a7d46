//! The operator's CLI (`sluice topic|group|cluster …`) against real brokers: what each
//! command prints in text and JSON, its exit status and one-line errors, and agreement with
//! other clients (kcat reads what `topic produce` wrote, keys land where Kafka's murmur2
//! partitioner puts them, a kcat group member shows up in `group describe`), and its TLS and
//! SASL options against the broker's secured listeners.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use sluice_tests::cluster::{distinct_free_ports, Cluster};
use sluice_tests::tls::TestPki;
use sluice_tests::{poll_until, sluice_bin, workspace_root, Broker, BrokerConfig};

/// `sluice ARGS` with `--brokers` set through the environment and `stdin` fed in.
fn sluice(brokers: &str, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(sluice_bin())
        .args(args)
        .env("SLUICE_BROKERS", brokers)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sluice");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("sluice output")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs and requires success; returns stdout.
fn ok(brokers: &str, args: &[&str], stdin: &str) -> String {
    let out = sluice(brokers, args, stdin);
    assert!(
        out.status.success(),
        "sluice {args:?}: {}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// Runs and requires failure with one line on stderr containing `why`; returns the line.
fn fails(brokers: &str, args: &[&str], why: &str) -> String {
    let out = sluice(brokers, args, "");
    let err = text(&out.stderr);
    assert!(
        !out.status.success(),
        "sluice {args:?} succeeded: {}",
        text(&out.stdout)
    );
    assert_eq!(err.lines().count(), 1, "sluice {args:?}: one line: {err}");
    assert!(err.contains(why), "sluice {args:?}: {err}");
    err
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn topics_are_created_listed_described_altered_grown_and_deleted() {
    let broker = Broker::start();
    let b = &broker.bootstrap();
    let out = ok(
        b,
        &[
            "topic",
            "create",
            "orders",
            "-p",
            "3",
            "-c",
            "retention.ms=60000",
        ],
        "",
    );
    assert!(out.starts_with("TOPIC"), "a header line: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("orders") && l.ends_with("OK")),
        "{out}"
    );
    fails(b, &["topic", "create", "orders"], "TOPIC_ALREADY_EXISTS");

    let list = ok(b, &["topic", "list"], "");
    let line = list
        .lines()
        .find(|l| l.starts_with("orders"))
        .unwrap_or_else(|| panic!("orders listed: {list}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols, ["orders", "3", "1"], "name, partitions, replicas");
    assert!(list.starts_with("NAME"), "{list}");
    assert!(
        !list.contains("__consumer_offsets"),
        "internal topics hidden: {list}"
    );

    let d = json(&ok(
        b,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    ));
    assert_eq!(d["name"], "orders");
    let parts = d["partitions"].as_array().expect("partitions");
    assert_eq!(parts.len(), 3);
    for (i, p) in parts.iter().enumerate() {
        assert_eq!(p["partition"], i as i64);
        assert_eq!(p["leader"], 0);
        assert_eq!(p["replicas"], serde_json::json!([0]));
        assert_eq!(p["isr"], serde_json::json!([0]));
        assert_eq!(
            (p["log_start_offset"].as_i64(), p["log_end_offset"].as_i64()),
            (Some(0), Some(0))
        );
    }
    assert_eq!(d["configs"]["retention.ms"], "60000");
    assert_eq!(d["configs"]["cleanup.policy"], "delete");
    let described = ok(b, &["topic", "describe", "orders"], "");
    assert!(
        described.lines().any(|l| l.starts_with("retention.ms")
            && l.contains("60000")
            && l.ends_with("DYNAMIC_TOPIC_CONFIG")),
        "configs with their source: {described}"
    );
    assert!(described.contains("LOG-END-OFFSET"), "{described}");

    ok(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "cleanup.policy=compact",
            "--delete",
            "retention.ms",
        ],
        "",
    );
    let d = json(&ok(
        b,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    ));
    assert_eq!(d["configs"]["cleanup.policy"], "compact");
    assert_eq!(
        d["configs"]["retention.ms"], "604800000",
        "back to the default"
    );
    fails(
        b,
        &[
            "topic",
            "alter-config",
            "orders",
            "--set",
            "retention.ms=soon",
        ],
        "INVALID_CONFIG",
    );

    ok(b, &["topic", "add-partitions", "orders", "-n", "2"], "");
    let d = json(&ok(
        b,
        &["topic", "describe", "orders", "--format", "json"],
        "",
    ));
    assert_eq!(d["partitions"].as_array().map(Vec::len), Some(5));

    ok(b, &["topic", "delete", "orders"], "");
    let list = ok(b, &["topic", "list", "--format", "json"], "");
    assert_eq!(json(&list), serde_json::json!([]), "deleted: {list}");
    fails(
        b,
        &["topic", "describe", "orders"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
    fails(
        b,
        &["topic", "delete", "orders"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
}

#[test]
fn produce_and_consume_agree_with_kcat_and_kafkas_partitioner() {
    let broker = Broker::start();
    let b = &broker.bootstrap();
    ok(b, &["topic", "create", "keyed", "-p", "6"], "");
    ok(b, &["topic", "create", "by-kcat", "-p", "6"], "");
    let keys: Vec<String> = (0..40).map(|i| format!("key-{i}")).collect();
    let lines: String = keys
        .iter()
        .map(|k| format!("{k}\tvalue of {k}\n"))
        .collect();
    let out = sluice(b, &["topic", "produce", "keyed", "-k"], &lines);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("produced 40 records"),
        "{}",
        text(&out.stderr)
    );
    // The same keys through librdkafka's murmur2 partitioner (the Java client's default).
    let mut kcat = Command::new("kcat")
        .args([
            "-b",
            b,
            "-P",
            "-t",
            "by-kcat",
            "-K",
            "\t",
            "-X",
            "partitioner=murmur2_random",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kcat");
    kcat.stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(kcat.wait().unwrap().success());
    let placed = |topic: &str| -> Vec<String> {
        let out = Command::new("kcat")
            .args(["-b", b, "-C", "-t", topic, "-e", "-q", "-f", "%k %p %s\n"])
            .output()
            .expect("kcat -C");
        let mut v: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
        v.sort();
        v
    };
    let ours = placed("keyed");
    assert_eq!(ours.len(), 40, "{ours:?}");
    assert_eq!(
        ours,
        placed("by-kcat"),
        "keys land where Kafka's murmur2 puts them"
    );

    // Our consumer, kcat's format verbs and escapes.
    let out = ok(
        b,
        &[
            "topic",
            "consume",
            "keyed",
            "-n",
            "40",
            "--format",
            "%k\\t%v\\n",
        ],
        "",
    );
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    let mut want: Vec<String> = keys.iter().map(|k| format!("{k}\tvalue of {k}")).collect();
    want.sort();
    assert_eq!(got, want);

    // Tombstones, one partition, JSON lines, offsets and -e.
    ok(b, &["topic", "create", "t", "-p", "2"], "");
    ok(
        b,
        &[
            "topic",
            "produce",
            "t",
            "-k",
            "--tombstone-empty",
            "-p",
            "1",
            "--acks",
            "1",
        ],
        "a\t1\nb\t\nc\t3\n",
    );
    let out = Command::new("kcat")
        .args([
            "-b",
            b,
            "-C",
            "-t",
            "t",
            "-e",
            "-q",
            "-Z",
            "-f",
            "%p %o %k=%s\n",
        ])
        .output()
        .expect("kcat");
    assert_eq!(
        text(&out.stdout),
        "1 0 a=1\n1 1 b=NULL\n1 2 c=3\n",
        "kcat reads our records"
    );
    let out = ok(
        b,
        &["topic", "consume", "t", "-e", "-o", "1", "--format", "json"],
        "",
    );
    let records: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(records.len(), 2, "{out}");
    assert_eq!(records[0]["key"], "b");
    assert_eq!(records[0]["value"], serde_json::Value::Null, "a tombstone");
    assert_eq!(
        (
            records[1]["partition"].as_i64(),
            records[1]["offset"].as_i64()
        ),
        (Some(1), Some(2))
    );
    let out = ok(
        b,
        &[
            "topic", "consume", "t", "-e", "-o", "-1", "--format", "%o:%v\\n",
        ],
        "",
    );
    assert_eq!(out, "2:3\n", "one before the end");
    let out = ok(b, &["topic", "consume", "t", "-e", "-o", "end"], "");
    assert_eq!(out, "");
    let out = ok(
        b,
        &["topic", "consume", "t", "-e", "-o", "@4102444800000"],
        "",
    );
    assert_eq!(out, "", "nothing at or after 2100");
    let out = ok(
        b,
        &["topic", "consume", "t", "-e", "-o", "@0", "--format", "%k"],
        "",
    );
    assert_eq!(out, "abc");
    // acks=0 is fire-and-forget: the record arrives, nothing is answered.
    ok(
        b,
        &["topic", "produce", "t", "-p", "0", "--acks", "0"],
        "zero\n",
    );
    poll_until(Duration::from_secs(10), "the acks=0 record", || {
        let out = ok(b, &["topic", "consume", "t", "-e", "-p", "0"], "");
        (out == "zero\n").then_some(())
    });
    fails(
        b,
        &["topic", "produce", "nope"],
        "UNKNOWN_TOPIC_OR_PARTITION",
    );
    fails(b, &["topic", "produce", "t", "-p", "7"], "no partition 7");
}

#[test]
fn groups_are_listed_described_with_lag_seeked_and_deleted() {
    let broker = Broker::start();
    let b = &broker.bootstrap();
    ok(b, &["topic", "create", "events", "-p", "2"], "");
    let lines: String = (0..10).map(|i| format!("{i}\n")).collect();
    ok(b, &["topic", "produce", "events", "-p", "1"], &lines);
    // Read 4 records as group g1 (committed offsets, no membership).
    let out = ok(
        b,
        &["topic", "consume", "events", "-g", "g1", "-n", "4"],
        "",
    );
    assert_eq!(out, "0\n1\n2\n3\n");
    let list = ok(b, &["group", "list"], "");
    assert!(list.lines().any(|l| l.starts_with("g1")), "{list}");
    let d = json(&ok(b, &["group", "describe", "g1", "--format", "json"], ""));
    assert_eq!(d["state"], "Empty");
    let offsets = d["offsets"].as_array().expect("offsets");
    let p1 = offsets
        .iter()
        .find(|o| o["partition"] == 1)
        .expect("partition 1");
    assert_eq!(
        (
            p1["committed_offset"].as_i64(),
            p1["log_end_offset"].as_i64(),
            p1["lag"].as_i64()
        ),
        (Some(4), Some(10), Some(6))
    );
    let described = ok(b, &["group", "describe", "g1"], "");
    let header = described
        .lines()
        .find(|l| l.starts_with("TOPIC"))
        .expect("offsets table");
    assert!(header.split_whitespace().any(|c| c == "LAG"), "{described}");
    let row = described
        .lines()
        .find(|l| l.starts_with("events") && l.split_whitespace().nth(1) == Some("1"))
        .expect("events 1");
    let lag_col = header.split_whitespace().position(|c| c == "LAG").unwrap();
    assert_eq!(
        row.split_whitespace().nth(lag_col),
        Some("6"),
        "{described}"
    );
    // Continuing from the commit.
    let out = ok(b, &["topic", "consume", "events", "-g", "g1", "-e"], "");
    assert_eq!(out, "4\n5\n6\n7\n8\n9\n");

    // Seeking back, to an offset, by time.
    let out = ok(b, &["group", "seek", "g1", "--to", "start"], "");
    assert!(
        out.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["events", "1", "10", "0"]),
        "{out}"
    );
    ok(
        b,
        &["group", "seek", "g1", "--to", "7", "--topics", "events"],
        "",
    );
    let out = ok(b, &["topic", "consume", "events", "-g", "g1", "-e"], "");
    assert_eq!(out, "7\n8\n9\n");
    ok(b, &["group", "seek", "g1", "--to", "@0"], "");
    let d = json(&ok(b, &["group", "describe", "g1", "--format", "json"], ""));
    let p1 = d["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["partition"] == 1)
        .cloned();
    assert_eq!(p1.and_then(|p| p["lag"].as_i64()), Some(10));

    // A live member (kcat's balanced consumer): described with its assignment, and the
    // group cannot be seeked or deleted under it.
    let mut member = Command::new("kcat")
        .args(["-b", b, "-G", "live", "events", "-q", "-o", "beginning"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kcat -G");
    let d = poll_until(Duration::from_secs(30), "kcat's member is assigned", || {
        // GROUP_ID_NOT_FOUND until kcat has joined.
        let out = sluice(b, &["group", "describe", "live", "--format", "json"], "");
        if !out.status.success() {
            return None;
        }
        let d = json(&text(&out.stdout));
        let assigned = d["members"]
            .as_array()
            .and_then(|m| m.first())
            .and_then(|m| m["assignments"].as_array().map(Vec::len));
        (d["state"] == "Stable" && assigned == Some(2)).then_some(d)
    });
    assert_eq!(d["members"][0]["client_id"], "rdkafka");
    fails(
        b,
        &[
            "group", "seek", "live", "--to", "start", "--topics", "events",
        ],
        "committing",
    );
    fails(b, &["group", "delete", "live"], "NON_EMPTY_GROUP");
    let _ = member.kill();
    let _ = member.wait();

    ok(b, &["group", "delete", "g1"], "");
    let list = ok(b, &["group", "list"], "");
    assert!(!list.lines().any(|l| l.starts_with("g1 ")), "{list}");
    fails(b, &["group", "delete", "g1"], "GROUP_ID_NOT_FOUND");
}

#[test]
fn cluster_info_and_configs() {
    let broker = Broker::start();
    let b = &broker.bootstrap();
    let d = json(&ok(b, &["cluster", "info", "--format", "json"], ""));
    assert_eq!(d["controller"], 0);
    assert_eq!(d["brokers"][0]["id"], 0);
    assert_eq!(d["brokers"][0]["port"], broker.port() as i64);
    assert!(
        d["cluster_id"].as_str().is_some_and(|c| !c.is_empty()),
        "{d}"
    );
    let info = ok(b, &["cluster", "info"], "");
    assert!(info.contains(&broker.port().to_string()), "{info}");
    assert_eq!(
        ok(b, &["cluster", "config", "get", "log.retention.ms"], ""),
        "604800000\n"
    );
    ok(
        b,
        &["cluster", "config", "set", "log.retention.ms", "3600000"],
        "",
    );
    assert_eq!(
        ok(b, &["cluster", "config", "get", "log.retention.ms"], ""),
        "3600000\n"
    );
    fails(
        b,
        &["cluster", "config", "get", "no.such.config"],
        "no.such.config",
    );
}

#[test]
fn errors_are_one_line_and_every_command_has_help() {
    // Nothing listens on port 1.
    let e = fails(
        "127.0.0.1:1",
        &["topic", "list"],
        "cannot reach broker 127.0.0.1:1",
    );
    assert!(e.starts_with("sluice: "), "{e}");
    fails(
        "127.0.0.1:1",
        &["topic", "list", "--brokers", "127.0.0.1:1,127.0.0.1:2"],
        "127.0.0.1:2",
    );
    let out = sluice("127.0.0.1:1", &["topic", "list", "--frobnicate"], "");
    assert_eq!(out.status.code(), Some(2), "bad usage exits 2");
    assert!(text(&out.stderr).contains("--frobnicate"));
    let out = sluice("127.0.0.1:1", &["topic", "list", "--format", "yaml"], "");
    assert!(!out.status.success());
    for cmd in [
        "start",
        "verify",
        "users add",
        "tune",
        "topic create",
        "topic list",
        "topic describe",
        "topic delete",
        "topic alter-config",
        "topic add-partitions",
        "topic produce",
        "topic consume",
        "group list",
        "group describe",
        "group seek",
        "group delete",
        "cluster info",
        "cluster config get",
        "cluster config set",
    ] {
        let mut args: Vec<&str> = cmd.split(' ').collect();
        args.push("--help");
        let out = sluice("127.0.0.1:1", &args, "");
        assert!(out.status.success(), "{cmd} --help: {}", text(&out.stderr));
        assert!(text(&out.stdout).contains("Usage: sluice"), "{cmd} --help");
    }
}

#[test]
fn a_replicated_topic_is_described_with_its_replicas_and_isr() {
    sluice_tests::require_cluster!();
    let cluster = Cluster::start(3);
    let b = &cluster.bootstrap();
    // A topic of three replicas needs three registered brokers.
    poll_until(
        Duration::from_secs(60),
        "three brokers in cluster info",
        || {
            let info = json(&ok(b, &["cluster", "info", "--format", "json"], ""));
            (info["brokers"].as_array().map(Vec::len) == Some(3)).then_some(())
        },
    );
    ok(b, &["topic", "create", "rf3", "-p", "2", "-r", "3"], "");
    let d = poll_until(Duration::from_secs(30), "every replica in sync", || {
        let d = json(&ok(
            b,
            &["topic", "describe", "rf3", "--format", "json"],
            "",
        ));
        d["partitions"]
            .as_array()
            .is_some_and(|ps| {
                ps.len() == 2
                    && ps.iter().all(|p| {
                        p["isr"].as_array().map(Vec::len) == Some(3)
                            && p["leader"].as_i64() > Some(0)
                    })
            })
            .then_some(d)
    });
    for p in d["partitions"].as_array().unwrap() {
        let mut replicas: Vec<i64> = p["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_i64())
            .collect();
        replicas.sort();
        assert_eq!(replicas, [1, 2, 3]);
    }
    let lines: String = (0..20).map(|i| format!("{i}\n")).collect();
    ok(b, &["topic", "produce", "rf3"], &lines);
    let out = ok(
        b,
        &["topic", "consume", "rf3", "-e", "--format", "%v\\n"],
        "",
    );
    assert_eq!(out.lines().count(), 20, "{out}");
}

/// The README's CLI examples, run in order as written (with `sluice` on the PATH and the
/// broker through `SLUICE_BROKERS`), so the documentation cannot drift from what works.
#[test]
fn the_readmes_cli_examples_work_as_written() {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let section = readme
        .split("## The sluice CLI")
        .nth(1)
        .expect("README has a 'The sluice CLI' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let commands: Vec<&str> = section
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains("sluice "))
        .map(str::trim)
        .collect();
    assert!(commands.len() >= 14, "{commands:?}");
    let broker = Broker::start();
    let bin_dir = sluice_bin()
        .parent()
        .expect("the binary's directory")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut outputs = Vec::new();
    for cmd in &commands {
        let out = Command::new("bash")
            .arg("-c")
            .arg(format!("set -o pipefail; timeout 60 {cmd}"))
            .env("PATH", &path)
            .env("SLUICE_BROKERS", broker.bootstrap())
            .output()
            .expect("bash");
        assert!(
            out.status.success(),
            "`{cmd}`: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        outputs.push((cmd, text(&out.stdout)));
    }
    let consumed = outputs
        .iter()
        .find(|(c, _)| c.starts_with("sluice topic consume"))
        .map(|(_, o)| o.clone());
    assert_eq!(
        consumed.as_deref(),
        Some("k1\tv1\nk2\tv2\n"),
        "what the example consumed"
    );
}

#[test]
fn the_cli_speaks_tls_and_sasl_to_secured_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let ports = distinct_free_ports(3);
    let (plain, ssl, sasl_ssl) = (ports[0], ports[1], ports[2]);
    let mut broker = Broker::spawn_with(BrokerConfig {
        extra_args: vec![
            "--listen".into(),
            format!("127.0.0.1:{plain},ssl://127.0.0.1:{ssl},sasl_ssl://127.0.0.1:{sasl_ssl}"),
            "--tls-cert".into(),
            pki.server_cert.display().to_string(),
            "--tls-key".into(),
            pki.server_key.display().to_string(),
        ],
        port: Some(plain),
        pre_start: vec![[
            "users",
            "add",
            "--mechanism",
            "SCRAM-SHA-512",
            "--name",
            "admin",
            "--password",
            "s3cret",
        ]
        .map(String::from)
        .to_vec()],
        ..BrokerConfig::default()
    });
    broker.wait_ready();
    let ca = pki.ca.display().to_string();
    let ssl_addr = format!("127.0.0.1:{ssl}");
    let sasl_addr = format!("127.0.0.1:{sasl_ssl}");

    // TLS: create, produce and consume (the leader's address comes from the ssl listener).
    let tls = |args: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        v.extend(["--tls-ca".to_string(), ca.clone()]);
        v
    };
    let run = |addr: &str, args: Vec<String>, stdin: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ok(addr, &args, stdin)
    };
    run(
        &ssl_addr,
        tls(&["topic", "create", "secure", "-p", "2"]),
        "",
    );
    run(
        &ssl_addr,
        tls(&["topic", "produce", "secure", "-p", "0"]),
        "over tls\n",
    );

    // SASL_SSL with SCRAM-SHA-512, and PLAIN against the same credential.
    for mechanism in ["SCRAM-SHA-512", "PLAIN"] {
        let sasl = |args: &[&str]| -> Vec<String> {
            let mut v = tls(args);
            v.extend(
                [
                    "--sasl-mechanism",
                    mechanism,
                    "--user",
                    "admin",
                    "--password",
                    "s3cret",
                ]
                .map(String::from),
            );
            v
        };
        let list = run(&sasl_addr, sasl(&["topic", "list"]), "");
        assert!(
            list.lines().any(|l| l.starts_with("secure")),
            "{mechanism}: {list}"
        );
        run(
            &sasl_addr,
            sasl(&["topic", "produce", "secure", "-p", "0"]),
            &format!("{mechanism}\n"),
        );
    }
    let out = run(
        &ssl_addr,
        tls(&["topic", "consume", "secure", "-e", "-p", "0"]),
        "",
    );
    assert_eq!(out, "over tls\nSCRAM-SHA-512\nPLAIN\n");

    // Refusals, each one line: a wrong password, SASL missing, TLS missing, another CA.
    let args = |extra: &[&str]| -> Vec<String> { extra.iter().map(|a| a.to_string()).collect() };
    let refused = |addr: &str, a: Vec<String>, why: &str| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        fails(addr, &a, why)
    };
    refused(
        &sasl_addr,
        tls(&[
            "topic",
            "list",
            "--sasl-mechanism",
            "SCRAM-SHA-256",
            "--user",
            "admin",
            "--password",
            "nope",
        ]),
        "SASL_AUTHENTICATION_FAILED",
    );
    refused(
        &sasl_addr,
        tls(&[
            "topic",
            "list",
            "--sasl-mechanism",
            "PLAIN",
            "--user",
            "admin",
            "--password",
            "nope",
        ]),
        "SASL_AUTHENTICATION_FAILED",
    );
    refused(&sasl_addr, tls(&["topic", "list"]), "sluice: ");
    refused(&ssl_addr, args(&["topic", "list"]), "sluice: ");
    let other = pki.other_ca.display().to_string();
    refused(
        &ssl_addr,
        args(&["topic", "list", "--tls-ca", &other]),
        "TLS handshake",
    );
    refused(
        &ssl_addr,
        args(&[
            "topic",
            "list",
            "--sasl-mechanism",
            "GSSAPI",
            "--user",
            "a",
            "--password",
            "b",
        ]),
        "--sasl-mechanism GSSAPI",
    );
}

/// OffsetCommit and OffsetFetch v10 name topics by id (KIP-848's clients): a raw v10
/// commit by id is stored under the topic's name and read back by the CLI (which speaks
/// v10 itself: ids in its requests, answers named through Metadata), and an id no topic
/// has is answered UNKNOWN_TOPIC_ID for each of its partitions, storing nothing.
#[test]
fn offset_commit_and_fetch_v10_name_topics_by_id() {
    use sluice_tests::wire::connect;
    let broker = Broker::start();
    let b = &broker.bootstrap();
    ok(b, &["topic", "create", "by-id", "-p", "2"], "");
    ok(
        b,
        &["topic", "produce", "by-id", "-p", "0"],
        "a\nb\nc\nd\ne\nf\n",
    );
    let d = json(&ok(
        b,
        &["topic", "describe", "by-id", "--format", "json"],
        "",
    ));
    let id = uuid_bytes(d["id"].as_str().expect("topic id"));
    let unknown = [0x5a; 16];

    // The group coordinator exists once a client asked for it (FindCoordinator creates
    // the offsets topic): a CLI consumer in another group does.
    ok(
        b,
        &["topic", "consume", "by-id", "-g", "warm-up", "-n", "1"],
        "",
    );
    let mut s = connect(&broker);
    let answers = poll_until(Duration::from_secs(30), "the coordinator answers", || {
        let answers = commit_v10(&mut s, &[(id, 4), (unknown, 1)]);
        // NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS while it loads.
        (!answers.iter().any(|a| a.2 == 16 || a.2 == 14)).then_some(answers)
    });
    let mut expected = vec![(id, 0, 0), (unknown, 0, 100)]; // 100: UNKNOWN_TOPIC_ID
    expected.sort();
    assert_eq!(answers, expected);

    // Read back through the CLI (OffsetFetch v10): the commit is under the topic's name.
    let d = json(&ok(
        b,
        &["group", "describe", "by-id-group", "--format", "json"],
        "",
    ));
    let offsets = d["offsets"].as_array().expect("offsets");
    assert_eq!(offsets.len(), 1, "{d}");
    assert_eq!(offsets[0]["topic"], "by-id");
    assert_eq!(offsets[0]["partition"], 0);
    assert_eq!(offsets[0]["committed_offset"], 4);
    assert_eq!(offsets[0]["lag"], 2);
    // And the CLI's own v10 commit (a seek) lands by id too.
    ok(b, &["group", "seek", "by-id-group", "--to", "start"], "");
    let d = json(&ok(
        b,
        &["group", "describe", "by-id-group", "--format", "json"],
        "",
    ));
    let p0 = d["offsets"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["partition"] == 0).cloned());
    assert_eq!(
        p0.map(|p| p["committed_offset"].clone()),
        Some(0.into()),
        "{d}"
    );
}

/// Sends an OffsetCommit v10 (flexible: compact strings and arrays, tagged fields; header
/// v2) for group `by-id-group` outside its membership, committing partition 0 of each topic
/// id at its offset; the answers (topic id, partition, error code), sorted.
fn commit_v10(
    s: &mut std::net::TcpStream,
    topics: &[([u8; 16], i64)],
) -> Vec<([u8; 16], i32, i16)> {
    use sluice_tests::wire::{frame, read_response};
    let mut req = Vec::new();
    req.extend_from_slice(&8i16.to_be_bytes()); // OffsetCommit
    req.extend_from_slice(&10i16.to_be_bytes());
    req.extend_from_slice(&77i32.to_be_bytes());
    req.extend_from_slice(&1i16.to_be_bytes());
    req.push(b't'); // client id (a plain string in every header version)
    req.push(0); // header tagged fields
    compact_str(&mut req, "by-id-group");
    req.extend_from_slice(&(-1i32).to_be_bytes()); // generation: not a member
    compact_str(&mut req, ""); // member id
    req.push(0); // group instance id: null
    req.push(topics.len() as u8 + 1);
    for (topic, offset) in topics {
        req.extend_from_slice(topic);
        req.push(2); // 1 partition
        req.extend_from_slice(&0i32.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&(-1i32).to_be_bytes()); // leader epoch
        req.push(0); // metadata: null
        req.push(0); // partition tagged fields
        req.push(0); // topic tagged fields
    }
    req.push(0); // request tagged fields
    s.write_all(&frame(&req)).expect("send");
    let resp = read_response(s).expect("an OffsetCommit v10 answer");
    // Correlation id, header tagged fields, throttle time, then the topics.
    assert_eq!(&resp[..4], &77i32.to_be_bytes());
    let mut at = 4 + 1 + 4;
    let count = resp[at] as usize - 1;
    at += 1;
    let mut answers = Vec::new();
    for _ in 0..count {
        let topic: [u8; 16] = resp[at..at + 16].try_into().unwrap();
        at += 16;
        assert_eq!(resp[at], 2, "one partition: {resp:?}");
        at += 1;
        let partition = i32::from_be_bytes(resp[at..at + 4].try_into().unwrap());
        let code = i16::from_be_bytes(resp[at + 4..at + 6].try_into().unwrap());
        at += 6 + 1 + 1; // partition and topic tagged fields
        answers.push((topic, partition, code));
    }
    answers.sort();
    answers
}

fn compact_str(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 127, "one-byte varint length");
    out.push(s.len() as u8 + 1);
    out.extend_from_slice(s.as_bytes());
}

/// A UUID's 16 bytes from its hyphenated text.
fn uuid_bytes(text: &str) -> [u8; 16] {
    let hex: String = text.chars().filter(|c| *c != '-').collect();
    assert_eq!(hex.len(), 32, "{text}");
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex");
    }
    out
}

/// `group describe` of a KIP-848 group (librdkafka with `group.protocol=consumer`): the
/// group is described through ConsumerGroupDescribe, as type `consumer`, with its member,
/// the member's assignment of every partition, and committed offsets with their lag.
#[test]
fn a_kip848_group_is_described_with_its_members_and_assignments() {
    use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let broker = Broker::start();
    let b = broker.bootstrap();
    ok(&b, &["topic", "create", "kip848", "-p", "3"], "");
    ok(&b, &["topic", "produce", "kip848", "-p", "2"], "a\nb\nc\n");
    let stop = Arc::new(AtomicBool::new(false));
    let member = {
        let (b, stop) = (b.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut cfg = sluice_tests::kafka::base_config(&b);
            cfg.set("group.id", "kip848-described")
                .set("group.protocol", "consumer")
                .set("auto.offset.reset", "earliest")
                .set("enable.auto.commit", "false");
            let c: BaseConsumer = cfg.create().expect("consumer");
            c.subscribe(&["kip848"]).expect("subscribe");
            let mut read = 0;
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                    read += 1;
                    if read == 2 {
                        c.commit_consumer_state(CommitMode::Sync).expect("commit");
                    }
                }
            }
            c.unsubscribe();
        })
    };
    let d = poll_until(
        Duration::from_secs(30),
        "the member assigned and committed",
        || {
            let out = sluice(
                &b,
                &["group", "describe", "kip848-described", "--format", "json"],
                "",
            );
            if !out.status.success() {
                return None;
            }
            let d = json(&text(&out.stdout));
            let assigned = d["members"][0]["assignments"].as_array().map(Vec::len);
            let committed = d["offsets"]
                .as_array()
                .is_some_and(|o| o.iter().any(|o| o["committed_offset"].is_i64()));
            (assigned == Some(3) && committed).then_some(d)
        },
    );
    assert_eq!(d["type"], "consumer", "{d}");
    assert_eq!(d["state"], "Stable", "{d}");
    assert_eq!(d["members"].as_array().map(Vec::len), Some(1), "{d}");
    let p2 = d["offsets"]
        .as_array()
        .and_then(|o| o.iter().find(|o| o["partition"] == 2).cloned())
        .expect("partition 2's offset");
    assert_eq!(
        (p2["committed_offset"].as_i64(), p2["lag"].as_i64()),
        (Some(2), Some(1)),
        "{d}"
    );
    let text_out = ok(&b, &["group", "describe", "kip848-described"], "");
    assert!(text_out.contains("consumer"), "{text_out}");
    stop.store(true, Ordering::SeqCst);
    member.join().unwrap();
}
