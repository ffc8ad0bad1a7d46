//! Security listeners with real clients: `ssl` listeners beside `plaintext` ones (kcat and
//! kafka-python over TLS, Metadata naming the endpoints of the client's own listener),
//! handshakes that must fail cleanly (plaintext on a TLS port, garbage, a client trusting
//! another CA, a silent client), client certificates under `--tls-ca`, certificate reloads,
//! a cluster whose nodes each advertise their TLS listener, SASL users, ACLs enforced for
//! every kind of client, and client quotas throttling a producer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::cluster::{distinct_free_ports, gate, Cluster, ClusterConfig};
use sluice_tests::tls::TestPki;
use sluice_tests::{poll_until, workspace_root, Broker, BrokerConfig};

/// Bound on each kcat or Python client run.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The broker's bound on a TLS handshake (`tls_host::TLS_HANDSHAKE_MAX`), with slack.
const HANDSHAKE_CLOSE_WITHIN: Duration = Duration::from_secs(20);

/// Runs `cmd` with `stdin` as its input, killed after [`CLIENT_TIMEOUT`].
fn run(cmd: &mut Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        // cargo points the dynamic linker at rdkafka-sys's own librdkafka (built without
        // OpenSSL) for the tests; kcat must load the system's, which has TLS.
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let pid = child.id();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + CLIENT_TIMEOUT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: signal 0 only checks that the process exists.
            if unsafe { libc::kill(pid as i32, 0) } != 0 {
                return;
            }
        }
        // SAFETY: the child is ours; a late kill of an exited pid is harmless here (the
        // test holds it unreaped until wait_with_output below).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    let out = child.wait_with_output().expect("client output");
    let _ = writer.join();
    let _ = watchdog.join();
    out
}

/// kcat's TLS options for a client trusting `ca` (and presenting `cert`/`key`).
fn kcat_tls(ca: &Path, client: Option<(&Path, &Path)>) -> Vec<String> {
    let mut x = vec![
        "security.protocol=ssl".to_string(),
        format!("ssl.ca.location={}", ca.display()),
    ];
    if let Some((cert, key)) = client {
        x.push(format!("ssl.certificate.location={}", cert.display()));
        x.push(format!("ssl.key.location={}", key.display()));
    }
    x.into_iter().flat_map(|o| ["-X".to_string(), o]).collect()
}

/// `kcat -L -J` against `bootstrap`: the broker names in the metadata it got, or kcat's
/// stderr when it failed.
fn kcat_brokers(bootstrap: &str, tls: &[String]) -> Result<Vec<String>, String> {
    kcat_metadata(bootstrap, tls, 15)
}

/// kcat's error for a client the broker must refuse (librdkafka retries until its metadata
/// timeout, so a short one).
fn kcat_refused(bootstrap: &str, opts: &[String]) -> String {
    match kcat_metadata(bootstrap, opts, 3) {
        Ok(brokers) => panic!("{bootstrap} served a client it must refuse: {brokers:?}"),
        Err(e) => e,
    }
}

fn kcat_metadata(bootstrap: &str, tls: &[String], timeout_s: u32) -> Result<Vec<String>, String> {
    let out = run(
        Command::new("kcat")
            .args(["-b", bootstrap, "-L", "-J", "-m", &timeout_s.to_string()])
            .args(tls),
        b"",
    );
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("kcat -L -J output: {e}"))?;
    let mut names: Vec<String> = v["brokers"]
        .as_array()
        .ok_or("no brokers in kcat's metadata")?
        .iter()
        .filter_map(|b| {
            b["name"]
                .as_str()
                .map(|n| n.split('/').next().unwrap_or(n).to_string())
        })
        .collect();
    names.sort();
    Ok(names)
}

fn kcat_produce(bootstrap: &str, tls: &[String], topic: &str, lines: &[String]) {
    let input = lines.join("\n") + "\n";
    let out = run(
        Command::new("kcat")
            .args([
                "-b", bootstrap, "-P", "-t", topic, "-p", "0", "-X", "acks=all",
            ])
            .args(tls),
        input.as_bytes(),
    );
    assert!(
        out.status.success(),
        "kcat produce to {bootstrap}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn kcat_consume(bootstrap: &str, tls: &[String], topic: &str) -> Vec<String> {
    let out = run(
        Command::new("kcat")
            .args([
                "-b",
                bootstrap,
                "-C",
                "-t",
                topic,
                "-p",
                "0",
                "-o",
                "beginning",
                "-e",
                "-q",
            ])
            .args(tls),
        b"",
    );
    assert!(
        out.status.success(),
        "kcat consume from {bootstrap}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

/// What a raw connection to `port` gets back for `bytes` before the broker closes it
/// (`None`: still open after [`HANDSHAKE_CLOSE_WITHIN`]).
fn raw_exchange(port: u16, bytes: &[u8]) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(HANDSHAKE_CLOSE_WITHIN)).unwrap();
    s.write_all(bytes).expect("write");
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => Some(got),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => Some(got),
        Err(_) => None,
    }
}

/// A broker with a plaintext listener (the harness's port) and an `ssl` one serving `cert`.
fn tls_broker(cert: &Path, key: &Path, ssl_port: u16, extra: &[&str]) -> Broker {
    let port = distinct_free_ports(2)
        .into_iter()
        .find(|p| *p != ssl_port)
        .expect("a port");
    let mut args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port},ssl://127.0.0.1:{ssl_port}"),
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut b = Broker::spawn_with(BrokerConfig {
        extra_args: args,
        port: Some(port),
        ..BrokerConfig::default()
    });
    b.wait_ready();
    b
}

