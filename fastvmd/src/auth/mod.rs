//! Credentials: API keys (`X-API-Key: hlm_…`, stored only as SHA-256),
//! HS256 JWTs (`Authorization: Bearer …`, claims `org` and `exp`) and the
//! JWT secret file in the data directory (see DESIGN.md "Auth").
//!
//! Nothing here touches the store: the daemon hashes a presented key with
//! [`hash_api_key`] and looks the hash up with
//! [`crate::store::Store::lookup_api_key`].

mod jwt;
mod secret;

use sha2::{Digest, Sha256};

pub use jwt::{Claims, mint_jwt, verify_jwt, verify_jwt_at};
pub use secret::{SECRET_LEN, load_or_create_secret};

/// Prefix of every API key.
pub const API_KEY_PREFIX: &str = "hlm_";

/// Random bytes in an API key (hex-encoded after the prefix).
pub const API_KEY_BYTES: usize = 32;

/// Characters of the plaintext kept for display (`hlm_` + 8 hex digits).
const DISPLAY_PREFIX_LEN: usize = API_KEY_PREFIX.len() + 8;

/// Why a request is not authenticated. `Display` is a message fit for the
/// body of the 401 answer; it never echoes the presented credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `X-API-Key` and no `Authorization: Bearer` header.
    #[error("missing credentials: send an X-API-Key header or Authorization: Bearer <jwt>")]
    Missing,
    /// The credential is not shaped like one (bad prefix, not a JWT,
    /// undecodable, missing `org`/`exp` claim...). The text says what.
    #[error("{0}")]
    Malformed(&'static str),
    /// The JWT's `exp` is not in the future.
    #[error("JWT expired")]
    Expired,
    /// Well-formed but not accepted (unknown key, bad signature, wrong
    /// algorithm...). The text says what.
    #[error("{0}")]
    Invalid(&'static str),
    /// The API key exists but was revoked.
    #[error("API key is revoked")]
    Revoked,
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the OS.
fn random_bytes(n: usize) -> Vec<u8> {
    let mut b = vec![0u8; n];
    // The OS RNG failing is unrecoverable for a daemon that mints credentials.
    getrandom::fill(&mut b).expect("OS random number generator failed");
    b
}

/// Lowercase hex SHA-256 of `plaintext`: the only form in which API keys
/// and console tokens are stored.
pub fn hash_api_key(plaintext: &str) -> String {
    hex(&Sha256::digest(plaintext.as_bytes()))
}

/// A new API key: `(plaintext, hash_hex, display_prefix)`. The plaintext is
/// `hlm_` + 64 lowercase hex digits (32 random bytes) and is shown once;
/// store the hash and the display prefix (`hlm_` + first 8 hex digits).
pub fn generate_api_key() -> (String, String, String) {
    let plaintext = format!("{API_KEY_PREFIX}{}", hex(&random_bytes(API_KEY_BYTES)));
    let hash = hash_api_key(&plaintext);
    let prefix = plaintext[..DISPLAY_PREFIX_LEN].to_owned();
    (plaintext, hash, prefix)
}

/// Checks that `key` looks like an API key (prefix, length, hex digits)
/// before it is hashed and looked up.
pub fn check_api_key_format(key: &str) -> Result<(), AuthError> {
    let Some(body) = key.strip_prefix(API_KEY_PREFIX) else {
        return Err(AuthError::Malformed(
            "malformed API key: expected hlm_ prefix",
        ));
    };
    if body.len() != 2 * API_KEY_BYTES || !body.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AuthError::Malformed("malformed API key"));
    }
    Ok(())
}

/// A new one-time token (e.g. for the console): `(plaintext, hash_hex)`,
/// 64 hex digits of randomness; store only the hash.
pub fn generate_token() -> (String, String) {
    let plaintext = hex(&random_bytes(32));
    let hash = hash_api_key(&plaintext);
    (plaintext, hash)
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn parse_bearer(header: &str) -> Result<&str, AuthError> {
    let (scheme, token) = header.trim().split_once(' ').ok_or(AuthError::Malformed(
        "malformed Authorization header: expected Bearer <jwt>",
    ))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed(
            "malformed Authorization header: expected Bearer <jwt>",
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests;
