//! Kafka's access-control entries as cluster metadata: the binding (resource pattern plus
//! entry), the filters of DescribeAcls/DeleteAcls, and their validation. The codes are
//! Kafka's (`ResourceType`, `PatternType`, `AclOperation`, `AclPermissionType`), so they
//! travel unchanged between the Kafka API, the records and the authorizer
//! (`sluice-security::acl`, which decides requests from these bindings).

/// A resource type (Kafka's `ResourceType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    /// Filters only: any type.
    Any = 1,
    Topic = 2,
    Group = 3,
    Cluster = 4,
    TransactionalId = 5,
    DelegationToken = 6,
    User = 7,
}

/// How a binding's resource name matches (Kafka's `PatternType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    /// Filters only: any pattern type.
    Any = 1,
    /// Filters only: the bindings that would apply to the filter's (literal) name.
    Match = 2,
    /// The name itself, or `*` for every resource of the type.
    Literal = 3,
    /// Every resource whose name starts with it.
    Prefixed = 4,
}

/// An operation (Kafka's `AclOperation` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AclOperation {
    /// Filters only: any operation.
    Any = 1,
    All = 2,
    Read = 3,
    Write = 4,
    Create = 5,
    Delete = 6,
    Alter = 7,
    Describe = 8,
    ClusterAction = 9,
    DescribeConfigs = 10,
    AlterConfigs = 11,
    IdempotentWrite = 12,
    CreateTokens = 13,
    DescribeTokens = 14,
}

/// Allow or deny (Kafka's `AclPermissionType` codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AclPermission {
    /// Filters only: either.
    Any = 1,
    Deny = 2,
    Allow = 3,
}

macro_rules! codes {
    ($t:ty: $($v:ident),* $(,)?) => {
        impl $t {
            /// From Kafka's code (`None` for UNKNOWN and codes Kafka does not define).
            pub fn from_code(code: i8) -> Option<Self> {
                [$(Self::$v),*].into_iter().find(|v| *v as i8 == code)
            }

            pub fn code(self) -> i8 {
                self as i8
            }
        }
    };
}

codes!(ResourceType: Any, Topic, Group, Cluster, TransactionalId, DelegationToken, User);
codes!(PatternType: Any, Match, Literal, Prefixed);
codes!(AclOperation: Any, All, Read, Write, Create, Delete, Alter, Describe, ClusterAction,
    DescribeConfigs, AlterConfigs, IdempotentWrite, CreateTokens, DescribeTokens);
codes!(AclPermission: Any, Deny, Allow);

/// The name of the one cluster resource.
pub const CLUSTER_NAME: &str = "kafka-cluster";
/// The literal name (and principal name) that stands for every one.
pub const WILDCARD: &str = "*";
/// Bytes of a resource name, principal or host in a binding.
pub const ACL_FIELD_BYTES_MAX: usize = 1024;
/// Bindings in the cluster (CreateAcls past it fails with a resource error).
pub const ACLS_MAX: usize = 100_000;

/// One access-control entry on one resource pattern (Kafka's `AclBinding`). Ordered so a
/// set of them is deterministic; equal bindings are one binding (creating it again changes
/// nothing, as in Kafka).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub name: String,
    pub pattern: PatternType,
    /// `Type:name`, e.g. `User:alice`; `User:*` is every user.
    pub principal: String,
    /// An IP address, or `*` for any.
    pub host: String,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

/// Why a binding may not be stored (Kafka's `AclControlManager.validateNewAcl`; the
/// message becomes CreateAcls' error message with INVALID_REQUEST).
pub fn check_binding(b: &AclBinding) -> Result<(), String> {
    if b.resource_type == ResourceType::Any {
        return Err("Invalid resourceType ANY".into());
    }
    if !matches!(b.pattern, PatternType::Literal | PatternType::Prefixed) {
        return Err(format!("Invalid patternType {:?}", b.pattern));
    }
    if b.operation == AclOperation::Any {
        return Err("Invalid operation ANY".into());
    }
    if b.permission == AclPermission::Any {
        return Err("Invalid permissionType ANY".into());
    }
    if b.name.is_empty() {
        return Err("Resource name should not be empty".into());
    }
    if b.resource_type == ResourceType::Cluster && b.name != CLUSTER_NAME {
        return Err(format!(
            "The only valid name for the CLUSTER resource is {CLUSTER_NAME}"
        ));
    }
    if b.host.is_empty() {
        return Err("Host should not be empty".into());
    }
    principal_parts(&b.principal)?;
    for s in [&b.name, &b.principal, &b.host] {
        if s.len() > ACL_FIELD_BYTES_MAX {
            return Err(format!(
                "A resource name, principal or host is longer than {ACL_FIELD_BYTES_MAX} bytes"
            ));
        }
    }
    Ok(())
}

