//! Feature levels (KIP-584): the features this build supports and their ranges, the levels
//! a new cluster is finalized at, what registrations from builds before features support,
//! and the checks UpdateFeatures applies (Kafka's `FeatureControlManager`) before a level
//! is finalized cluster-wide.
//!
//! A finalized level is a `FeatureLevel` record in the controller log; the image holds the
//! levels ≥ 1 (level 0 is the same as absent, as in Kafka). Every node registers the range
//! of each feature its build supports, and the controller finalizes a level only if every
//! registered node supports it, so a level is never finalized above what some node serves.

use std::collections::BTreeMap;

use crate::record::NodeId;

pub const METADATA_VERSION: &str = "metadata.version";
pub const KRAFT_VERSION: &str = "kraft.version";
pub const TRANSACTION_VERSION: &str = "transaction.version";
pub const GROUP_VERSION: &str = "group.version";

/// Finalized features one image may hold.
pub const FEATURES_MAX: usize = 32;
/// Bytes of a feature name.
pub const FEATURE_NAME_BYTES_MAX: usize = 255;

/// metadata.version 3.3-IV3, the lowest Kafka 4.x accepts (Kafka's `MINIMUM_VERSION`).
pub const METADATA_VERSION_MIN: i16 = 7;
/// metadata.version 4.1-IV1, Kafka 4.1's latest production level: what sluice's metadata
/// and APIs correspond to.
pub const METADATA_VERSION_LATEST: i16 = 27;
/// The metadata.version builds before features advertised (Kafka 4.0's latest).
pub const METADATA_VERSION_BEFORE_FEATURES: i16 = 25;

/// One feature this build knows: its supported range and the level a new cluster starts at
/// (Kafka 4.1's, where sluice serves what the level means).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feature {
    pub name: &'static str,
    pub min: i16,
    pub max: i16,
    pub bootstrap: i16,
}

/// The features this build supports, by name. A feature at max 0 is known but not served
/// beyond level 0, and is not advertised (as Kafka leaves out such ranges): kraft.version
/// (the controller quorum is static, `--voters`). transaction.version 2 is KIP-890 part 2
/// (clients end each transaction with an epoch bump and add partitions implicitly; level
/// 1, Kafka's flexible `__transaction_state` records, changes nothing a client sees).
/// group.version 1 is the KIP-848 consumer group protocol. Kafka 4.1's other features
/// (eligible.leader.replicas.version, share.version, streams.version) are unknown here: a
/// level above 0 for them is refused.
pub const FEATURES: &[Feature] = &[
    Feature {
        name: GROUP_VERSION,
        min: 0,
        max: 1,
        bootstrap: 1,
    },
    Feature {
        name: KRAFT_VERSION,
        min: 0,
        max: 0,
        bootstrap: 0,
    },
    Feature {
        name: METADATA_VERSION,
        min: METADATA_VERSION_MIN,
        max: METADATA_VERSION_LATEST,
        bootstrap: METADATA_VERSION_LATEST,
    },
    Feature {
        name: TRANSACTION_VERSION,
        min: 0,
        max: 2,
        bootstrap: 2,
    },
];

/// Why a registration's feature list is not valid: empty, more than [`FEATURES_MAX`], a
/// name empty, too long or twice, or a range not `0 <= min <= max`.
pub fn check_supported(features: &[SupportedFeature]) -> Result<(), String> {
    if features.is_empty() || features.len() > FEATURES_MAX {
        return Err(format!("{} features (1 to {FEATURES_MAX})", features.len()));
    }
    for (i, f) in features.iter().enumerate() {
        check_name(&f.name)?;
        if f.min < 0 || f.min > f.max {
            return Err(format!("{}: range {}-{}", f.name, f.min, f.max));
        }
        if features[..i].iter().any(|o| o.name == f.name) {
            return Err(format!("{} listed twice", f.name));
        }
    }
    Ok(())
}

/// Why a `FeatureLevel` record is not valid: a bad name or a negative level.
pub fn check_level_record(name: &str, level: i16) -> Result<(), String> {
    check_name(name)?;
    if level < 0 {
        return Err(format!("{name}: level {level}"));
    }
    Ok(())
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > FEATURE_NAME_BYTES_MAX {
        return Err("a feature name empty or too long".into());
    }
    Ok(())
}

/// The feature `name` as this build knows it.
pub fn feature(name: &str) -> Option<&'static Feature> {
    FEATURES.iter().find(|f| f.name == name)
}

/// A supported range one node registered: `min..=max`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SupportedFeature {
    pub name: String,
    pub min: i16,
    pub max: i16,
}

/// What this build registers.
pub fn supported() -> Vec<SupportedFeature> {
    FEATURES
        .iter()
        .map(|f| SupportedFeature {
            name: f.name.to_string(),
            min: f.min,
            max: f.max,
        })
        .collect()
}

