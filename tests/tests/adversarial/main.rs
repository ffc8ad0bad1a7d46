//! Adversarial suite: requests built to break the broker (oversized or malformed values,
//! requests over the limits), each followed by a restart that must still succeed.

mod configs;
