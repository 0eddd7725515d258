//! JWT authentication of the Engine API (execution-apis `authentication.md`): every HTTP
//! request carries `Authorization: Bearer <token>`, a JWT signed with HMAC-SHA256 (`HS256`)
//! under the 32-byte secret shared with the consensus client, whose `iat` claim is within
//! ±60 s of now. `alg: none` and every other algorithm are refused. Sans-IO: strings and
//! clock values in, a verdict out.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far `iat` may be from now, either way.
pub const IAT_WINDOW_S: u64 = 60;
/// Longest token accepted (a real one is ~150 bytes).
pub const MAX_TOKEN_BYTES: usize = 4096;

/// The shared secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(pub [u8; 32]);

impl std::fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtSecret(..)")
    }
}

/// Why a request is not authenticated (answered with HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("missing Authorization header")]
    Missing,
    #[error("Authorization is not \"Bearer <token>\"")]
    NotBearer,
    #[error("token longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    #[error("token is not three base64url parts")]
    Malformed,
    #[error("token header: {0}")]
    BadHeader(String),
    #[error("token algorithm {0:?} refused (only HS256)")]
    Algorithm(String),
    #[error("token signature does not match the secret")]
    Signature,
    #[error("token claims: {0}")]
    BadClaims(String),
    #[error("token has no iat claim")]
    NoIat,
    #[error("token iat {iat} is {off} s from now ({now}); at most {IAT_WINDOW_S} s allowed")]
    Stale { iat: u64, now: u64, off: u64 },
}

/// Why a secret file is refused.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a hex-encoded 32-byte secret ({why})")]
    Format { path: String, why: String },
}

impl JwtSecret {
    /// Parse the file contents: 64 hex digits, optionally `0x`-prefixed, surrounding
    /// whitespace ignored.
    pub fn parse(text: &str) -> Result<JwtSecret, String> {
        let t = text.trim();
        let t = t
            .strip_prefix("0x")
            .or_else(|| t.strip_prefix("0X"))
            .unwrap_or(t);
        if t.len() != 64 {
            return Err(format!("{} hex digits, not 64", t.len()));
        }
        let mut k = [0u8; 32];
        hex::decode_to_slice(t, &mut k).map_err(|e| e.to_string())?;
        Ok(JwtSecret(k))
    }

    /// Read the secret from `path` (the `--jwt-secret` file).
    pub fn load(path: &std::path::Path) -> Result<JwtSecret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        JwtSecret::parse(&text).map_err(|why| SecretError::Format {
            path: path.display().to_string(),
            why,
        })
    }

    /// A fresh random secret.
    pub fn random() -> JwtSecret {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut k);
        JwtSecret(k)
    }

    /// The file form: `0x` and 64 hex digits.
    pub fn to_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length")
    }

    /// A token as a consensus client makes it: `{"alg":"HS256","typ":"JWT"}` and
    /// `{"iat": iat}`, signed with this secret.
    pub fn token(&self, iat: u64) -> String {
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{iat}}}"#));
        let signing = format!("{head}.{claims}");
        let mut m = self.mac();
        m.update(signing.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        format!("{signing}.{sig}")
    }

    /// Check a token: algorithm HS256, signature under this secret, `iat` within
    /// [`IAT_WINDOW_S`] of `now_s`. Returns the `iat`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<u64, JwtError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(JwtError::TooLong);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let head = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtError::Malformed)?;
        let head: serde_json::Value =
            serde_json::from_slice(&head).map_err(|e| JwtError::BadHeader(e.to_string()))?;
        let alg = head
            .get("alg")
            .and_then(|a| a.as_str())
            .ok_or_else(|| JwtError::BadHeader("no alg".into()))?;
        if alg != "HS256" {
            return Err(JwtError::Algorithm(alg.chars().take(16).collect()));
        }
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtError::Malformed)?;
        let mut m = self.mac();
        m.update(h.as_bytes());
        m.update(b".");
        m.update(c.as_bytes());
        // Constant-time comparison.
        m.verify_slice(&sig).map_err(|_| JwtError::Signature)?;
        let claims = URL_SAFE_NO_PAD.decode(c).map_err(|_| JwtError::Malformed)?;
        let claims: serde_json::Value =
            serde_json::from_slice(&claims).map_err(|e| JwtError::BadClaims(e.to_string()))?;
        if !claims.is_object() {
            return Err(JwtError::BadClaims("not an object".into()));
        }
        let iat = match claims.get("iat") {
            None | Some(serde_json::Value::Null) => return Err(JwtError::NoIat),
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .ok_or_else(|| JwtError::BadClaims("iat is not a number of seconds".into()))?,
        };
        let off = iat.abs_diff(now_s);
        if off > IAT_WINDOW_S {
            return Err(JwtError::Stale {
                iat,
                now: now_s,
                off,
            });
        }
        Ok(iat)
    }

    /// Check an `Authorization` header value (`Bearer <token>`; `None` when absent).
    pub fn authorize(&self, header: Option<&str>, now_s: u64) -> Result<u64, JwtError> {
        let v = header.ok_or(JwtError::Missing)?.trim();
        let (scheme, token) = v.split_once(' ').ok_or(JwtError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(JwtError::NotBearer);
        }
        self.verify(token.trim(), now_s)
    }
}

