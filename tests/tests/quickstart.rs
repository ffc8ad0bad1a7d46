//! The README's kcat quickstart, run as written (only the broker address is swapped for the
//! test broker's), so the documentation cannot drift from what works.

use std::process::Command;

use sluice_tests::{workspace_root, Broker};

/// The indented command lines of the README section "Quickstart with kcat".
fn quickstart_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let section = readme
        .split("## Quickstart with kcat")
        .nth(1)
        .expect("README has a 'Quickstart with kcat' section");
    let section = section.split("\n## ").next().unwrap_or(section);
    section
        .lines()
        .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('#'))
        .map(|l| l.trim().to_string())
        .filter(|l| l.contains("kcat"))
        .collect()
}

#[test]
fn readme_kcat_quickstart_works_as_written() {
    let commands = quickstart_commands();
    assert_eq!(
        commands.len(),
        3,
        "expected produce, consume, list: {commands:?}"
    );
    let broker = Broker::start();
    let mut outputs = Vec::new();
    for cmd in &commands {
        let cmd = cmd.replace("127.0.0.1:9092", &broker.bootstrap());
        let out = Command::new("bash")
            .arg("-c")
            // Bounded: a quickstart command that hangs is a failure, not a stuck suite.
            .arg(format!("timeout 60 {cmd}"))
            .output()
            .expect("run bash");
        assert!(
            out.status.success(),
            "`{cmd}` failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        outputs.push(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let consumed: Vec<&str> = outputs[1].lines().collect();
    assert_eq!(consumed, ["one", "two", "three"], "consume output");
    assert!(
        outputs[2].contains("topic \"greetings\" with 1 partitions"),
        "list output: {}",
        outputs[2]
    );
}
