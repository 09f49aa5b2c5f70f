//! Who is calling: API keys (`X-API-Key`) and HS256 JWTs (`Authorization:
//! Bearer`). Failures are 401s whose message says what is wrong.

use super::{Caller, Service, ServiceError};
use crate::auth::{self, AuthError};

fn unauthorized(e: AuthError) -> ServiceError {
    ServiceError::Unauthorized(e.to_string())
}

impl Service {
    /// Resolves the credentials of a request. `api_key` is the X-API-Key
    /// header, `authorization` the Authorization header.
    pub async fn authenticate(
        &self,
        api_key: Option<String>,
        authorization: Option<String>,
    ) -> Result<Caller, ServiceError> {
        self.db(move |inner| {
            if let Some(key) = api_key {
                auth::check_api_key_format(&key).map_err(unauthorized)?;
                let found = inner.store.lookup_api_key(&auth::hash_api_key(&key))?;
                return match found {
                    Some(k) if k.revoked => Err(unauthorized(AuthError::Revoked)),
                    Some(k) => Ok(Caller {
                        org_id: k.org_id,
                        admin: false,
                    }),
                    None => Err(ServiceError::Unauthorized("unknown API key".into())),
                };
            }
            let Some(header) = authorization else {
                return Err(unauthorized(AuthError::Missing));
            };
            let token = auth::parse_bearer(&header).map_err(unauthorized)?;
            let org = auth::verify_jwt(&inner.jwt_secret, token).map_err(unauthorized)?;
            match inner.store.get_org(&org)? {
                Some(org) => Ok(Caller {
                    org_id: org.id,
                    admin: false,
                }),
                None => Err(ServiceError::Unauthorized(
                    "JWT names an organization that does not exist".into(),
                )),
            }
        })
        .await
    }

    /// The local default organization (socket callers without `apiKey`),
    /// which may run admin operations.
    pub async fn default_caller(&self) -> Result<Caller, ServiceError> {
        self.db(|inner| match inner.store.default_org()? {
            Some(org) => Ok(Caller {
                org_id: org.id,
                admin: true,
            }),
            None => Err(ServiceError::Internal("no default organization".into())),
        })
        .await
    }
}
