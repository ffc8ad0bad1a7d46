//! Adversarial suite: clients that behave legally but hostilely (huge long-polls, parked
//! requests) against the real broker, checking that other clients keep being served.

mod mesh;
