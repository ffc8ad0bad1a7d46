//! Client-metrics subscriptions (KIP-714): the `client-metrics` config resources (Kafka's
//! ConfigResource type 16, named by the subscription) and the checks Kafka's
//! `ClientMetricsConfigs.validate` makes of them. A subscription is a set of config
//! overrides like a topic's, kept by the image under its name; one with no overrides left
//! does not exist.
//!
//! Invariants: every stored subscription has a non-empty name of at most
//! `codec::STRING_BYTES_MAX` bytes and at least one override, and at most
//! [`SUBSCRIPTIONS_MAX`] exist (the image refuses records that break these); its keys and
//! values pass [`check`] (the controller checks every change before it proposes it).

use std::collections::BTreeMap;

/// The metric name prefixes the subscribed clients are asked to push (a comma-separated
/// list; `*` is every metric, empty is none).
pub const METRICS: &str = "metrics";
/// How often the subscribed clients push, in milliseconds.
pub const INTERVAL_MS: &str = "interval.ms";
/// Which clients the subscription applies to: a comma-separated list of `selector=regex`,
/// every one of which must match (empty: every client).
pub const MATCH: &str = "match";

/// The configs of a subscription and their defaults, as DescribeConfigs shows them.
pub const CONFIGS: [(&str, &str); 3] = [(METRICS, ""), (INTERVAL_MS, "300000"), (MATCH, "")];

/// The bounds of `interval.ms` (100 ms to an hour, Kafka's).
pub const INTERVAL_MS_MIN: i64 = 100;
pub const INTERVAL_MS_MAX: i64 = 3_600_000;

/// What a `match` entry may select on: the client's instance id, its `client.id`, its
/// software name and version (from ApiVersions), its address and port.
pub const SELECTORS: [&str; 6] = [
    "client_instance_id",
    "client_id",
    "client_software_name",
    "client_software_version",
    "client_source_address",
    "client_source_port",
];

/// Most subscriptions the image keeps (Kafka has no limit; every client's subscription
/// lookup walks them all, so sluice bounds it).
pub const SUBSCRIPTIONS_MAX: usize = 1024;

/// Largest compiled size of one `match` regex (the regex crate's own limit is 10 MiB; a
/// pattern is matched against short client strings, so anything near that is abuse).
pub const MATCH_REGEX_BYTES_MAX: usize = 64 * 1024;

use crate::controller::code::{INVALID_CONFIG, INVALID_REQUEST};
use crate::controller::ApiError;

fn refuse(code: i16, message: impl Into<String>) -> Result<(), ApiError> {
    Err(ApiError {
        code,
        message: message.into(),
    })
}

/// Checks subscription `name` with overrides `configs` (the whole set after the change),
/// in Kafka's order and with its messages.
pub fn check(name: &str, configs: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if name.is_empty() {
        return refuse(INVALID_REQUEST, "Subscription name can't be empty");
    }
    if name.len() > crate::codec::STRING_BYTES_MAX {
        return refuse(
            INVALID_REQUEST,
            format!(
                "Subscription name is longer than {} bytes",
                crate::codec::STRING_BYTES_MAX
            ),
        );
    }
    if let Some(k) = configs
        .keys()
        .find(|k| !CONFIGS.iter().any(|(c, _)| c == k))
    {
        return refuse(
            INVALID_REQUEST,
            format!("Unknown client metrics configuration: {k}"),
        );
    }
    if let Some(v) = configs.get(INTERVAL_MS) {
        let ms = match v.trim().parse::<i32>() {
            Ok(ms) => i64::from(ms),
            Err(_) => {
                return refuse(
                    INVALID_CONFIG,
                    format!(
                    "Invalid value {v} for configuration {INTERVAL_MS}: Not a number of type INT"
                ),
                )
            }
        };
        if !(INTERVAL_MS_MIN..=INTERVAL_MS_MAX).contains(&ms) {
            return refuse(
                INVALID_REQUEST,
                format!(
                    "Invalid value {ms} for {INTERVAL_MS}, interval must be between \
                     {INTERVAL_MS_MIN} and {INTERVAL_MS_MAX} (1 hour)"
                ),
            );
        }
    }
    if let Some(v) = configs.get(MATCH) {
        for entry in list(v) {
            if let Err(message) = parse_match(entry) {
                return refuse(INVALID_CONFIG, message);
            }
        }
    }
    Ok(())
}