#[test]
fn ssl_listener_serves_kcat_and_kafka_python_and_refuses_bad_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let ssl_port = distinct_free_ports(1)[0];
    let broker = tls_broker(&pki.server_cert, &pki.server_key, ssl_port, &[]);
    let plain = broker.bootstrap();
    let ssl = format!("127.0.0.1:{ssl_port}");
    let tls = kcat_tls(&pki.ca, None);

    // A client that connects and says nothing is closed once the handshake bound passes;
    // it is opened first so that bound runs while the rest of the test does.
    let mut silent = TcpStream::connect(("127.0.0.1", ssl_port)).expect("connect");
    let silent_closed = std::thread::spawn(move || {
        let since = Instant::now();
        silent
            .set_read_timeout(Some(2 * HANDSHAKE_CLOSE_WITHIN))
            .unwrap();
        let mut buf = [0u8; 16];
        // Closed (end of stream or reset), or still open when the read timed out.
        let closed = loop {
            match silent.read(&mut buf) {
                Ok(0) => break true,
                Ok(_) => continue,
                Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        };
        (closed, since.elapsed())
    });

    // Each listener's clients are told the endpoints of their own listener.
    assert_eq!(kcat_brokers(&ssl, &tls).unwrap(), vec![ssl.clone()]);
    assert_eq!(kcat_brokers(&plain, &[]).unwrap(), vec![plain.clone()]);

    // Records written over TLS read back over TLS and over plaintext alike.
    let lines: Vec<String> = (0..500)
        .map(|i| format!("record-{i:04}-{}", "x".repeat(i % 300)))
        .collect();
    kcat_produce(&ssl, &tls, "tls-kcat", &lines);
    assert_eq!(kcat_consume(&ssl, &tls, "tls-kcat"), lines);
    assert_eq!(kcat_consume(&plain, &[], "tls-kcat"), lines);

    // kafka-python (Python's ssl module, not OpenSSL through librdkafka).
    let python = workspace_root().join("tests/.venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        python.display()
    );
    let out = run(
        Command::new(&python)
            .arg(workspace_root().join("tests/python/tls_client.py"))
            .args(["--bootstrap", &ssl, "--topic", "tls-python", "--cafile"])
            .arg(&pki.ca),
        b"",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kafka-python over TLS: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok brokers={ssl} records=200")),
        "kafka-python saw: {stdout}"
    );

    // Refused cleanly: a plaintext Kafka request on the TLS port gets no Kafka answer (at
    // most a TLS alert) and the connection closes.
    const API_VERSIONS_V0: [u8; 14] = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 1, 0xff, 0xff];
    let got = raw_exchange(ssl_port, &API_VERSIONS_V0).expect("closed");
    assert!(
        got.is_empty() || got[0] == 0x15,
        "plaintext on the TLS port got {got:?}"
    );
    // A TLS record header announcing a handshake, then garbage.
    let mut garbage = vec![0x16, 0x03, 0x01, 0x00, 0x40];
    garbage.extend((0..64u8).map(|i| i.wrapping_mul(37)));
    let got = raw_exchange(ssl_port, &garbage).expect("closed");
    assert!(got.is_empty() || got[0] == 0x15, "garbage got {got:?}");
    // A client that trusts another CA refuses the broker's certificate.
    let e = kcat_refused(&ssl, &kcat_tls(&pki.other_ca, None));
    assert!(
        e.contains("certificate verify failed") || e.contains("SSL handshake failed"),
        "kcat trusting another CA: {e}"
    );
    // A TLS client on the plaintext port fails too, and nothing else is disturbed.
    kcat_refused(&plain, &tls);

    // The silent client was closed by the handshake bound.
    let (closed, after) = silent_closed.join().expect("silent client thread");
    assert!(
        closed && after < HANDSHAKE_CLOSE_WITHIN,
        "a silent TLS client: closed {closed} after {after:?}"
    );

    // The broker is unaffected.
    assert_eq!(kcat_consume(&ssl, &tls, "tls-kcat").len(), lines.len());
    assert_eq!(kcat_brokers(&plain, &[]).unwrap(), vec![plain]);
}

#[test]
fn client_certificates_are_required_under_tls_ca_and_certificates_reload() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    // The broker reads copies, which the test then replaces.
    let (cert, key) = (dir.path().join("live.pem"), dir.path().join("live.key"));
    std::fs::copy(&pki.server_cert, &cert).unwrap();
    std::fs::copy(&pki.server_key, &key).unwrap();
    let ssl_port = distinct_free_ports(1)[0];
    let ca = pki.ca.display().to_string();
    let mut broker = tls_broker(&cert, &key, ssl_port, &["--tls-ca", &ca]);
    let ssl = format!("127.0.0.1:{ssl_port}");
    let with_cert = kcat_tls(&pki.ca, Some((&pki.client_cert, &pki.client_key)));

    // No client certificate: refused; with one the CA signed: served.
    kcat_refused(&ssl, &kcat_tls(&pki.ca, None));
    assert_eq!(kcat_brokers(&ssl, &with_cert).unwrap(), vec![ssl.clone()]);
    // The same with confluent-kafka (its wheel's own librdkafka and OpenSSL).
    let (ca_file, client_cert, client_key) = (
        pki.ca.display().to_string(),
        pki.client_cert.display().to_string(),
        pki.client_key.display().to_string(),
    );
    let confluent = [
        "--bootstrap",
        &ssl,
        "--topic",
        "mtls-confluent",
        "--cafile",
        &ca_file,
    ];
    let out = python_ok(
        "confluent_client.py",
        &[&confluent[..], &["--expect-refused"]].concat(),
    );
    assert!(
        out.contains("certificate required"),
        "confluent-kafka without a certificate: {out}"
    );
    let out = python_ok(
        "confluent_client.py",
        &[
            &confluent[..],
            &["--certfile", &client_cert, "--keyfile", &client_key],
        ]
        .concat(),
    );
    assert!(
        out.contains(&format!("ok brokers={ssl} records=200")),
        "confluent-kafka with a client certificate: {out}"
    );

    // The certificate files are replaced by ones of another CA: new connections get them
    // without a restart (the reloader looks every second).
    std::fs::copy(&pki.other_server_key, &key).unwrap();
    std::fs::copy(&pki.other_server_cert, &cert).unwrap();
    let other = kcat_tls(&pki.other_ca, Some((&pki.client_cert, &pki.client_key)));
    poll_until(
        Duration::from_secs(30),
        "the new certificate served",
        || kcat_brokers(&ssl, &other).ok(),
    );
    // The old CA no longer verifies the broker.
    kcat_refused(&ssl, &with_cert);

    // SIGHUP reloads at once (and does not stop the broker).
    let pid = broker.pid().expect("running");
    // SAFETY: sending a signal to the broker process this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
    poll_until(Duration::from_secs(30), "the SIGHUP reload logged", || {
        broker
            .stderr_log()
            .contains("reloaded (SIGHUP)")
            .then_some(())
    });
    assert!(broker.is_running());
    assert_eq!(kcat_brokers(&ssl, &other).unwrap(), vec![ssl]);
}

