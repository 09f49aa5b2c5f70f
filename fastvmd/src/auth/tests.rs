//! Auth tests: API keys, JWTs, secret file.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::*;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn sign(alg: Algorithm, claims: serde_json::Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[test]
fn api_key_shape_and_hash() {
    let (plain, hash, prefix) = generate_api_key();
    assert!(plain.starts_with("hlm_"));
    assert_eq!(plain.len(), 4 + 64);
    assert_eq!(hash, hash_api_key(&plain));
    assert_eq!(hash.len(), 64);
    assert!(plain.starts_with(&prefix) && prefix.len() == 12);
    check_api_key_format(&plain).unwrap();
    assert!(matches!(
        check_api_key_format("hlm_xyz"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        check_api_key_format(&plain[4..]),
        Err(AuthError::Malformed(_))
    ));
    let (other, ..) = generate_api_key();
    assert_ne!(plain, other);
    // Known vector: SHA-256("abc").
    assert_eq!(
        hash_api_key("abc"),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    let (tok, tok_hash) = generate_token();
    assert_eq!(hash_api_key(&tok), tok_hash);
}

#[test]
fn error_messages_fit_a_401() {
    assert_eq!(AuthError::Revoked.to_string(), "API key is revoked");
    assert_eq!(AuthError::Expired.to_string(), "JWT expired");
    assert!(AuthError::Missing.to_string().contains("X-API-Key"));
}

#[test]
fn bearer_header() {
    assert_eq!(parse_bearer("Bearer abc.def.ghi").unwrap(), "abc.def.ghi");
    assert_eq!(parse_bearer("bearer  t ").unwrap(), "t");
    assert!(parse_bearer("Basic abc").is_err());
    assert!(parse_bearer("Bearer").is_err());
}

#[test]
fn jwt_roundtrip() {
    let t = mint_jwt(SECRET, "org-1", Duration::from_secs(60));
    assert_eq!(verify_jwt(SECRET, &t).unwrap(), "org-1");
}

#[test]
fn jwt_expiry_is_strict() {
    let exp = 1_000_000u64;
    let t = sign(
        Algorithm::HS256,
        serde_json::json!({"org": "o", "exp": exp}),
        SECRET,
    );
    assert_eq!(verify_jwt_at(SECRET, &t, exp - 1).unwrap(), "o");
    assert_eq!(verify_jwt_at(SECRET, &t, exp), Err(AuthError::Expired));
    assert_eq!(verify_jwt(SECRET, &t), Err(AuthError::Expired));
    let zero = mint_jwt(SECRET, "o", Duration::ZERO);
    assert_eq!(verify_jwt(SECRET, &zero), Err(AuthError::Expired));
}

#[test]
fn jwt_tampered_or_wrong_secret() {
    let t = mint_jwt(SECRET, "org-1", Duration::from_secs(60));
    assert!(matches!(
        verify_jwt(b"another secret another secret!!", &t),
        Err(AuthError::Invalid(_))
    ));
    // Swap the payload for one naming another org, keep the signature.
    let forged = mint_jwt(b"attacker", "org-2", Duration::from_secs(60));
    let parts: Vec<&str> = t.split('.').collect();
    let fparts: Vec<&str> = forged.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], fparts[1], parts[2]);
    assert!(matches!(
        verify_jwt(SECRET, &tampered),
        Err(AuthError::Invalid(_))
    ));
    let hs512 = sign(
        Algorithm::HS512,
        serde_json::json!({"org": "o", "exp": u32::MAX}),
        SECRET,
    );
    assert!(matches!(
        verify_jwt(SECRET, &hs512),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        verify_jwt(SECRET, "not-a-jwt"),
        Err(AuthError::Malformed(_))
    ));
    assert!(matches!(
        verify_jwt(SECRET, ""),
        Err(AuthError::Malformed(_))
    ));
}

#[test]
fn jwt_missing_claims() {
    let far = u64::from(u32::MAX);
    for claims in [
        serde_json::json!({"org": "o"}),
        serde_json::json!({"exp": far}),
        serde_json::json!({"org": 5, "exp": far}),
        serde_json::json!({"org": "o", "exp": "soon"}),
        serde_json::json!({"org": "", "exp": far}),
    ] {
        let t = sign(Algorithm::HS256, claims.clone(), SECRET);
        assert!(
            matches!(verify_jwt(SECRET, &t), Err(AuthError::Malformed(_))),
            "{claims} gave {:?}",
            verify_jwt(SECRET, &t)
        );
    }
}

#[test]
fn secret_file_created_0600_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.secret");
    let a = load_or_create_secret(&path).unwrap();
    assert_eq!(a.len(), SECRET_LEN);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert_eq!(load_or_create_secret(&path).unwrap(), a);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "no temp file left"
    );
}

#[test]
fn secret_file_loose_mode_is_fixed_and_short_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.secret");
    std::fs::write(&path, [7u8; 32]).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(load_or_create_secret(&path).unwrap(), vec![7u8; 32]);
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    std::fs::write(&path, [7u8; 5]).unwrap();
    let err = load_or_create_secret(&path).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
}
