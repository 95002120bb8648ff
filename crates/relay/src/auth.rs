//! Tokens (random, stored hashed, compared in constant time) and sender-secret checks
//! (signatures themselves are `meethook_proto::signature`).

use meethook_proto::signature::{signature_headers, SigningKey, TIMESTAMP_TOLERANCE_SECS};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A fresh random secret: `prefix` + 32 random bytes (256 bits) in hex.
pub fn new_token(prefix: &str) -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    format!("{prefix}{}", hex::encode(b))
}

/// A fresh channel id: `ch_` + 16 random lower-case alphanumerics.
pub fn new_channel_id() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    format!(
        "ch_{}",
        Alphanumeric
            .sample_string(&mut rand::rng(), 16)
            .to_ascii_lowercase()
    )
}

/// Hex SHA-256 of a token, as the store keeps it.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Constant-time check of a presented token against a stored hash.
pub fn token_matches(presented: &str, stored_hash: &str) -> bool {
    let h = hash_token(presented);
    h.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// Constant-time equality of two secrets of any length (compares their digests).
pub fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(value: Option<&http::HeaderValue>) -> Option<&str> {
    let v = value?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Why a webhook failed the sender check (never includes the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderRejection {
    /// No credential header at all.
    Missing,
    /// A credential was present but did not match.
    Wrong,
    /// A signature's timestamp is outside the tolerance.
    Stale,
}

/// What a webhook's headers alone say about its sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderHeads {
    /// An API key matched: no more to check.
    Accepted,
    /// A signature to verify against the body (see [`check_sender`]).
    Signed,
}

/// Checks what can be checked before the body arrives, so a sender without the secret is
/// refused before the relay reads (and writes out) up to `--max-body` of its upload.
pub fn check_sender_heads(
    secret: &str,
    headers: &http::HeaderMap,
    now_secs: i64,
) -> Result<SenderHeads, SenderRejection> {
    let mut seen = false;
    for name in ["x-meeting-baas-api-key", "x-mb-secret"] {
        for v in headers.get_all(name) {
            seen = true;
            if secret_eq(v.as_bytes(), secret.as_bytes()) {
                return Ok(SenderHeads::Accepted);
            }
        }
    }
    if let Some((_, ts, _)) = signature_headers(header(headers)) {
        let ts = ts.parse::<i64>().map_err(|_| SenderRejection::Wrong)?;
        if (now_secs - ts).abs() > TIMESTAMP_TOLERANCE_SECS {
            return Err(SenderRejection::Stale);
        }
        return Ok(SenderHeads::Signed);
    }
    Err(if seen {
        SenderRejection::Wrong
    } else {
        SenderRejection::Missing
    })
}

/// A header's value as text, by name.
fn header<'a>(headers: &'a http::HeaderMap) -> impl Fn(&str) -> Option<&'a str> + 'a {
    |name| headers.get(name).and_then(|v| v.to_str().ok())
}

/// Checks a webhook against a channel's sender secret: `x-meeting-baas-api-key`, `x-mb-secret`,
/// or a Standard Webhooks / Svix signature (`webhook-*` or `svix-*` headers).
pub fn check_sender(
    secret: &str,
    headers: &http::HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> Result<(), SenderRejection> {
    if check_sender_heads(secret, headers, now_secs)? == SenderHeads::Accepted {
        return Ok(());
    }
    let (id, ts, sigs) = signature_headers(header(headers)).ok_or(SenderRejection::Missing)?;
    let key = SigningKey::from_secret(secret).ok_or(SenderRejection::Wrong)?;
    if key.verify(id, ts, body, sigs) {
        Ok(())
    } else {
        Err(SenderRejection::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use meethook_proto::signature::sign;

    #[test]
    fn tokens_are_random_and_hash_checked() {
        let a = new_token("mht_");
        assert_ne!(a, new_token("mht_"));
        assert_eq!(a.len(), 4 + 64);
        let h = hash_token(&a);
        assert!(token_matches(&a, &h));
        assert!(!token_matches("mht_wrong", &h));
        assert!(new_channel_id().starts_with("ch_"));
    }

    #[test]
    fn bearer_parsing() {
        let v = HeaderValue::from_static("Bearer abc");
        assert_eq!(bearer(Some(&v)), Some("abc"));
        let v = HeaderValue::from_static("Basic abc");
        assert_eq!(bearer(Some(&v)), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn sender_checks() {
        let mut h = HeaderMap::new();
        assert_eq!(check_sender("k", &h, b"", 0), Err(SenderRejection::Missing));
        h.insert("x-meeting-baas-api-key", HeaderValue::from_static("nope"));
        assert_eq!(check_sender("k", &h, b"", 0), Err(SenderRejection::Wrong));
        h.insert("x-mb-secret", HeaderValue::from_static("k"));
        assert_eq!(check_sender("k", &h, b"", 0), Ok(()));
    }

    #[test]
    fn standard_webhooks_signature() {
        // Test vector from the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body).unwrap();
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let mut h = HeaderMap::new();
        h.insert(
            "svix-id",
            HeaderValue::from_static("msg_p5jXN8AQM9LWM0D4loKWxJek"),
        );
        h.insert("svix-timestamp", HeaderValue::from_static("1614265330"));
        h.insert(
            "svix-signature",
            HeaderValue::from_str(&format!("v1,bogus v1,{sig}")).unwrap(),
        );
        assert_eq!(check_sender(secret, &h, body, 1614265330 + 10), Ok(()));
        assert_eq!(
            check_sender(secret, &h, body, 1614265330 + 600),
            Err(SenderRejection::Stale)
        );
        assert_eq!(
            check_sender(secret, &h, b"tampered", 1614265330),
            Err(SenderRejection::Wrong)
        );
    }
}
