//! Organizations, API keys, JWTs and quota limits: the default org on first
//! start, and the admin operations of the local socket.

use std::time::Duration;

use fastvm_proto::api::{OrgQuotaUsage, OrgQuotaValues};
use fastvm_proto::socket::{EventKind, EventOp};
use serde::Serialize;

use super::convert::{quota, store_quota};
use super::{Caller, Inner, Service, ServiceError};
use crate::auth;

/// A new API key: the plaintext is shown once and never stored.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewApiKey {
    pub id: String,
    pub org_id: String,
    pub key: String,
    pub prefix: String,
}

/// Name of the organization created on first start.
pub const DEFAULT_ORG_NAME: &str = "default";

fn create_key(inner: &Inner, org_id: &str) -> Result<NewApiKey, ServiceError> {
    let (key, hash, prefix) = auth::generate_api_key();
    let row = inner.store.insert_api_key(org_id, &hash, &prefix)?;
    Ok(NewApiKey {
        id: row.id,
        org_id: org_id.to_string(),
        key,
        prefix,
    })
}

pub(super) fn quota_usage(inner: &Inner, org_id: &str) -> Result<OrgQuotaUsage, ServiceError> {
    if inner.store.get_org(org_id)?.is_none() {
        return Err(ServiceError::NotFound(format!(
            "organization {org_id} not found"
        )));
    }
    Ok(OrgQuotaUsage {
        org_id: org_id.to_string(),
        limits: quota(inner.store.quota_limits(org_id)?),
        usage: quota(inner.store.quota_usage(org_id)?),
    })
}

/// Tells watchers of `org_id` that its usage changed.
pub(super) fn emit_quota(inner: &Inner, org_id: &str) {
    if let Ok(usage) = quota_usage(inner, org_id) {
        inner.emit(EventKind::Quota, EventOp::Updated, org_id, &usage);
    }
}

impl Service {
    /// Creates the default org and its first key on the very first start.
    pub(super) fn ensure_default_org(&self) -> Result<Option<NewApiKey>, ServiceError> {
        let inner = &self.inner;
        if inner.store.default_org()?.is_some() {
            return Ok(None);
        }
        let org = inner.store.create_org(DEFAULT_ORG_NAME)?;
        create_key(inner, &org.id).map(Some)
    }

    /// getOrgQuotas.
    pub async fn get_org_quotas(&self, caller: &Caller) -> Result<OrgQuotaUsage, ServiceError> {
        let org = caller.org_id.clone();
        self.db(move |inner| quota_usage(inner, &org)).await
    }

    /// Admin: a new organization with its first API key.
    pub async fn create_org(&self, name: String) -> Result<NewApiKey, ServiceError> {
        if name.is_empty() || name.chars().count() > 64 {
            return Err(ServiceError::BadRequest(
                "name: must be 1 to 64 characters".into(),
            ));
        }
        self.db(move |inner| {
            let org = inner.store.create_org(&name)?;
            create_key(inner, &org.id)
        })
        .await
    }

    /// Admin: another API key for `org_id`.
    pub async fn create_api_key(&self, org_id: String) -> Result<NewApiKey, ServiceError> {
        self.db(move |inner| create_key(inner, &org_id)).await
    }

    /// Admin: revokes a key; requests with it get 401 from now on.
    pub async fn revoke_api_key(&self, key_id: String) -> Result<(), ServiceError> {
        self.db(move |inner| {
            if inner.store.revoke_api_key(&key_id)? {
                Ok(())
            } else {
                Err(ServiceError::NotFound(format!(
                    "API key {key_id} not found"
                )))
            }
        })
        .await
    }

    /// Admin: sets the quota limits of `org_id`.
    pub async fn set_quota_limits(
        &self,
        org_id: String,
        limits: OrgQuotaValues,
    ) -> Result<OrgQuotaUsage, ServiceError> {
        self.db(move |inner| {
            if inner.store.get_org(&org_id)?.is_none() {
                return Err(ServiceError::NotFound(format!(
                    "organization {org_id} not found"
                )));
            }
            inner
                .store
                .set_quota_limits(&org_id, store_quota(&limits))?;
            emit_quota(inner, &org_id);
            quota_usage(inner, &org_id)
        })
        .await
    }

    /// Admin: a JWT for `org_id`, valid for `ttl`.
    pub async fn mint_token(&self, org_id: String, ttl: Duration) -> Result<String, ServiceError> {
        self.db(move |inner| {
            if inner.store.get_org(&org_id)?.is_none() {
                return Err(ServiceError::NotFound(format!(
                    "organization {org_id} not found"
                )));
            }
            Ok(auth::mint_jwt(&inner.jwt_secret, &org_id, ttl))
        })
        .await
    }
}