/// The range a node supports for `name`, from its registration (`registered` empty: a
/// build before features, which served metadata.version 25 and the KIP-848 protocol, and
/// knew no other feature). `None`: the node supports only level 0 (absent).
pub fn node_range(registered: &[SupportedFeature], name: &str) -> Option<(i16, i16)> {
    if registered.is_empty() {
        return match name {
            METADATA_VERSION => Some((METADATA_VERSION_MIN, METADATA_VERSION_BEFORE_FEATURES)),
            GROUP_VERSION => Some((0, 1)),
            _ => None,
        };
    }
    registered
        .iter()
        .find(|f| f.name == name && f.max > 0)
        .map(|f| (f.min, f.max))
}

/// The levels a new cluster's first entry finalizes (as `kafka-storage format` does).
pub fn bootstrap_levels() -> Vec<(String, i16)> {
    FEATURES
        .iter()
        .filter(|f| f.bootstrap > 0)
        .map(|f| (f.name.to_string(), f.bootstrap))
        .collect()
}

/// The levels a log written before features gets when its controller first leads with
/// this build: what such a cluster already served (metadata.version 25, the KIP-848
/// protocol), so an upgrade in place changes nothing a client sees.
pub fn upgrade_levels() -> Vec<(String, i16)> {
    vec![
        (METADATA_VERSION.into(), METADATA_VERSION_BEFORE_FEATURES),
        (GROUP_VERSION.into(), 1),
    ]
}

/// UpdateFeatures' upgrade type (Kafka's `FeatureUpdate.UpgradeType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeType {
    Upgrade,
    SafeDowngrade,
    UnsafeDowngrade,
}

impl UpgradeType {
    /// From the request's `upgrade_type` (v1+); `None` for an unknown code.
    pub fn from_code(code: i8) -> Option<UpgradeType> {
        match code {
            1 => Some(UpgradeType::Upgrade),
            2 => Some(UpgradeType::SafeDowngrade),
            3 => Some(UpgradeType::UnsafeDowngrade),
            _ => None,
        }
    }
}

/// One update of UpdateFeatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureUpdate {
    pub name: String,
    /// The new level; 0 removes the feature.
    pub level: i16,
    pub upgrade: UpgradeType,
}

/// Why `update` may not be finalized over `finalized` (the levels so far), checked as
/// Kafka's `FeatureControlManager` does and in its order, with its messages: a level not
/// below 0; this build's range, then every registered node's (`nodes`: id and the ranges
/// it registered; `controller`: this node's id); the upgrade type's direction; a
/// metadata.version is never lowered (Kafka lowers it only across levels that did not
/// change the metadata format, which sluice does not track).
pub fn check_update(
    finalized: &BTreeMap<String, i16>,
    controller: NodeId,
    nodes: &[(NodeId, &[SupportedFeature])],
    update: &FeatureUpdate,
) -> Result<(), String> {
    let name = update.name.as_str();
    let level = update.level;
    let bad = |why: &str| {
        Err(format!(
            "Invalid update version {level} for feature {name}. {why}"
        ))
    };
    if level < 0 {
        return bad("A feature version cannot be less than 0.");
    }
    let own = feature(name).filter(|f| f.max > 0).map(|f| (f.min, f.max));
    let outside = |range: Option<(i16, i16)>| match range {
        Some((min, max)) => (level != 0 || min != 0) && !(min..=max).contains(&level),
        None => level != 0,
    };
    let reason = |who: String, range: Option<(i16, i16)>| match range {
        Some((min, max)) => format!("{who} only supports versions {min}-{max}"),
        None => format!("{who} does not support this feature."),
    };
    if outside(own) {
        return bad(&reason(format!("Local controller {controller}"), own));
    }
    for (node, registered) in nodes {
        let range = node_range(registered, name);
        if *node != controller && outside(range) {
            return bad(&reason(format!("Broker {node}"), range));
        }
    }
    if feature(name).is_none() {
        return bad(&format!("Feature {name} not found."));
    }
    let current = finalized.get(name).copied().unwrap_or(0);
    match update.upgrade {
        UpgradeType::Upgrade if level < current => {
            return bad(
                "Can't downgrade the version of this feature without setting the \
                        upgrade type to either safe or unsafe downgrade.",
            );
        }
        UpgradeType::SafeDowngrade | UpgradeType::UnsafeDowngrade if level > current => {
            return bad("Can't downgrade to a newer version.");
        }
        _ => {}
    }
    if name == METADATA_VERSION && level < current {
        return Err(format!(
            "Invalid metadata.version {level}. {}",
            if update.upgrade == UpgradeType::UnsafeDowngrade {
                "Unsafe metadata downgrade is not supported in this version."
            } else {
                "Refusing to perform the requested downgrade because it might delete \
                 metadata information."
            }
        ));
    }
    Ok(())
}