/// Seconds since the Unix epoch.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_765_000_000;

    fn secret() -> JwtSecret {
        JwtSecret::parse("0x7365637265747365637265747365637265747365637265747365637265747365")
            .unwrap()
    }

    #[test]
    fn a_good_token_passes_within_sixty_seconds_either_way() {
        let s = secret();
        for iat in [NOW, NOW - 60, NOW + 60, NOW - 1] {
            assert_eq!(s.verify(&s.token(iat), NOW), Ok(iat));
            let h = format!("Bearer {}", s.token(iat));
            assert_eq!(s.authorize(Some(&h), NOW), Ok(iat));
        }
    }

    /// Tokens made by an independent HMAC-SHA256 implementation (Python's `hmac`), one
    /// with the optional `id` and `clv` claims a consensus client may add.
    #[test]
    fn tokens_signed_elsewhere_are_accepted_and_ours_match_them() {
        let s = secret();
        let plain = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3NjUwMDAwMDB9.ofKy3dJnW_FTE3o7VbVRClwdhYMKVZdYuJuUoH3mNGk";
        assert_eq!(s.token(NOW), plain);
        assert_eq!(s.verify(plain, NOW), Ok(NOW));
        let with_claims = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpYXQiOjE3NjUwMDAwMTAsImlkIjoibGlnaHRob3VzZSIsImNsdiI6InY1LjAuMCJ9.L8OvoD1NxylRCkEKbcq-uSR1wxAkx3YShzHVdQnE7DQ";
        assert_eq!(s.verify(with_claims, NOW), Ok(NOW + 10));
    }

    #[test]
    fn expired_or_future_iat_is_refused() {
        let s = secret();
        assert!(matches!(
            s.verify(&s.token(NOW - 61), NOW),
            Err(JwtError::Stale { off: 61, .. })
        ));
        assert!(matches!(
            s.verify(&s.token(NOW + 61), NOW),
            Err(JwtError::Stale { off: 61, .. })
        ));
    }

    #[test]
    fn another_secret_or_a_changed_token_is_refused() {
        let s = secret();
        let other = JwtSecret([7u8; 32]);
        assert_eq!(s.verify(&other.token(NOW), NOW), Err(JwtError::Signature));
        // The claims changed after signing (iat moved): the signature no longer matches.
        let t = s.token(NOW);
        let mut parts: Vec<&str> = t.split('.').collect();
        let moved = URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{}}}"#, NOW + 1));
        parts[1] = &moved;
        assert_eq!(s.verify(&parts.join("."), NOW), Err(JwtError::Signature));
        // A truncated signature.
        assert_eq!(s.verify(&t[..t.len() - 3], NOW), Err(JwtError::Signature));
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let s = secret();
        let claims = URL_SAFE_NO_PAD.encode(format!(r#"{{"iat":{NOW}}}"#));
        for alg in ["none", "HS512", "RS256"] {
            let head = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            let t = format!("{head}.{claims}.");
            assert_eq!(
                s.verify(&t, NOW),
                Err(JwtError::Algorithm(alg.into())),
                "{alg}"
            );
        }
    }

    #[test]
    fn missing_header_or_iat_and_junk_are_refused() {
        let s = secret();
        assert_eq!(s.authorize(None, NOW), Err(JwtError::Missing));
        assert_eq!(
            s.authorize(Some(&s.token(NOW)), NOW),
            Err(JwtError::NotBearer)
        );
        assert_eq!(
            s.authorize(Some(&format!("Basic {}", s.token(NOW))), NOW),
            Err(JwtError::NotBearer)
        );
        assert_eq!(s.verify("a.b", NOW), Err(JwtError::Malformed));
        assert_eq!(s.verify("a.b.c.d", NOW), Err(JwtError::Malformed));
        assert_eq!(s.verify("!!.!!.!!", NOW), Err(JwtError::Malformed));
        // Signed, but without iat.
        let head = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let claims = URL_SAFE_NO_PAD.encode(br#"{"id":"cl"}"#);
        let mut m = s.mac();
        m.update(format!("{head}.{claims}").as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
        assert_eq!(
            s.verify(&format!("{head}.{claims}.{sig}"), NOW),
            Err(JwtError::NoIat)
        );
        assert_eq!(
            s.verify(&"a".repeat(MAX_TOKEN_BYTES + 1), NOW),
            Err(JwtError::TooLong)
        );
    }

    #[test]
    fn secret_files_are_64_hex_digits_with_optional_0x() {
        let k = "11".repeat(32);
        assert_eq!(JwtSecret::parse(&k).unwrap().0, [0x11; 32]);
        assert_eq!(JwtSecret::parse(&format!("0x{k}\n")).unwrap().0, [0x11; 32]);
        assert!(JwtSecret::parse(&k[..62]).is_err());
        assert!(JwtSecret::parse(&format!("{k}00")).is_err());
        assert!(JwtSecret::parse(&"zz".repeat(32)).is_err());
        let r = JwtSecret::random();
        assert_eq!(JwtSecret::parse(&r.to_hex()).unwrap(), r);
    }
}
