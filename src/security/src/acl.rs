//! The authorizer: Kafka's `StandardAuthorizer` decisions over the cluster's ACL bindings
//! (`sluice_meta::acl`). Built once per change of the bindings and then only read, so every
//! shard can share one and decide without locks; the broker keeps a per-shard cache of
//! decisions in front of it.
//!
//! Semantics (Kafka's): super users may do everything; a DENY that matches wins over any
//! ALLOW; an ALLOW of the operation itself, of ALL, or of an operation that implies it
//! (READ, WRITE, DELETE and ALTER imply DESCRIBE; ALTER_CONFIGS implies DESCRIBE_CONFIGS)
//! grants it; a resource with no binding at all (for anyone) is decided by
//! `allow.everyone.if.no.acl.found` (false by default: denied); a resource with bindings
//! for others but none granting this principal is denied. A binding applies to a resource
//! when it names it literally, is the literal `*`, or is a prefix of its name; to a
//! principal when it names it or is `User:*`; to a host when it names it or is `*`.

use std::collections::{HashMap, HashSet};

use sluice_meta::acl::{
    AclBinding, AclOperation, AclPermission, PatternType, ResourceType, WILDCARD,
};

/// The principal that stands for every principal.
pub const WILDCARD_PRINCIPAL: &str = "User:*";

#[derive(Debug, Clone)]
struct Entry {
    principal: String,
    host: String,
    operation: AclOperation,
    permission: AclPermission,
}

impl Entry {
    fn applies_to(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == WILDCARD_PRINCIPAL)
            && (self.host == host || self.host == WILDCARD)
    }
}

/// The bindings of one resource type, indexed by how they match names.
#[derive(Debug, Default)]
struct TypeAcls {
    literal: HashMap<String, Vec<Entry>>,
    /// Literal `*`.
    wildcard: Vec<Entry>,
    /// Prefixed bindings (a scan: the decision cache in front keeps it off the hot path).
    prefixed: Vec<(String, Entry)>,
}

impl TypeAcls {
    /// Every entry that applies to the resource `name`, whoever it is for.
    fn for_resource<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        let literal = self.literal.get(name).into_iter().flatten();
        let prefixed = self
            .prefixed
            .iter()
            .filter(move |(p, _)| name.starts_with(p.as_str()))
            .map(|(_, e)| e);
        literal.chain(self.wildcard.iter()).chain(prefixed)
    }
}

/// Decides requests. Cheap to query, rebuilt whenever the bindings change.
#[derive(Debug, Default)]
pub struct Authorizer {
    by_type: HashMap<ResourceType, TypeAcls>,
    super_users: HashSet<String>,
    allow_if_no_acl: bool,
}

