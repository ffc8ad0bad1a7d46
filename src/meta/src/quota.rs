//! Client quotas as cluster metadata (Kafka's `ClientQuotaRecord`): the entity a quota
//! applies to (user, client id, both, or an IP address, each named or the default), the
//! keys Kafka defines for each kind, their validation, DescribeClientQuotas' filters, and
//! the order in which a client's quota is looked up.

/// One component of an entity: absent, the default (`None` name), or named.
pub type Component = Option<Option<String>>;

/// What a quota applies to. Users and client ids combine; an IP address stands alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuotaEntity {
    pub user: Component,
    pub client_id: Component,
    pub ip: Component,
}

pub const ENTITY_USER: &str = "user";
pub const ENTITY_CLIENT_ID: &str = "client-id";
pub const ENTITY_IP: &str = "ip";

/// Kafka's quota keys of user and client-id entities, and whether each is a whole number.
pub const CLIENT_KEYS: &[(&str, bool)] = &[
    ("producer_byte_rate", true),
    ("consumer_byte_rate", true),
    ("request_percentage", false),
    ("controller_mutation_rate", false),
];
/// Kafka's quota key of IP entities (KIP-612).
pub const IP_KEYS: &[(&str, bool)] = &[("connection_creation_rate", true)];

/// A quota's value. Stored ones are finite and positive (`check_quota`, which the codec and
/// the image enforce), so equality is total.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct QuotaValue(pub f64);

impl Eq for QuotaValue {}

/// Bytes of an entity name.
pub const QUOTA_NAME_BYTES_MAX: usize = 1024;
/// Entities with quotas in the cluster.
pub const QUOTA_ENTITIES_MAX: usize = 100_000;

impl QuotaEntity {
    /// From the `(type, name)` pairs of AlterClientQuotas/DescribeClientQuotas; `Err` is
    /// INVALID_REQUEST's message.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<QuotaEntity, String> {
        let mut e = QuotaEntity::default();
        for (t, name) in pairs {
            let slot = match t {
                ENTITY_USER => &mut e.user,
                ENTITY_CLIENT_ID => &mut e.client_id,
                ENTITY_IP => &mut e.ip,
                other => return Err(format!("Unhandled client quota entity type: {other}")),
            };
            if slot.is_some() {
                return Err(format!("Duplicate {t} in the quota entity"));
            }
            *slot = Some(name.map(str::to_string));
        }
        check_entity(&e)?;
        Ok(e)
    }

    /// The `(type, name)` pairs, in Kafka's order.
    pub fn pairs(&self) -> Vec<(&'static str, Option<&str>)> {
        [
            (ENTITY_USER, &self.user),
            (ENTITY_CLIENT_ID, &self.client_id),
            (ENTITY_IP, &self.ip),
        ]
        .into_iter()
        .filter_map(|(t, c)| c.as_ref().map(|n| (t, n.as_deref())))
        .collect()
    }

    fn keys(&self) -> &'static [(&'static str, bool)] {
        if self.ip.is_some() {
            IP_KEYS
        } else {
            CLIENT_KEYS
        }
    }
}

/// Why an entity may not hold quotas (Kafka's `ClientQuotaControlManager` checks).
pub fn check_entity(e: &QuotaEntity) -> Result<(), String> {
    if e.user.is_none() && e.client_id.is_none() && e.ip.is_none() {
        return Err("Invalid empty client quota entity".into());
    }
    if e.ip.is_some() && (e.user.is_some() || e.client_id.is_some()) {
        return Err("Invalid quota entity combination: an ip stands alone".into());
    }
    if let Some(Some(ip)) = &e.ip {
        if ip.parse::<std::net::IpAddr>().is_err() {
            return Err(format!("{ip} is not a valid IP or resolvable host."));
        }
    }
    for n in [&e.user, &e.client_id, &e.ip]
        .into_iter()
        .flatten()
        .flatten()
    {
        if n.len() > QUOTA_NAME_BYTES_MAX {
            return Err(format!(
                "A quota entity name is longer than {QUOTA_NAME_BYTES_MAX} bytes"
            ));
        }
    }
    Ok(())
}

/// Why `key` = `value` may not be set on `e` (INVALID_REQUEST's message).
pub fn check_quota(e: &QuotaEntity, key: &str, value: f64) -> Result<(), String> {
    check_entity(e)?;
    let Some(&(_, whole)) = e.keys().iter().find(|(k, _)| *k == key) else {
        return Err(format!("Invalid configuration key {key}"));
    };
    if !value.is_finite() || value <= 0.0 {
        return Err(format!(
            "Invalid value {value} for {key}: it must be positive"
        ));
    }
    if whole && value.fract() != 0.0 {
        return Err(format!(
            "Invalid value {value} for {key}: it must be a whole number"
        ));
    }
    Ok(())
}