/// The entries of a list config (comma-separated, each trimmed, empty ones dropped).
pub fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// One `match` entry, `selector=regex`, as (selector, compiled regex anchored to the whole
/// value, as Java's `Matcher.matches`). Like Kafka's, a regex cannot contain `=`. Edges
/// where Kafka differs: it accepts `selector=regex=` (Java's split drops the trailing empty
/// part) and refuses an empty entry between commas, which `list` skips; Java regexes with
/// lookaround or backreferences, which the regex crate lacks, are refused here.
pub fn parse_match(entry: &str) -> Result<(&str, regex::Regex), String> {
    let illegal = || format!("Illegal client matching pattern: {entry}");
    let mut parts = entry.split('=');
    let (Some(selector), Some(pattern), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(illegal());
    };
    let selector = selector.trim();
    let pattern = pattern.trim();
    if !SELECTORS.contains(&selector) || pattern.is_empty() {
        return Err(illegal());
    }
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(MATCH_REGEX_BYTES_MAX)
            .build()
            .map_err(|_| illegal())
    };
    // The bare pattern must compile on its own: wrapped first, an unbalanced one such as
    // `a)|(?:.*` would escape the anchors and match every client.
    build(pattern)?;
    let re = build(&format!("^(?:{pattern})$"))?;
    Ok((selector, re))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configs(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn kafkas_checks_in_order() {
        let ok = configs(&[
            (
                METRICS,
                "org.apache.kafka.producer., org.apache.kafka.consumer.fetch",
            ),
            (INTERVAL_MS, "1000"),
            (MATCH, "client_id=app-.*,client_software_name=librdkafka"),
        ]);
        assert_eq!(check("sub", &ok), Ok(()));
        let code = |name: &str, kv: &[(&str, &str)]| check(name, &configs(kv)).unwrap_err();
        assert_eq!(code("", &[]).code, INVALID_REQUEST);
        let r = code("s", &[("bogus", "1"), (INTERVAL_MS, "1")]);
        assert_eq!(
            (r.code, r.message.as_str()),
            (
                INVALID_REQUEST,
                "Unknown client metrics configuration: bogus"
            )
        );
        for bad in ["99", "3600001", "-1"] {
            assert_eq!(
                code("s", &[(INTERVAL_MS, bad)]).code,
                INVALID_REQUEST,
                "{bad}"
            );
        }
        assert_eq!(code("s", &[(INTERVAL_MS, "x")]).code, INVALID_CONFIG);
        for bad in ["client_id", "host=.*", "client_id=a=b", "client_id="] {
            let r = code("s", &[(MATCH, bad)]);
            assert_eq!(r.code, INVALID_CONFIG, "{bad}");
            assert!(
                r.message.starts_with("Illegal client matching pattern"),
                "{bad}"
            );
        }
        let r = code("s", &[(MATCH, "client_id=(")]);
        assert_eq!(r.message, "Illegal client matching pattern: client_id=(");
        // Unbalanced patterns cannot escape the anchors.
        for bad in ["client_id=a)(b", "client_id=a)|(?:.*"] {
            assert_eq!(code("s", &[(MATCH, bad)]).code, INVALID_CONFIG, "{bad}");
        }
        let long = "n".repeat(crate::codec::STRING_BYTES_MAX + 1);
        assert_eq!(code(&long, &[]).code, INVALID_REQUEST);
    }

    #[test]
    fn match_is_anchored() {
        let (sel, re) = parse_match("client_id=app-.").expect("valid");
        assert_eq!(sel, "client_id");
        assert!(re.is_match("app-1") && !re.is_match("my-app-1") && !re.is_match("app-12"));
    }
}
