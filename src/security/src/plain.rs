//! SASL/PLAIN (RFC 4616) as Kafka's `PlainSaslServer` reads it: `authzid NUL authcid NUL
//! passwd`, the authorization id empty or the user's own. The password is checked by the
//! caller against the user's stored SCRAM credential ([`crate::scram`]), so one user store
//! serves both mechanisms.

/// Longest PLAIN message accepted.
pub const PLAIN_BYTES_MAX: usize = 4096;

/// The user name and password of a PLAIN message, or Kafka's message for why it is refused.
pub fn parse_plain(message: &[u8]) -> Result<(String, Vec<u8>), String> {
    if message.len() > PLAIN_BYTES_MAX {
        return Err("Invalid SASL/PLAIN response: too long".into());
    }
    let tokens: Vec<&[u8]> = message.split(|b| *b == 0).collect();
    if tokens.len() != 3 {
        return Err(format!(
            "Invalid SASL/PLAIN response: expected 3 tokens, got {}",
            tokens.len()
        ));
    }
    let user = std::str::from_utf8(tokens[1])
        .map_err(|_| "Invalid SASL/PLAIN response: user name is not UTF-8".to_string())?;
    if user.is_empty() {
        return Err("Authentication failed: username not specified".into());
    }
    if tokens[2].is_empty() {
        return Err("Authentication failed: password not specified".into());
    }
    if !tokens[0].is_empty() && tokens[0] != tokens[1] {
        return Err(
            "Authentication failed: Client requested an authorization id that is different from username"
                .into(),
        );
    }
    Ok((user.to_string(), tokens[2].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_parse_as_kafka_reads_them() {
        assert_eq!(
            parse_plain(b"\0alice\0pw").unwrap(),
            ("alice".to_string(), b"pw".to_vec())
        );
        assert_eq!(parse_plain(b"alice\0alice\0pw").unwrap().0, "alice");
        for (bad, why) in [
            (&b"alice\0pw"[..], "expected 3 tokens, got 2"),
            (b"\0\0pw", "username not specified"),
            (b"\0alice\0", "password not specified"),
            (b"bob\0alice\0pw", "different from username"),
            (b"\0a\0b\0c", "got 4"),
        ] {
            assert!(parse_plain(bad).unwrap_err().contains(why), "{bad:?}");
        }
    }
}