/// `Type:name` split at the first colon (Kafka's `SecurityUtils.parseKafkaPrincipal`).
pub fn principal_parts(p: &str) -> Result<(&str, &str), String> {
    match p.split_once(':') {
        Some((t, n)) if !t.is_empty() && !n.is_empty() => Ok((t, n)),
        _ => Err(format!(
            "Could not parse principal from `{p}` (no colon is found)"
        )),
    }
}

/// What DescribeAcls and DeleteAcls select (Kafka's `AclBindingFilter`): `None` and the
/// `Any` codes match everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclFilter {
    pub resource_type: ResourceType,
    pub name: Option<String>,
    pub pattern: PatternType,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: AclOperation,
    pub permission: AclPermission,
}

impl AclFilter {
    /// Selects every binding.
    pub fn any() -> AclFilter {
        AclFilter {
            resource_type: ResourceType::Any,
            name: None,
            pattern: PatternType::Any,
            principal: None,
            host: None,
            operation: AclOperation::Any,
            permission: AclPermission::Any,
        }
    }

    /// Whether `b` is selected (Kafka's `AclBindingFilter.matches`).
    pub fn matches(&self, b: &AclBinding) -> bool {
        let type_ok =
            self.resource_type == ResourceType::Any || self.resource_type == b.resource_type;
        let pattern_ok = match (self.pattern, &self.name) {
            (PatternType::Match, None) => true,
            (PatternType::Match, Some(n)) => match b.pattern {
                PatternType::Literal => b.name == *n || b.name == WILDCARD,
                PatternType::Prefixed => n.starts_with(b.name.as_str()),
                _ => false,
            },
            (p, name) => {
                (p == PatternType::Any || p == b.pattern)
                    && name.as_ref().is_none_or(|n| *n == b.name)
            }
        };
        let eq = |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
        type_ok
            && pattern_ok
            && eq(&self.principal, &b.principal)
            && eq(&self.host, &b.host)
            && (self.operation == AclOperation::Any || self.operation == b.operation)
            && (self.permission == AclPermission::Any || self.permission == b.permission)
    }

    /// Why DeleteAcls refuses the filter (Kafka refuses filters that could never match a
    /// stored binding only by their UNKNOWN codes, which do not decode here; what remains
    /// is the field length bound).
    pub fn check(&self) -> Result<(), String> {
        for s in [&self.name, &self.principal, &self.host]
            .into_iter()
            .flatten()
        {
            if s.len() > ACL_FIELD_BYTES_MAX {
                return Err(format!(
                    "A resource name, principal or host is longer than {ACL_FIELD_BYTES_MAX} bytes"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(name: &str, pattern: PatternType) -> AclBinding {
        AclBinding {
            resource_type: ResourceType::Topic,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: AclOperation::Read,
            permission: AclPermission::Allow,
        }
    }

    #[test]
    fn codes_round_trip() {
        for c in -2..20 {
            if let Some(t) = ResourceType::from_code(c) {
                assert_eq!(t.code(), c);
            }
            if let Some(o) = AclOperation::from_code(c) {
                assert_eq!(o.code(), c);
            }
        }
        assert_eq!(ResourceType::from_code(0), None);
        assert_eq!(AclOperation::from_code(15), None);
        assert_eq!(
            AclOperation::from_code(14),
            Some(AclOperation::DescribeTokens)
        );
    }

    #[test]
    fn validation_follows_kafka() {
        assert!(check_binding(&binding("t", PatternType::Literal)).is_ok());
        assert!(check_binding(&binding("t", PatternType::Match)).is_err());
        assert!(check_binding(&binding("", PatternType::Literal)).is_err());
        let mut b = binding("t", PatternType::Literal);
        b.principal = "alice".into();
        assert!(check_binding(&b).is_err());
        b.principal = "User:alice".into();
        b.resource_type = ResourceType::Cluster;
        assert!(check_binding(&b).is_err());
        b.name = CLUSTER_NAME.into();
        assert!(check_binding(&b).is_ok());
        b.operation = AclOperation::Any;
        assert!(check_binding(&b).is_err());
    }

    #[test]
    fn filters_match_as_kafka() {
        let lit = binding("orders", PatternType::Literal);
        let star = binding("*", PatternType::Literal);
        let pre = binding("ord", PatternType::Prefixed);
        let mut f = AclFilter::any();
        assert!(f.matches(&lit) && f.matches(&star) && f.matches(&pre));
        f.pattern = PatternType::Match;
        f.name = Some("orders".into());
        assert!(f.matches(&lit) && f.matches(&star) && f.matches(&pre));
        f.name = Some("other".into());
        assert!(!f.matches(&lit) && f.matches(&star) && !f.matches(&pre));
        f.pattern = PatternType::Literal;
        f.name = Some("orders".into());
        assert!(f.matches(&lit) && !f.matches(&star) && !f.matches(&pre));
        f.pattern = PatternType::Any;
        f.name = None;
        f.principal = Some("User:bob".into());
        assert!(!f.matches(&lit));
        f.principal = None;
        f.permission = AclPermission::Deny;
        assert!(!f.matches(&lit));
    }
}