#[test]
fn every_node_of_a_cluster_advertises_its_tls_listener_and_speaks_tls_to_the_others() {
    if let Err(why) = gate() {
        panic!("{why}");
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let ssl_ports = distinct_free_ports(3);
    // `--rpc-tls`: node-to-node traffic (Raft, replication, forwarding) is mutual TLS with
    // the same certificate, checked against `--tls-ca` (which also makes the `ssl`
    // listeners ask clients for theirs).
    let mut c = Cluster::start_with(ClusterConfig {
        nodes: 3,
        extra_args: vec![
            "--tls-cert".to_string(),
            pki.server_cert.display().to_string(),
            "--tls-key".to_string(),
            pki.server_key.display().to_string(),
            "--tls-ca".to_string(),
            pki.ca.display().to_string(),
            "--rpc-tls".to_string(),
        ],
        node_args: ssl_ports
            .iter()
            .map(|p| {
                vec![
                    "--listen".to_string(),
                    format!("127.0.0.1:{{kafka_port}},ssl://127.0.0.1:{p}"),
                ]
            })
            .collect(),
        ..ClusterConfig::default()
    });
    let tls = kcat_tls(&pki.ca, Some((&pki.client_cert, &pki.client_key)));
    let mut want_ssl: Vec<String> = ssl_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    want_ssl.sort();
    let mut want_plain: Vec<String> = c.ids().map(|i| c.node(i).bootstrap()).collect();
    want_plain.sort();
    // Every node registers its listeners; each listener's clients see that listener of all.
    poll_until(
        Duration::from_secs(60),
        "every node's TLS listener advertised",
        || (kcat_brokers(&want_ssl[0], &tls).ok()? == want_ssl).then_some(()),
    );
    assert_eq!(
        kcat_brokers(&c.node(1).bootstrap(), &[]).unwrap(),
        want_plain
    );
    // Clients bootstrapped over TLS on any node reach the partition's leader (wherever
    // placement put it) through its TLS listener.
    let out = run(
        Command::new("kcat")
            .args(["-b", &want_ssl[0], "-L", "-t", "tls-cluster"])
            .args(&tls),
        b"",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = (0..300).map(|i| format!("cluster-{i}")).collect();
    poll_until(
        Duration::from_secs(60),
        "the topic's partition 0 has a leader",
        || {
            let out = run(
                Command::new("kcat")
                    .args(["-b", &want_ssl[1], "-L", "-t", "tls-cluster", "-J"])
                    .args(&tls),
                b"",
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
            (v["topics"][0]["partitions"][0]["leader"].as_i64()? > 0).then_some(())
        },
    );
    kcat_produce(&want_ssl[2], &tls, "tls-cluster", &lines);
    assert_eq!(kcat_consume(&want_ssl[1], &tls, "tls-cluster"), lines);
    assert_eq!(
        kcat_consume(&c.node(3).bootstrap(), &[], "tls-cluster"),
        lines
    );
    // The rpc listener speaks only TLS: a plaintext peer gets at most a TLS alert (record
    // type 21) and the connection closed, never an answer.
    let rpc = c.rpc_addr(2);
    let got = raw_exchange(rpc.port(), b"\0\0\0\x10not a tls hello!");
    assert!(
        matches!(&got, Some(b) if b.is_empty() || b[0] == 21),
        "a plaintext peer got {got:?}"
    );
}

/// kcat's options for SASL over `protocol` with `mechanism` as `user`.
fn kcat_sasl(
    protocol: &str,
    mechanism: &str,
    user: &str,
    password: &str,
    ca: &Path,
) -> Vec<String> {
    let mut x = vec![
        format!("security.protocol={protocol}"),
        format!("sasl.mechanisms={mechanism}"),
        format!("sasl.username={user}"),
        format!("sasl.password={password}"),
    ];
    if protocol.ends_with("ssl") {
        x.push(format!("ssl.ca.location={}", ca.display()));
    }
    x.into_iter().flat_map(|o| ["-X".to_string(), o]).collect()
}

fn users_add(mechanism: &str, name: &str, password: &str) -> Vec<String> {
    [
        "users",
        "add",
        "--mechanism",
        mechanism,
        "--name",
        name,
        "--password",
        password,
    ]
    .map(String::from)
    .to_vec()
}

/// A broker with a plaintext and a `sasl_plaintext` listener, the SCRAM-SHA-256 users
/// `(name, password)` made before its first start, and `extra` flags; with both ports.
fn sasl_broker(users: &[(&str, &str)], extra: &[String]) -> (Broker, u16, u16) {
    let ports = distinct_free_ports(2);
    let (port, sasl_port) = (ports[0], ports[1]);
    let mut extra_args = vec![
        "--listen".to_string(),
        format!("127.0.0.1:{port},sasl_plaintext://127.0.0.1:{sasl_port}"),
    ];
    extra_args.extend(extra.iter().cloned());
    let mut broker = Broker::spawn_with(BrokerConfig {
        extra_args,
        port: Some(port),
        pre_start: users
            .iter()
            .map(|(name, password)| users_add("SCRAM-SHA-256", name, password))
            .collect(),
        ..BrokerConfig::default()
    });
    broker.wait_ready();
    (broker, port, sasl_port)
}

/// Runs `tests/python/<script>` with `args` in the test venv; its output and exit code.
fn python(script: &str, args: &[&str]) -> (String, Option<i32>) {
    let out = run(
        Command::new(workspace_root().join("tests/.venv/bin/python"))
            .arg(workspace_root().join("tests/python").join(script))
            .args(args),
        b"",
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, out.status.code())
}

/// As [`python`], failing the test unless the script succeeds; its output.
fn python_ok(script: &str, args: &[&str]) -> String {
    let (out, code) = python(script, args);
    assert_eq!(code, Some(0), "{script} {args:?}:\n{out}");
    out
}

#[test]
fn sasl_scram_and_plain_authenticate_real_clients_and_refuse_bad_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let ports = distinct_free_ports(3);
    let (port, sasl_port, sasl_ssl_port) = (ports[0], ports[1], ports[2]);
    let mut broker = Broker::spawn_with(BrokerConfig {
        extra_args: vec![
            "--listen".into(),
            format!(
                "127.0.0.1:{port},sasl_plaintext://127.0.0.1:{sasl_port},\
                 sasl_ssl://127.0.0.1:{sasl_ssl_port}"
            ),
            "--tls-cert".into(),
            pki.server_cert.display().to_string(),
            "--tls-key".into(),
            pki.server_key.display().to_string(),
        ],
        port: Some(port),
        // Users exist before the first start (`sluice users add`).
        pre_start: vec![
            users_add("SCRAM-SHA-256", "admin", "admin-secret"),
            users_add("SCRAM-SHA-512", "alice", "alice-secret"),
        ],
        ..BrokerConfig::default()
    });
    broker.wait_ready();
    let sasl = format!("127.0.0.1:{sasl_port}");
    let sasl_ssl = format!("127.0.0.1:{sasl_ssl_port}");
    let admin = kcat_sasl(
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "admin",
        "admin-secret",
        &pki.ca,
    );
    let alice_ssl = kcat_sasl(
        "sasl_ssl",
        "SCRAM-SHA-512",
        "alice",
        "alice-secret",
        &pki.ca,
    );
    let alice_plain = kcat_sasl("sasl_plaintext", "PLAIN", "alice", "alice-secret", &pki.ca);

    // SCRAM-SHA-256 over plaintext, SCRAM-SHA-512 over TLS, PLAIN against a SCRAM
    // credential: each client sees the brokers of its own listener.
    assert_eq!(kcat_brokers(&sasl, &admin).unwrap(), vec![sasl.clone()]);
    assert_eq!(
        kcat_brokers(&sasl_ssl, &alice_ssl).unwrap(),
        vec![sasl_ssl.clone()]
    );
    assert_eq!(
        kcat_brokers(&sasl, &alice_plain).unwrap(),
        vec![sasl.clone()]
    );
    let lines: Vec<String> = (0..300).map(|i| format!("sasl-{i}")).collect();
    kcat_produce(&sasl, &admin, "sasl-topic", &lines);
    assert_eq!(kcat_consume(&sasl_ssl, &alice_ssl, "sasl-topic"), lines);
    assert_eq!(kcat_consume(&sasl, &alice_plain, "sasl-topic"), lines);

    // kafka-python: SCRAM-SHA-256 over SASL_SSL, and PLAIN over SASL_PLAINTEXT.
    let python = workspace_root().join("tests/.venv/bin/python");
    for (bootstrap, protocol, mechanism, user, password) in [
        (
            &sasl_ssl,
            "SASL_SSL",
            "SCRAM-SHA-256",
            "admin",
            "admin-secret",
        ),
        (&sasl, "SASL_PLAINTEXT", "PLAIN", "alice", "alice-secret"),
    ] {
        let out = run(
            Command::new(&python)
                .arg(workspace_root().join("tests/python/tls_client.py"))
                .args([
                    "--bootstrap",
                    bootstrap,
                    "--topic",
                    &format!("py-{mechanism}"),
                ])
                .args([
                    "--security-protocol",
                    protocol,
                    "--sasl-mechanism",
                    mechanism,
                ])
                .args(["--username", user, "--password", password, "--cafile"])
                .arg(&pki.ca),
            b"",
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains(&format!("ok brokers={bootstrap}")),
            "kafka-python {protocol} {mechanism}: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // confluent-kafka (its wheel's own librdkafka, OpenSSL and SASL): SCRAM-SHA-512 over
    // SASL_SSL, SCRAM-SHA-256 over SASL_PLAINTEXT, PLAIN over SASL_SSL; a wrong password
    // is refused.
    let ca = pki.ca.display().to_string();
    for (bootstrap, protocol, mechanism, user, password) in [
        (
            &sasl_ssl,
            "SASL_SSL",
            "SCRAM-SHA-512",
            "alice",
            "alice-secret",
        ),
        (
            &sasl,
            "SASL_PLAINTEXT",
            "SCRAM-SHA-256",
            "admin",
            "admin-secret",
        ),
        (&sasl_ssl, "SASL_SSL", "PLAIN", "alice", "alice-secret"),
    ] {
        let topic = format!("confluent-{mechanism}-{protocol}");
        let out = python_ok(
            "confluent_client.py",
            &[
                "--bootstrap",
                bootstrap,
                "--topic",
                &topic,
                "--security-protocol",
                protocol,
                "--sasl-mechanism",
                mechanism,
                "--username",
                user,
                "--password",
                password,
                "--cafile",
                &ca,
            ],
        );
        assert!(
            out.contains(&format!("ok brokers={bootstrap} records=200")),
            "confluent-kafka {protocol} {mechanism}: {out}"
        );
    }
    let out = python_ok(
        "confluent_client.py",
        &[
            "--bootstrap",
            &sasl_ssl,
            "--topic",
            "unused",
            "--security-protocol",
            "SASL_SSL",
            "--sasl-mechanism",
            "SCRAM-SHA-512",
            "--username",
            "alice",
            "--password",
            "nope",
            "--cafile",
            &ca,
            "--expect-refused",
        ],
    );
    assert!(
        out.contains("refused _AUTHENTICATION"),
        "confluent-kafka, wrong password: {out}"
    );

    // Refused: wrong passwords, an unknown user, a mechanism the user has no credential
    // for, and a client that skips authentication.
    for (what, opts) in [
        (
            "wrong SCRAM password",
            kcat_sasl("sasl_plaintext", "SCRAM-SHA-256", "admin", "nope", &pki.ca),
        ),
        (
            "wrong PLAIN password",
            kcat_sasl("sasl_plaintext", "PLAIN", "alice", "nope", &pki.ca),
        ),
        (
            "unknown user",
            kcat_sasl("sasl_plaintext", "SCRAM-SHA-512", "mallory", "x", &pki.ca),
        ),
        (
            "no such credential",
            kcat_sasl(
                "sasl_plaintext",
                "SCRAM-SHA-256",
                "alice",
                "alice-secret",
                &pki.ca,
            ),
        ),
    ] {
        let e = kcat_refused(&sasl, &opts);
        assert!(e.contains("Authentication failed"), "{what}: {e}");
    }
    // Metadata v1 (no topics) before authenticating: closed without an answer.
    let metadata = [0, 0, 0, 14, 0, 3, 0, 1, 0, 0, 0, 7, 0xff, 0xff, 0, 0, 0, 0];
    assert_eq!(raw_exchange(sasl_port, &metadata), Some(Vec::new()));
    // A plaintext client on the SASL port without SASL: same.
    kcat_refused(&sasl, &[]);

    // Users managed over the wire (kafka-python's AlterUserScramCredentials and
    // DescribeUserScramCredentials, as kafka-configs.sh uses them): bob is added, alice's
    // SCRAM-SHA-512 credential removed; a removal of what is not there is refused.
    let admin_py = |extra: &[&str]| -> serde_json::Value {
        let out = run(
            Command::new(&python)
                .arg(workspace_root().join("tests/python/scram_admin.py"))
                .args([
                    "--bootstrap",
                    &sasl,
                    "--security-protocol",
                    "SASL_PLAINTEXT",
                ])
                .args(["--sasl-mechanism", "SCRAM-SHA-256", "--username", "admin"])
                .args(["--password", "admin-secret"])
                .args(extra),
            b"",
        );
        assert!(
            out.status.success(),
            "scram_admin.py {extra:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("scram_admin.py JSON")
    };
    let v = admin_py(&[
        "--upsert",
        "bob:SCRAM-SHA-256:bob-secret",
        "--delete",
        "alice:SCRAM-SHA-512",
        "carol:SCRAM-SHA-256",
        "--describe",
    ]);
    assert_eq!(v["alter"]["bob"], serde_json::Value::Null, "{v}");
    assert_eq!(v["alter"]["alice"], serde_json::Value::Null, "{v}");
    assert!(
        v["alter"]["carol"]
            .as_str()
            .unwrap_or("")
            .contains("does not exist"),
        "{v}"
    );
    let users: Vec<&String> = v["describe"]
        .as_object()
        .expect("described")
        .keys()
        .collect();
    assert_eq!(users, ["admin", "bob"], "{v}");
    let v = admin_py(&["--describe", "alice"]);
    assert!(v["describe"]["alice"]["error"].is_string(), "{v}");
    let bob = kcat_sasl(
        "sasl_plaintext",
        "SCRAM-SHA-256",
        "bob",
        "bob-secret",
        &pki.ca,
    );
    assert_eq!(kcat_brokers(&sasl, &bob).unwrap(), vec![sasl.clone()]);
    let e = kcat_refused(&sasl_ssl, &alice_ssl);
    assert!(
        e.contains("Authentication failed"),
        "alice was removed: {e}"
    );

    // Credentials are cluster metadata: they survive kill -9.
    broker.kill9();
    broker.restart();
    assert_eq!(kcat_brokers(&sasl, &admin).unwrap(), vec![sasl.clone()]);
    assert_eq!(kcat_consume(&sasl, &bob, "sasl-topic"), lines);
    kcat_refused(&sasl_ssl, &alice_ssl);
    assert!(
        !broker
            .data_dir()
            .join("scram-credentials.pending.json")
            .exists(),
        "the pending credentials were handed over"
    );
}

#[test]
fn acls_authorize_every_client_as_kafka_does_and_survive_a_restart() {
    let users = [
        ("admin", "admin-secret"),
        ("alice", "alice-secret"),
        ("bob", "bob-secret"),
    ];
    let flags = ["--authorizer", "acl", "--super-users", "User:admin"].map(String::from);
    let (mut broker, port, sasl_port) = sasl_broker(&users, &flags);
    let (sasl, plain) = (
        format!("127.0.0.1:{sasl_port}"),
        format!("127.0.0.1:{port}"),
    );
    let check = |phase: &str| {
        python_ok(
            "acl_check.py",
            &["--sasl", &sasl, "--plain", &plain, "--phase", phase],
        )
    };
    check("grant");
    // ACLs are cluster metadata: they survive kill -9.
    broker.kill9();
    broker.restart();
    check("persisted");
}

#[test]
fn client_quotas_throttle_a_producer_and_survive_a_restart() {
    let users = [
        ("admin", "admin-secret"),
        ("alice", "alice-secret"),
        ("bob", "bob-secret"),
    ];
    let (mut broker, _, sasl_port) = sasl_broker(&users, &[]);
    let sasl = format!("127.0.0.1:{sasl_port}");
    let check =
        |phase: &str| python_ok("quota_check.py", &["--bootstrap", &sasl, "--phase", phase]);
    // alice at 1 MiB/s takes at least 8 s for 10 MiB and sees throttle times; bob, who
    // has no quota, sees none; an IP's connection rate holds (lower bounds and counts:
    // nothing here races the clock).
    check("throttle");
    // Quotas are cluster metadata: they survive kill -9.
    broker.kill9();
    broker.restart();
    check("persisted");
}

#[test]
fn a_node_wide_connection_creation_rate_delays_accepts_without_refusing_them() {
    // KIP-612's max.connection.creation.rate: over it the broker accepts more slowly (the
    // connections wait in the backlog); it refuses none, unlike an IP's own quota.
    const RATE: u32 = 10;
    const CONNECTIONS: u32 = 30;
    let mut broker = Broker::spawn_with(BrokerConfig {
        extra_args: vec!["--max-connection-creation-rate".into(), RATE.to_string()],
        ..BrokerConfig::default()
    });
    broker.wait_ready();
    let port = broker.port();
    let started = Instant::now();
    let clients: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
                // ApiVersions v0 with correlation id i.
                let mut req = vec![0, 0, 0, 10, 0, 18, 0, 0];
                req.extend_from_slice(&(i as i32).to_be_bytes());
                req.extend_from_slice(&[0xff, 0xff]);
                s.write_all(&req).expect("write");
                let mut head = [0u8; 8];
                s.read_exact(&mut head).expect("an answer, not a refusal");
                assert_eq!(head[4..8], (i as i32).to_be_bytes());
                Instant::now()
            })
        })
        .collect();
    let answered: Vec<Instant> = clients
        .into_iter()
        .map(|c| c.join().expect("client"))
        .collect();
    let last = answered.iter().max().unwrap().duration_since(started);
    // A second's burst passes at once; the other 20 take 2 s at 10 a second. A lower bound
    // only: nothing here races the clock.
    let least = Duration::from_secs_f64(f64::from(CONNECTIONS - RATE - 1) / f64::from(RATE));
    assert!(
        last >= least.mul_f64(0.8),
        "{CONNECTIONS} connections at {RATE}/s were all answered after {last:?}"
    );
}

/// SaslHandshake v1 and SaslAuthenticate v1 with PLAIN on `s`: the authentication's error
/// code and the session lifetime the broker gave; `None` if it closed the connection.
fn plain_auth(s: &mut TcpStream, user: &str, password: &str) -> Option<(i16, i64)> {
    use sluice_tests::wire::{frame, header, read_response, Dec, Enc};
    let mut req = header(17, 1, 1);
    req.extend_from_slice(&Enc::new().str("PLAIN").0);
    s.write_all(&frame(&req)).ok()?;
    let resp = read_response(s)?;
    assert_eq!(Dec::new(&resp[4..]).i16(), 0, "SaslHandshake");
    let token = format!("\0{user}\0{password}");
    let mut req = header(36, 1, 2);
    req.extend_from_slice(&Enc::new().bytes(token.as_bytes()).0);
    s.write_all(&frame(&req)).ok()?;
    let resp = read_response(s)?;
    let mut d = Dec::new(&resp[4..]);
    let code = d.i16();
    d.nstr();
    d.bytes();
    Some((code, d.i64()))
}

#[test]
fn sasl_sessions_expire_unless_the_client_re_authenticates() {
    use sluice_tests::wire::{closed, metadata_v1};
    let users = [("alice", "alice-secret"), ("bob", "bob-secret")];
    let flags = ["--connections-max-reauth-ms", "1500"].map(String::from);
    let (mut broker, _, sasl_port) = sasl_broker(&users, &flags);
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", sasl_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    };
    let lifetime = Duration::from_millis(1600);

    // The session's lifetime is announced; re-authenticating as the same user renews it.
    let mut s = connect();
    assert_eq!(plain_auth(&mut s, "alice", "alice-secret"), Some((0, 1500)));
    assert!(metadata_v1(&mut s, None).is_some());
    assert_eq!(plain_auth(&mut s, "alice", "alice-secret"), Some((0, 1500)));
    assert!(metadata_v1(&mut s, None).is_some());
    // Past its lifetime, a request that is not a re-authentication closes the connection.
    std::thread::sleep(lifetime);
    assert!(metadata_v1(&mut s, None).is_none());
    assert!(closed(&mut s));

    // After expiry, re-authenticating is still allowed and serves on.
    let mut s = connect();
    assert_eq!(plain_auth(&mut s, "alice", "alice-secret"), Some((0, 1500)));
    std::thread::sleep(lifetime);
    assert_eq!(plain_auth(&mut s, "alice", "alice-secret"), Some((0, 1500)));
    assert!(metadata_v1(&mut s, None).is_some());

    // The principal may not change: re-authenticating as bob fails and closes.
    let mut s = connect();
    assert_eq!(plain_auth(&mut s, "alice", "alice-secret"), Some((0, 1500)));
    assert_eq!(
        plain_auth(&mut s, "bob", "bob-secret").map(|r| r.0),
        Some(58)
    );
    assert!(closed(&mut s));

    // kafka-python re-authenticates on its own and never sees its connection dropped.
    let stdout = python_ok(
        "reauth_client.py",
        &[
            "--bootstrap",
            &format!("127.0.0.1:{sasl_port}"),
            "--username",
            "alice",
            "--password",
            "alice-secret",
            "--topic",
            "reauth",
        ],
    );
    let authentications: usize = stdout
        .lines()
        .find_map(|l| l.strip_prefix("AUTHENTICATIONS "))
        .and_then(|n| n.parse().ok())
        .expect("AUTHENTICATIONS line");
    // 5 s of 1.5 s sessions: the first authentication and at least two renewals.
    assert!(authentications >= 3, "{stdout}");
    broker.kill9();
}

/// An OAuth issuer for tests: an ES256 key, its JWKS, and tokens it signs.
struct Issuer {
    key: ring::signature::EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    kid: String,
}

impl Issuer {
    fn new(kid: &str) -> Issuer {
        use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING as ALG};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ALG, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ALG, pkcs8.as_ref(), &rng).unwrap();
        Issuer {
            key,
            rng,
            kid: kid.into(),
        }
    }

    fn jwks(&self) -> String {
        use base64::Engine;
        use ring::signature::KeyPair;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let p = self.key.public_key().as_ref();
        serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "use": "sig",
            "kid": self.kid, "x": b64.encode(&p[1..33]), "y": b64.encode(&p[33..65])}]})
        .to_string()
    }

    /// A token for `sub` expiring `exp_in_s` seconds from now, for `aud`.
    fn token(&self, sub: &str, exp_in_s: i64, aud: &str) -> String {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let h = b64
            .encode(serde_json::json!({"alg": "ES256", "kid": self.kid, "typ": "JWT"}).to_string());
        let p = b64.encode(
            serde_json::json!({"sub": sub, "exp": now + exp_in_s, "iat": now - 5,
                "aud": aud, "iss": "https://issuer.test"})
            .to_string(),
        );
        let signed = format!("{h}.{p}");
        let sig = self.key.sign(&self.rng, signed.as_bytes()).unwrap();
        format!("{signed}.{}", b64.encode(sig.as_ref()))
    }
}

