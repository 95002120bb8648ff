//! Standard Webhooks / Svix signatures: base64(HMAC-SHA256(key, `{id}.{ts}.{body}`)) in a
//! `v1,<base64>` header, keyed by the base64 after `whsec_` in a secret.
//!
//! `meethook trigger` and `meethook replay --resign` sign with it; the relay verifies a
//! channel's sender signatures with it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The header prefixes of signed webhooks: Standard Webhooks (`webhook-*`), then Svix
/// (`svix-*`).
pub const PREFIXES: [&str; 2] = ["webhook", "svix"];

/// How far a signature's timestamp may be from now, in seconds (Standard Webhooks' 5 minutes).
pub const TIMESTAMP_TOLERANCE_SECS: i64 = 5 * 60;

/// The key bytes of the base64 part of a `whsec_` secret (the text after `whsec_`).
pub fn decode_key(b64: &str) -> Option<Vec<u8>> {
    B64.decode(b64).ok()
}

/// A key to sign and verify with. Its `Debug` shows none of it.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// The key of a secret: the base64 after `whsec_`, or the secret's own bytes when it has
    /// no such prefix (as a channel's sender secret may be). `None` for bad base64.
    pub fn from_secret(secret: &str) -> Option<SigningKey> {
        match secret.strip_prefix("whsec_") {
            Some(k) => decode_key(k).map(SigningKey),
            None => Some(SigningKey(secret.as_bytes().to_vec())),
        }
    }

    /// The signature of a message, in base64 without the `v1,`.
    pub fn sign(&self, id: &str, ts: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(ts.as_bytes());
        mac.update(b".");
        mac.update(body);
        B64.encode(mac.finalize().into_bytes())
    }

    /// Whether one of the space-separated `v1,<base64>` signatures of a signature header
    /// is this key's for the message (compared in constant time).
    pub fn verify(&self, id: &str, ts: &str, body: &[u8], signatures: &str) -> bool {
        let expected = self.sign(id, ts, body);
        signatures.split(' ').any(|s| {
            s.strip_prefix("v1,")
                .is_some_and(|sig| sig.as_bytes().ct_eq(expected.as_bytes()).into())
        })
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(MASKED)")
    }
}

/// [`SigningKey::sign`] with the key of `secret` (see [`SigningKey::from_secret`]).
pub fn sign(secret: &str, id: &str, ts: &str, body: &[u8]) -> Option<String> {
    SigningKey::from_secret(secret).map(|k| k.sign(id, ts, body))
}

/// The first complete set of signature headers, by [`PREFIXES`]: id, timestamp,
/// signatures. `get` looks a header up by its lower-case name.
pub fn signature_headers<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Option<(&'a str, &'a str, &'a str)> {
    PREFIXES.into_iter().find_map(|prefix| {
        let get = |n: &str| get(&format!("{prefix}-{n}"));
        Some((get("id")?, get("timestamp")?, get("signature")?))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standard_webhooks_test_vector() {
        // From the Standard Webhooks specification.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let body = br#"{"test": 2432232314}"#;
        let sig = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body);
        assert_eq!(sig, "g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        let header = format!("v1,bogus v1,{sig}");
        assert!(key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, &header));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", b"x", &header));
        assert!(!key.verify("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", body, &sig));
        assert!(format!("{key:?}").contains("MASKED"));
    }

    #[test]
    fn keys_and_headers() {
        assert!(SigningKey::from_secret("whsec_!!").is_none());
        assert_eq!(sign("raw", "i", "1", b""), sign("raw", "i", "1", b""));
        let headers = [
            ("svix-id", "a"),
            ("svix-timestamp", "1"),
            ("svix-signature", "v1,x"),
        ];
        let get = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| *v);
        assert_eq!(signature_headers(get), Some(("a", "1", "v1,x")));
        assert_eq!(signature_headers(|_| None), None);
    }
}
