//! Authorization on the request path (`--authorizer acl`): the node's authorizer, rebuilt
//! from the committed ACLs whenever they change, and each shard's cache of decisions in
//! front of it, so a produce or fetch decides with one hash lookup and no lock.
//!
//! Invariants:
//! - Without `--authorizer acl` nothing is checked and nothing here is consulted.
//! - Every shard decides from the newest authorizer the node has adopted: a change bumps
//!   the generation, which every decision reads (one atomic load) before its cache, so a
//!   CreateAcls or DeleteAcls answered after this node adopted it is in force on every
//!   shard for the next request (the handlers wait for adoption before answering).
//! - A shard's cache holds at most [`DECISIONS_MAX`] decisions and is emptied whole when
//!   full or when the generation moves.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_meta::acl::{AclBinding, AclOperation, ResourceType, CLUSTER_NAME};
use sluice_security::Authorizer;

use crate::config::BrokerConfig;
use crate::conn::Client;
use crate::shard::BrokerShard;

/// Decisions a shard remembers.
pub const DECISIONS_MAX: usize = 4096;

struct Current {
    generation: u64,
    bindings: Arc<BTreeSet<AclBinding>>,
    authorizer: Arc<Authorizer>,
}

/// The node's committed ACLs and the authorizer built from them (in `Shared`).
pub struct AclStore {
    generation: AtomicU64,
    current: Mutex<Current>,
    super_users: Vec<String>,
    allow_if_no_acl: bool,
}

impl AclStore {
    pub fn new(config: &BrokerConfig) -> AclStore {
        AclStore {
            generation: AtomicU64::new(0),
            current: Mutex::new(Current {
                generation: 0,
                bindings: Arc::default(),
                authorizer: Arc::new(Authorizer::new(
                    [],
                    &config.super_users,
                    config.allow_everyone_if_no_acl_found,
                )),
            }),
            super_users: config.super_users.clone(),
            allow_if_no_acl: config.allow_everyone_if_no_acl_found,
        }
    }

    /// Adopts the image's ACLs (a no-op when they did not change).
    pub fn set(&self, acls: &BTreeSet<AclBinding>) {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if *cur.bindings == *acls {
            return;
        }
        cur.authorizer = Arc::new(Authorizer::new(
            acls,
            &self.super_users,
            self.allow_if_no_acl,
        ));
        cur.bindings = Arc::new(acls.clone());
        cur.generation += 1;
        self.generation.store(cur.generation, Ordering::Release);
    }

    /// The committed bindings (DescribeAcls).
    pub fn bindings(&self) -> Arc<BTreeSet<AclBinding>> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .bindings
            .clone()
    }

    fn current(&self) -> (u64, Arc<Authorizer>) {
        let cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (cur.generation, cur.authorizer.clone())
    }
}

struct Cache {
    generation: u64,
    authorizer: Arc<Authorizer>,
    decisions: HashMap<String, bool>,
    /// The key being looked up, reused so a hit allocates nothing.
    key: String,
}

/// One shard's view of the authorizer and its decision cache.
pub struct ShardAuthz {
    enabled: bool,
    cache: RefCell<Cache>,
}

impl ShardAuthz {
    pub fn new(config: &BrokerConfig) -> ShardAuthz {
        ShardAuthz {
            enabled: config.authorizer,
            cache: RefCell::new(Cache {
                generation: u64::MAX,
                authorizer: Arc::new(Authorizer::default()),
                decisions: HashMap::new(),
                key: String::new(),
            }),
        }
    }
}

/// Whether requests are authorized at all.
pub fn enabled(shard: &BrokerShard) -> bool {
    shard.authz.enabled
}

/// Kafka's host of an ACL: the client's IP address (`Client::host` is `/1.2.3.4`).
fn host(client: &Client) -> &str {
    client.host.strip_prefix('/').unwrap_or(&client.host)
}