/// `oauth_client.py` logging in with `token` on the SASL listener at `port` and producing
/// once: its output (`OAUTH OK`, or `AUTH FAILED` and why).
fn oauth_login(port: u16, token: &str) -> String {
    let bootstrap = format!("127.0.0.1:{port}");
    let (out, code) = python(
        "oauth_client.py",
        &[
            "--bootstrap",
            &bootstrap,
            "--token",
            token,
            "--topic",
            "oauth",
        ],
    );
    assert!(matches!(code, Some(0) | Some(3)), "oauth_client.py: {out}");
    out
}

#[test]
fn oauthbearer_tokens_are_validated_against_the_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    let issuer = Issuer::new("k1");
    std::fs::write(&jwks, issuer.jwks()).unwrap();
    let flags = [
        "--sasl-oauthbearer-jwks-endpoint-url".to_string(),
        format!("file://{}", jwks.display()),
        "--sasl-oauthbearer-expected-audience".into(),
        "sluice".into(),
        "--sasl-oauthbearer-expected-issuer".into(),
        "https://issuer.test".into(),
    ];
    let (broker, _, sasl_port) = sasl_broker(&[], &flags);
    let client = |token: &str| oauth_login(sasl_port, token);
    assert!(client(&issuer.token("alice", 3600, "sluice")).contains("OAUTH OK"));
    // Expired (beyond the 30 s clock skew), another audience, another signer: refused,
    // for the reason the broker logs.
    for (bad, why) in [
        (
            issuer.token("alice", -60, "sluice"),
            "The token has expired",
        ),
        (
            issuer.token("alice", 3600, "elsewhere"),
            "The token's audience is not one this broker expects",
        ),
        (
            Issuer::new("k1").token("alice", 3600, "sluice"),
            "The token's signature does not verify",
        ),
    ] {
        let out = client(&bad);
        assert!(out.contains("AUTH FAILED"), "{out}");
        assert!(broker.stderr_log().contains(why), "no log of {why:?}");
    }
    // A new key set is picked up when the file changes (looked at once a second): polled
    // until a token of the new key passes.
    let rotated = Issuer::new("k2");
    std::fs::write(&jwks, rotated.jwks()).unwrap();
    let token = rotated.token("alice", 3600, "sluice");
    poll_until(Duration::from_secs(10), "the rotated key accepted", || {
        client(&token).contains("OAUTH OK").then_some(())
    });
}