/// One component of DescribeClientQuotas' filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// Match type 0: the named entity.
    Exact(String),
    /// Match type 1: the default.
    Default,
    /// Match type 2: any entity with this component (named or default).
    Specified,
}

/// Whether `e` passes the filter (`components` by type; `strict`: `e` has no other
/// components), as Kafka's DescribeClientQuotas filters.
pub fn filter_matches(e: &QuotaEntity, components: &[(String, Match)], strict: bool) -> bool {
    let component = |t: &str| match t {
        ENTITY_USER => Some(&e.user),
        ENTITY_CLIENT_ID => Some(&e.client_id),
        ENTITY_IP => Some(&e.ip),
        _ => None,
    };
    for (t, m) in components {
        let Some(c) = component(t) else {
            return false;
        };
        let ok = match (m, c) {
            (_, None) => false,
            (Match::Exact(want), Some(Some(have))) => want == have,
            (Match::Exact(_), Some(None)) => false,
            (Match::Default, Some(c)) => c.is_none(),
            (Match::Specified, Some(_)) => true,
        };
        if !ok {
            return false;
        }
    }
    !strict || e.pairs().len() == components.len()
}

/// The entities a client's quota is looked up at, most specific first (Kafka's order):
/// user and client id, user and default client, user, default user and client id, default
/// user and default client, default user, client id, default client.
pub fn lookup_order(user: &str, client_id: &str) -> [QuotaEntity; 8] {
    let named = |s: &str| Some(Some(s.to_string()));
    let default = || Some(None);
    let e = |user: Component, client_id: Component| QuotaEntity {
        user,
        client_id,
        ip: None,
    };
    [
        e(named(user), named(client_id)),
        e(named(user), default()),
        e(named(user), None),
        e(default(), named(client_id)),
        e(default(), default()),
        e(default(), None),
        e(None, named(client_id)),
        e(None, default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_values_are_checked_as_kafka_does() {
        let user = QuotaEntity::from_pairs([("user", Some("alice"))]).unwrap();
        assert!(check_quota(&user, "producer_byte_rate", 1024.0).is_ok());
        assert!(check_quota(&user, "producer_byte_rate", 10.5).is_err());
        assert!(check_quota(&user, "request_percentage", 10.5).is_ok());
        assert!(check_quota(&user, "producer_byte_rate", 0.0).is_err());
        assert!(check_quota(&user, "connection_creation_rate", 5.0).is_err());
        assert!(check_quota(&user, "nope", 5.0).is_err());
        let ip = QuotaEntity::from_pairs([("ip", Some("10.0.0.1"))]).unwrap();
        assert!(check_quota(&ip, "connection_creation_rate", 5.0).is_ok());
        assert!(QuotaEntity::from_pairs([("ip", Some("not an ip"))]).is_err());
        assert!(QuotaEntity::from_pairs([("ip", None), ("user", None)]).is_err());
        assert!(QuotaEntity::from_pairs([("user", None), ("user", None)]).is_err());
        assert!(QuotaEntity::from_pairs([("group", None)]).is_err());
        assert!(QuotaEntity::from_pairs([]).is_err());
    }

    #[test]
    fn filters_match_as_kafka() {
        let both = QuotaEntity::from_pairs([("user", Some("alice")), ("client-id", None)]).unwrap();
        let user = |m| vec![("user".to_string(), m)];
        assert!(filter_matches(
            &both,
            &user(Match::Exact("alice".into())),
            false
        ));
        assert!(!filter_matches(
            &both,
            &user(Match::Exact("alice".into())),
            true
        ));
        assert!(!filter_matches(&both, &user(Match::Default), false));
        assert!(filter_matches(&both, &user(Match::Specified), false));
        assert!(filter_matches(&both, &[], false));
        assert!(!filter_matches(&both, &[], true));
    }

    #[test]
    fn lookup_goes_from_specific_to_default() {
        let order = lookup_order("alice", "app");
        assert_eq!(
            order[0].pairs(),
            vec![("user", Some("alice")), ("client-id", Some("app"))]
        );
        assert_eq!(order[7].pairs(), vec![("client-id", None)]);
    }
}