fn refreshed<'a>(shard: &'a BrokerShard) -> std::cell::RefMut<'a, Cache> {
    let store = &shard.shared_handle.acls;
    let mut cache = shard.authz.cache.borrow_mut();
    if store.generation.load(Ordering::Acquire) != cache.generation {
        let (generation, authorizer) = store.current();
        cache.generation = generation;
        cache.authorizer = authorizer;
        cache.decisions.clear();
    }
    cache
}

/// May the client do `operation` on the resource? Always with the authorizer off.
pub fn allowed(
    shard: &BrokerShard,
    client: &Client,
    operation: AclOperation,
    resource_type: ResourceType,
    name: &str,
) -> bool {
    if !shard.authz.enabled || client.internal {
        return true;
    }
    let mut cache = refreshed(shard);
    let cache = &mut *cache;
    let host = host(client);
    // Lengths first: no principal, host or name can make two keys collide.
    cache.key.clear();
    let _ = write!(
        cache.key,
        "{}.{}.{}:{}{}:{}{}:{}",
        resource_type.code(),
        operation.code(),
        client.principal.len(),
        client.principal,
        host.len(),
        host,
        name.len(),
        name
    );
    if let Some(&d) = cache.decisions.get(cache.key.as_str()) {
        return d;
    }
    let d = cache
        .authorizer
        .authorize(&client.principal, host, operation, resource_type, name);
    if cache.decisions.len() >= DECISIONS_MAX {
        cache.decisions.clear();
    }
    cache.decisions.insert(cache.key.clone(), d);
    d
}

/// May the client do `operation` on the cluster?
pub fn cluster_allowed(shard: &BrokerShard, client: &Client, operation: AclOperation) -> bool {
    allowed(
        shard,
        client,
        operation,
        ResourceType::Cluster,
        CLUSTER_NAME,
    )
}

/// Kafka's `authorized_operations` bit field of a resource for the client (bit `1 << code`
/// per operation it may do, of those Kafka lists for the type); every one of them without
/// an authorizer, as Kafka answers.
pub fn authorized_operations(
    shard: &BrokerShard,
    client: &Client,
    resource_type: ResourceType,
    name: &str,
) -> i32 {
    use AclOperation::*;
    let ops: &[AclOperation] = match resource_type {
        ResourceType::Topic => &[
            Read,
            Write,
            Create,
            Describe,
            Delete,
            Alter,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[Read, Describe, Delete],
        ResourceType::Cluster => &[
            Create,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
            Alter,
            Describe,
        ],
        ResourceType::TransactionalId => &[Describe, Write],
        _ => &[],
    };
    ops.iter()
        .filter(|op| allowed(shard, client, **op, resource_type, name))
        .fold(0, |bits, op| bits | 1 << op.code())
}

/// Why the client may not do `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a config
/// resource of DescribeConfigs/AlterConfigs (Kafka's resource type codes: 2 topic, checked
/// on the topic; brokers and anything else on the cluster).
pub fn config_refusal(
    shard: &BrokerShard,
    client: &Client,
    operation: AclOperation,
    resource_type: i8,
    name: &str,
) -> Option<(i16, String)> {
    const RESOURCE_TOPIC: i8 = 2;
    if resource_type == RESOURCE_TOPIC {
        (!allowed(shard, client, operation, ResourceType::Topic, name)).then(|| {
            (
                crate::kerr::TOPIC_AUTHORIZATION_FAILED,
                "Topic authorization failed.".to_string(),
            )
        })
    } else {
        (!cluster_allowed(shard, client, operation)).then(|| {
            (
                crate::kerr::CLUSTER_AUTHORIZATION_FAILED,
                "Cluster authorization failed.".to_string(),
            )
        })
    }
}

/// May the client do `operation` on some resource of the type (Kafka's
/// `authorizeByResourceType`; not cached: only InitProducerId asks)?
pub fn allowed_any(
    shard: &BrokerShard,
    client: &Client,
    operation: AclOperation,
    resource_type: ResourceType,
) -> bool {
    if !shard.authz.enabled || client.internal {
        return true;
    }
    let cache = refreshed(shard);
    cache
        .authorizer
        .authorize_any(&client.principal, host(client), operation, resource_type)
}