/// A test issuer's JWKS endpoint: `tests/python/https_files.py` serving `dir` over https
/// with the test PKI's broker certificate (for 127.0.0.1); killed on drop.
struct HttpsFiles {
    child: std::process::Child,
    port: u16,
}

impl HttpsFiles {
    fn start(dir: &std::path::Path, pki: &TestPki) -> HttpsFiles {
        use std::io::BufRead;
        let mut child = Command::new(workspace_root().join("tests/.venv/bin/python"))
            .arg(workspace_root().join("tests/python/https_files.py"))
            .arg("--dir")
            .arg(dir)
            .arg("--cert")
            .arg(&pki.server_cert)
            .arg("--key")
            .arg(&pki.server_key)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("https_files.py");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("its port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("https_files.py printed {line:?}"));
        HttpsFiles { child, port }
    }
}

impl Drop for HttpsFiles {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An https JWKS endpoint (Kafka's usual setting): the keys are fetched at start, a
/// rotated key set is picked up (a token naming the new key asks for an early refresh;
/// the periodic refresh is set to 1 s here), and an endpoint whose certificate does not
/// chain to the configured CA gives no keys: logins fail, saying why, and the node serves.
#[test]
fn oauthbearer_keys_come_from_an_https_jwks_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let pki = TestPki::generate(dir.path());
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let issuer = Issuer::new("k1");
    std::fs::write(www.join("jwks.json"), issuer.jwks()).unwrap();
    let server = HttpsFiles::start(&www, &pki);
    let url = format!("https://127.0.0.1:{}/jwks.json", server.port);
    let flags = |ca: &std::path::Path| {
        vec![
            "--sasl-oauthbearer-jwks-endpoint-url".to_string(),
            url.clone(),
            "--sasl-oauthbearer-jwks-ca".into(),
            ca.display().to_string(),
            "--sasl-oauthbearer-jwks-endpoint-refresh-ms".into(),
            "1000".into(),
            "--sasl-oauthbearer-expected-audience".into(),
            "sluice".into(),
        ]
    };
    let (broker, _, sasl_port) = sasl_broker(&[], &flags(&pki.ca));
    let client = |token: &str| oauth_login(sasl_port, token);
    assert!(client(&issuer.token("alice", 3600, "sluice")).contains("OAUTH OK"));
    assert!(broker.stderr_log().contains("fetched the JWKS"));
    let rotated = Issuer::new("k2");
    std::fs::write(www.join("jwks.json"), rotated.jwks()).unwrap();
    let token = rotated.token("alice", 3600, "sluice");
    poll_until(Duration::from_secs(20), "the rotated key accepted", || {
        client(&token).contains("OAUTH OK").then_some(())
    });
    drop(broker);

    // The endpoint's certificate does not chain to this CA: no keys, and the log says so.
    let (broker, _, sasl_port) = sasl_broker(&[], &flags(&pki.other_ca));
    let out = oauth_login(sasl_port, &rotated.token("alice", 3600, "sluice"));
    assert!(out.contains("AUTH FAILED"), "{out}");
    let log = broker.stderr_log();
    assert!(log.contains("no keys until the JWKS is fetched"), "{log}");
}

/// A Fetch naming a replica id is a follower's (Kafka checks CLUSTER_ACTION on the cluster
/// for it); sluice's followers replicate over the rpc listener, so a client's such fetch
/// reads nothing: TOPIC_AUTHORIZATION_FAILED without CLUSTER_ACTION, NOT_LEADER_OR_FOLLOWER
/// with it (no Kafka-protocol follower is known), while the same user's consumer fetch
/// reads.
#[test]
fn a_fetch_as_a_follower_needs_cluster_action_and_reads_nothing() {
    use sluice_tests::wire::{create_by_metadata, fetch_as, produce, record_batch};
    let users = [("admin", "admin-secret"), ("alice", "alice-secret")];
    let flags = ["--authorizer", "acl", "--super-users", "User:admin"].map(String::from);
    let (broker, _, sasl_port) = sasl_broker(&users, &flags);
    let connect = |user: &str, password: &str| {
        let mut s = TcpStream::connect(("127.0.0.1", sasl_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        assert_eq!(plain_auth(&mut s, user, password).map(|r| r.0), Some(0));
        s
    };
    let mut admin = connect("admin", "admin-secret");
    create_by_metadata(&mut admin, "followed");
    let batch = record_batch(&[b"x"], sluice_tests::wire::now_ms());
    poll_until(Duration::from_secs(10), "the topic takes writes", || {
        (produce(&mut admin, 7, "followed", 0, -1, 5000, &batch) == 0).then_some(())
    });
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
    let (code, hw, records) = fetch_as(&mut admin, "followed", 0, 0, -1);
    assert_eq!((code, hw), (0, 1), "a consumer's fetch reads");
    assert!(!records.is_empty());
    let (code, _, records) = fetch_as(&mut admin, "followed", 0, 0, 2);
    assert_eq!(
        code, NOT_LEADER_OR_FOLLOWER,
        "CLUSTER_ACTION, but no such follower"
    );
    assert!(records.is_empty());
    let mut alice = connect("alice", "alice-secret");
    let (code, _, records) = fetch_as(&mut alice, "followed", 0, 0, 2);
    assert_eq!(code, TOPIC_AUTHORIZATION_FAILED, "no CLUSTER_ACTION");
    assert!(records.is_empty());
    drop(broker);
}

/// Delegation tokens (KIP-48) over raw requests (tests/python/token_check.py): created,
/// described, renewed and expired with Kafka's checks and codes from SASL-authenticated
/// connections, refused on the plaintext listener; the HMAC is Kafka's; tokens are
/// controller records, so they survive kill -9.
#[test]
fn delegation_tokens_are_created_described_renewed_and_expired() {
    let users = [("admin", "admin-secret"), ("bob", "bob-secret")];
    let secret = "token-signing-secret";
    let flags = [
        "--authorizer",
        "acl",
        "--super-users",
        "User:admin",
        "--delegation-token-secret-key",
        secret,
        "--delegation-token-expiry-time-ms",
        "60000",
        "--delegation-token-max-lifetime-ms",
        "3600000",
    ]
    .map(String::from);
    let (mut broker, port, sasl_port) = sasl_broker(&users, &flags);
    let (sasl, plain) = (
        format!("127.0.0.1:{sasl_port}"),
        format!("127.0.0.1:{port}"),
    );
    let check = |phase: &str| {
        python_ok(
            "token_check.py",
            &[
                "--sasl", &sasl, "--plain", &plain, "--secret", secret, "--phase", phase,
            ],
        )
    };
    check("create");
    broker.kill9();
    broker.restart();
    check("persisted");
    drop(broker);
    // Without a secret key the token APIs are off.
    let (_off, port, sasl_port) = sasl_broker(&users, &[]);
    python_ok(
        "token_check.py",
        &[
            "--sasl",
            &format!("127.0.0.1:{sasl_port}"),
            "--plain",
            &format!("127.0.0.1:{port}"),
            "--secret",
            secret,
            "--phase",
            "disabled",
        ],
    );
}
