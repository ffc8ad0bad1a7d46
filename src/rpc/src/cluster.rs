//! The cluster part of the command-line contract (issue 12): `--rpc-listen HOST:PORT` and
//! `--voters ID@HOST:PORT,...` (Kafka's `controller.quorum.voters`), parsed and checked here
//! so the binary and the tests share one set of rules.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};

use crate::NodeId;

/// One member of the controller quorum: its node id and the address of its rpc listener as
/// *this* node reaches it (another node may be given another address for it, e.g. through a
/// proxy: peers are identified by the id they announce, never by address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Voter {
    pub id: NodeId,
    pub addr: SocketAddr,
}

impl fmt::Display for Voter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.addr)
    }
}

/// Largest node id: Kafka broker ids are int32 (Metadata carries them as such).
pub const NODE_ID_MAX: NodeId = i32::MAX as NodeId;

/// Parses a node id as `--voters` and `--node-id` take it in a cluster: 1..=[`NODE_ID_MAX`].
/// Zero is refused because raft-rs reserves id 0 ("no node"), so Kafka's usual `node.id=0`
/// cannot be a Raft member.
pub fn parse_node_id(s: &str) -> Result<NodeId, String> {
    let id: i64 = s
        .trim()
        .parse()
        .map_err(|_| format!("node id {s:?} is not a number"))?;
    if id < 1 || id > NODE_ID_MAX as i64 {
        return Err(format!(
            "node id {id} is out of range: ids run from 1 to {NODE_ID_MAX} (0 means \"no node\" to Raft)"
        ));
    }
    Ok(id as NodeId)
}

/// Resolves `HOST:PORT` to its first address (as `--listen` does).
pub fn resolve(hostport: &str) -> Result<SocketAddr, String> {
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport:?}: no address"))
}

/// Parses `--voters`: a comma-separated list of `ID@HOST:PORT`, at least one, with distinct
/// ids and distinct addresses (one listener cannot be two nodes).
pub fn parse_voters(s: &str) -> Result<Vec<Voter>, String> {
    let mut voters: Vec<Voter> = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            return Err(format!(
                "--voters {s:?}: empty entry (expected ID@HOST:PORT,...)"
            ));
        }
        let (id, hostport) = item
            .split_once('@')
            .ok_or_else(|| format!("--voters entry {item:?} is not ID@HOST:PORT"))?;
        let id = parse_node_id(id).map_err(|e| format!("--voters entry {item:?}: {e}"))?;
        let addr = resolve(hostport).map_err(|e| format!("--voters entry {item:?}: {e}"))?;
        if let Some(v) = voters.iter().find(|v| v.id == id) {
            return Err(format!("--voters names node {id} twice ({v} and {item})"));
        }
        if let Some(v) = voters.iter().find(|v| v.addr == addr) {
            return Err(format!(
                "--voters gives nodes {} and {id} the same address {addr}",
                v.id
            ));
        }
        voters.push(Voter { id, addr });
    }
    Ok(voters)
}

/// The checks across flags, once all are parsed. `node_id` is `--node-id` as given (Kafka's
/// int32). Without `--voters` the node is a cluster of one and `--rpc-listen` has no use, so
/// it is refused rather than silently ignored. With `--voters`, the node needs an rpc
/// listener and a Raft-valid id; it is a voter if its id is listed and a broker-only node
/// (replicas, no controller vote) otherwise.
pub fn check_cluster_flags(
    node_id: i32,
    rpc_listen: Option<SocketAddr>,
    voters: &[Voter],
) -> Result<(), String> {
    if voters.is_empty() {
        return match rpc_listen {
            Some(_) => Err(
                "--rpc-listen needs --voters (without --voters the node is a \
                            cluster of one and talks to no other node)"
                    .into(),
            ),
            None => Ok(()),
        };
    }
    if rpc_listen.is_none() {
        return Err(
            "--voters needs --rpc-listen HOST:PORT (the listener other nodes reach \
                    this one on)"
                .into(),
        );
    }
    if node_id < 1 {
        return Err(format!(
            "--node-id {node_id}: a node of a cluster (--voters) needs an id of at least 1 \
             (0 means \"no node\" to Raft)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_the_issue_example() {
        let v = parse_voters("1@127.0.0.1:33145,2@127.0.0.1:33146,3@127.0.0.1:33147").unwrap();
        assert_eq!(
            v,
            vec![
                Voter {
                    id: 1,
                    addr: addr("127.0.0.1:33145")
                },
                Voter {
                    id: 2,
                    addr: addr("127.0.0.1:33146")
                },
                Voter {
                    id: 3,
                    addr: addr("127.0.0.1:33147")
                },
            ]
        );
        assert_eq!(v[0].to_string(), "1@127.0.0.1:33145");
        // One voter is a valid quorum; spaces around entries are tolerated.
        assert_eq!(
            parse_voters(" 7@[::1]:9 ").unwrap()[0].addr,
            addr("[::1]:9")
        );
        assert_eq!(parse_voters("5@localhost:1").unwrap()[0].id, 5);
    }

    #[test]
    fn refuses_bad_voters() {
        for (bad, why) in [
            ("", "empty entry"),
            ("1@127.0.0.1:1,", "empty entry"),
            ("127.0.0.1:1", "is not ID@HOST:PORT"),
            ("x@127.0.0.1:1", "is not a number"),
            ("0@127.0.0.1:1", "out of range"),
            ("-1@127.0.0.1:1", "out of range"),
            ("2147483648@127.0.0.1:1", "out of range"),
            ("1@127.0.0.1", "1@127.0.0.1"),
            ("1@127.0.0.1:99999", "1@127.0.0.1:99999"),
            ("1@127.0.0.1:1,1@127.0.0.1:2", "names node 1 twice"),
            ("1@127.0.0.1:1,2@127.0.0.1:1", "the same address"),
        ] {
            let e = parse_voters(bad).expect_err(bad);
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        assert_eq!(parse_node_id("2147483647").unwrap(), NODE_ID_MAX);
    }

    #[test]
    fn checks_flags_together() {
        let v = parse_voters("1@127.0.0.1:1,2@127.0.0.1:2").unwrap();
        let rpc = Some(addr("127.0.0.1:1"));
        // No --voters: a cluster of one, as before; a lone --rpc-listen is refused.
        check_cluster_flags(0, None, &[]).unwrap();
        assert!(check_cluster_flags(0, rpc, &[])
            .unwrap_err()
            .contains("--rpc-listen needs --voters"));
        assert!(check_cluster_flags(1, None, &v)
            .unwrap_err()
            .contains("--voters needs --rpc-listen"));
        assert!(check_cluster_flags(0, rpc, &v)
            .unwrap_err()
            .contains("--node-id 0"));
        assert!(check_cluster_flags(-3, rpc, &v)
            .unwrap_err()
            .contains("--node-id -3"));
        // A voter, and a broker-only node (not in --voters).
        check_cluster_flags(1, rpc, &v).unwrap();
        check_cluster_flags(9, rpc, &v).unwrap();
    }
}
