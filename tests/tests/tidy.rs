//! Tidy checks over the source tree: every Rust file says what it is for in a leading `//!`
//! line, and glommio is used only by the shard runtime and the broker glue.

use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the repo root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            // Build output, vendored third-party code, and tool state are not ours.
            if matches!(
                name.as_ref(),
                "target" | "vendor" | ".git" | "node_modules" | ".venv"
            ) {
                continue;
            }
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_doc_line() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(
        files.len() > 20,
        "found only {} files under {}",
        files.len(),
        root.display()
    );
    let bad: Vec<_> = files
        .iter()
        .filter(|f| {
            let text = std::fs::read_to_string(f).unwrap_or_default();
            !text.trim_start().starts_with("//!")
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(bad.is_empty(), "files without a leading //! line: {bad:?}");
}

#[test]
fn glommio_only_in_shard_broker_glue_and_rpc() {
    let root = repo_root();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let allowed = [
        root.join("shard"),
        root.join("src/broker"),
        // The node-to-node transport: its sockets, timers and task queues (its framing and
        // envelope code is sans-IO).
        root.join("src/rpc"),
        // The drivers of the sans-IO Raft and metadata state machines (sluice-raft,
        // sluice-meta): the controller runtime and the partition replicas' store.
        root.join("src/cluster"),
        root.join("src/replica"),
        root.join("bench"),
    ];
    let bad: Vec<_> = files
        .iter()
        .filter(|f| !allowed.iter().any(|a| f.starts_with(a)))
        .filter(|f| {
            std::fs::read_to_string(f)
                .unwrap_or_default()
                .contains(concat!("glommio", "::"))
        })
        .map(|f| f.strip_prefix(&root).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        bad.is_empty(),
        "glommio used outside shard/, the broker glue and src/rpc: {bad:?}"
    );
    // The sans-IO crates must not even depend on it.
    for krate in [
        "src/codec/Cargo.toml",
        "src/storage/Cargo.toml",
        "src/security/Cargo.toml",
        "tuning/Cargo.toml",
    ] {
        let manifest = std::fs::read_to_string(root.join(krate)).expect("manifest");
        assert!(
            !manifest
                .lines()
                .any(|l| l.trim_start().starts_with("glommio")),
            "{krate} depends on glommio"
        );
    }
}
