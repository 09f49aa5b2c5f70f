//! HS256 JWTs with exactly the claims `org` (string) and `exp` (integer
//! Unix seconds), both required.
//!
//! Expiry is checked by us, strictly and without leeway: a token is valid
//! while `now < exp` (RFC 7519: "the current time MUST be before" `exp`).
//! The crate's own `exp` check (which has 60 s default leeway and accepts
//! `now == exp`) is off so that there are no leeway surprises.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::AuthError;

/// The JWT payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Org the bearer acts as.
    pub org: String,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Signs a token for `org` valid for `ttl` (rounded down to whole seconds).
pub fn mint_jwt(secret: &[u8], org: &str, ttl: Duration) -> String {
    let claims = Claims {
        org: org.to_owned(),
        exp: now_secs().saturating_add(ttl.as_secs()),
    };
    // HMAC accepts any key and `Claims` always serialises: cannot fail.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing cannot fail")
}

/// Verifies `token` against `secret` now; returns the `org` claim.
pub fn verify_jwt(secret: &[u8], token: &str) -> Result<String, AuthError> {
    verify_jwt_at(secret, token, now_secs())
}

/// Verifies `token` as of `now` (Unix seconds); returns the `org` claim.
pub fn verify_jwt_at(secret: &[u8], token: &str, now: u64) -> Result<String, AuthError> {
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.validate_exp = false; // checked below, strictly, against `now`
    v.validate_nbf = false;
    v.validate_aud = false;
    v.set_required_spec_claims(&["exp"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(secret), &v)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::Invalid("invalid JWT signature"),
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => {
                AuthError::Invalid("JWT algorithm must be HS256")
            }
            ErrorKind::MissingRequiredClaim(_) => {
                AuthError::Malformed("malformed JWT: the exp claim is required")
            }
            ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Malformed(
                "malformed JWT claims: org (string) and exp (integer seconds) are required",
            ),
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
                AuthError::Malformed("malformed JWT")
            }
            _ => AuthError::Invalid("invalid JWT"),
        })?;
    if now >= data.claims.exp {
        return Err(AuthError::Expired);
    }
    if data.claims.org.is_empty() {
        return Err(AuthError::Malformed("malformed JWT claims: org is empty"));
    }
    Ok(data.claims.org)
}