/// Whether an ALLOW of `granted` grants `wanted`.
fn grants(granted: AclOperation, wanted: AclOperation) -> bool {
    use AclOperation::*;
    granted == All
        || granted == wanted
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

/// Whether a DENY of `denied` denies `wanted` (no implications: denying READ leaves
/// DESCRIBE alone, as in Kafka).
fn denies(denied: AclOperation, wanted: AclOperation) -> bool {
    denied == AclOperation::All || denied == wanted
}

impl Authorizer {
    /// `super_users` are principals (`User:admin`); `allow_if_no_acl` is Kafka's
    /// `allow.everyone.if.no.acl.found`.
    pub fn new<'a>(
        acls: impl IntoIterator<Item = &'a AclBinding>,
        super_users: &[String],
        allow_if_no_acl: bool,
    ) -> Authorizer {
        let mut by_type: HashMap<ResourceType, TypeAcls> = HashMap::new();
        for b in acls {
            let t = by_type.entry(b.resource_type).or_default();
            let e = Entry {
                principal: b.principal.clone(),
                host: b.host.clone(),
                operation: b.operation,
                permission: b.permission,
            };
            match b.pattern {
                PatternType::Literal if b.name == WILDCARD => t.wildcard.push(e),
                PatternType::Literal => t.literal.entry(b.name.clone()).or_default().push(e),
                PatternType::Prefixed => t.prefixed.push((b.name.clone(), e)),
                // Stored bindings are literal or prefixed (`check_binding`).
                PatternType::Any | PatternType::Match => {
                    debug_assert!(false, "a stored binding with pattern {:?}", b.pattern)
                }
            }
        }
        Authorizer {
            by_type,
            super_users: super_users.iter().cloned().collect(),
            allow_if_no_acl,
        }
    }

    pub fn is_super_user(&self, principal: &str) -> bool {
        self.super_users.contains(principal)
    }

    /// May `principal`, connected from `host` (an IP address), do `operation` on the
    /// resource `name` of type `resource_type`?
    pub fn authorize(
        &self,
        principal: &str,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
        name: &str,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let Some(t) = self.by_type.get(&resource_type) else {
            return self.allow_if_no_acl;
        };
        let (mut any, mut allowed) = (false, false);
        for e in t.for_resource(name) {
            any = true;
            if !e.applies_to(principal, host) {
                continue;
            }
            match e.permission {
                AclPermission::Deny if denies(e.operation, operation) => return false,
                AclPermission::Allow if grants(e.operation, operation) => allowed = true,
                _ => {}
            }
        }
        allowed || (!any && self.allow_if_no_acl)
    }

    /// May `principal` do `operation` on some resource of the type (Kafka's
    /// `authorizeByResourceType`, which decides idempotent produce without a cluster grant,
    /// KIP-679): an ALLOW that no DENY of the same or a wider pattern cancels.
    pub fn authorize_any(
        &self,
        principal: &str,
        host: &str,
        operation: AclOperation,
        resource_type: ResourceType,
    ) -> bool {
        if self.is_super_user(principal) {
            return true;
        }
        let Some(t) = self.by_type.get(&resource_type) else {
            return false;
        };
        let applies = |e: &Entry, permission: AclPermission| {
            e.permission == permission
                && e.applies_to(principal, host)
                && (e.operation == AclOperation::All || e.operation == operation)
        };
        if t.wildcard.iter().any(|e| applies(e, AclPermission::Deny)) {
            return false;
        }
        let denied_prefixes: Vec<&str> = t
            .prefixed
            .iter()
            .filter(|(_, e)| applies(e, AclPermission::Deny))
            .map(|(p, _)| p.as_str())
            .collect();
        let denied = |name: &str| denied_prefixes.iter().any(|p| name.starts_with(p));
        if t.wildcard.iter().any(|e| applies(e, AclPermission::Allow)) {
            return true;
        }
        let literal = t.literal.iter().any(|(name, entries)| {
            entries.iter().any(|e| applies(e, AclPermission::Allow))
                && !entries.iter().any(|e| applies(e, AclPermission::Deny))
                && !denied(name)
        });
        literal
            || t.prefixed
                .iter()
                .any(|(p, e)| applies(e, AclPermission::Allow) && !denied(p))
    }
}

/// Kafka's `super.users`: principals separated by `;` (`User:admin;User:ops`).
pub fn parse_super_users(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for p in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        sluice_meta::acl::principal_parts(p)?;
        out.push(p.to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AclOperation::*;
    use AclPermission::*;
    use ResourceType::*;

    fn b(
        rt: ResourceType,
        name: &str,
        pattern: PatternType,
        principal: &str,
        op: AclOperation,
        perm: AclPermission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            name: name.into(),
            pattern,
            principal: principal.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    const LIT: PatternType = PatternType::Literal;
    const PRE: PatternType = PatternType::Prefixed;

    #[test]
    fn deny_by_default_and_super_users() {
        let a = Authorizer::new(&[], &["User:admin".into()], false);
        assert!(!a.authorize("User:alice", "1.2.3.4", Read, Topic, "t"));
        assert!(a.authorize("User:admin", "1.2.3.4", Alter, Cluster, "kafka-cluster"));
        let open = Authorizer::new(&[], &[], true);
        assert!(open.authorize("User:alice", "1.2.3.4", Read, Topic, "t"));
    }

    #[test]
    fn grants_patterns_and_implications() {
        let acls = vec![
            b(Topic, "orders", LIT, "User:alice", Read, Allow),
            b(Topic, "logs-", PRE, "User:alice", Write, Allow),
            b(Topic, "*", LIT, "User:*", DescribeConfigs, Allow),
            b(Group, "g", LIT, "User:alice", All, Allow),
        ];
        let a = Authorizer::new(&acls, &[], true);
        let can = |op, rt, name: &str| a.authorize("User:alice", "h", op, rt, name);
        assert!(can(Read, Topic, "orders"));
        assert!(can(Describe, Topic, "orders"), "READ implies DESCRIBE");
        assert!(!can(Write, Topic, "orders"));
        assert!(can(Write, Topic, "logs-app"));
        assert!(!can(Write, Topic, "log"));
        assert!(can(DescribeConfigs, Topic, "anything"));
        assert!(a.authorize("User:bob", "h", DescribeConfigs, Topic, "x"));
        assert!(can(Delete, Group, "g"));
        // A resource with bindings (here every topic, through `*`) none of which grants
        // the principal is denied even under allow.everyone.if.no.acl.found; one without
        // any binding is allowed by it.
        assert!(!a.authorize("User:bob", "h", Read, Topic, "orders"));
        assert!(a.authorize("User:bob", "h", Read, TransactionalId, "tx"));
    }

    #[test]
    fn deny_wins_and_does_not_imply() {
        let acls = vec![
            b(Topic, "*", LIT, "User:*", All, Allow),
            b(Topic, "secret", PRE, "User:alice", Read, Deny),
        ];
        let a = Authorizer::new(&acls, &[], false);
        assert!(!a.authorize("User:alice", "h", Read, Topic, "secret-1"));
        assert!(a.authorize("User:alice", "h", Describe, Topic, "secret-1"));
        assert!(a.authorize("User:bob", "h", Read, Topic, "secret-1"));
        assert!(a.authorize("User:alice", "h", Read, Topic, "public"));
    }

    #[test]
    fn hosts_match() {
        let mut x = b(Topic, "t", LIT, "User:alice", Read, Allow);
        x.host = "10.0.0.1".into();
        let a = Authorizer::new(&[x], &[], false);
        assert!(a.authorize("User:alice", "10.0.0.1", Read, Topic, "t"));
        assert!(!a.authorize("User:alice", "10.0.0.2", Read, Topic, "t"));
    }

    #[test]
    fn by_resource_type() {
        let acls = vec![
            b(Topic, "a", LIT, "User:alice", Write, Allow),
            b(Topic, "p-", PRE, "User:bob", Write, Allow),
            b(Topic, "p", PRE, "User:bob", Write, Deny),
            b(Topic, "*", LIT, "User:carol", Write, Deny),
            b(Topic, "c", LIT, "User:carol", Write, Allow),
        ];
        let a = Authorizer::new(&acls, &[], false);
        assert!(a.authorize_any("User:alice", "h", Write, Topic));
        assert!(!a.authorize_any("User:alice", "h", Read, Topic));
        assert!(!a.authorize_any("User:bob", "h", Write, Topic));
        assert!(!a.authorize_any("User:carol", "h", Write, Topic));
        assert!(!a.authorize_any("User:dave", "h", Write, Topic));
    }

    #[test]
    fn super_users_parse() {
        assert_eq!(
            parse_super_users("User:admin;User:ops").unwrap(),
            vec!["User:admin".to_string(), "User:ops".to_string()]
        );
        assert!(parse_super_users("admin").is_err());
        assert!(parse_super_users("").unwrap().is_empty());
    }
}
