//! The admin API under `/-/api/v1/`: registries, users, tokens. Every call needs the `admin`
//! scope. Bodies and answers are JSON; errors use Cargo's envelope like everything else.

use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use super::route::{query_param, Route};
use super::{json_ok, json_status, read_json, HandlerResult};
use crate::config::RegistrySpec;
use crate::registry::admin::{NewToken, RegistryPatch};
use crate::registry::RegistryService;

/// Body of `POST /-/api/v1/users`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    login: String,
    name: Option<String>,
}

async fn registry_json(svc: &RegistryService, spec: &RegistrySpec) -> Result<serde_json::Value, super::ApiError> {
    let mut v = serde_json::to_value(spec).unwrap_or_default();
    v["index"] = json!(svc.index_url(&spec.name));
    v["crates"] = json!(svc.crate_count(&spec.name).await?);
    Ok(v)
}

/// Dispatches an admin route.
pub async fn handle(svc: &RegistryService, route: Route, req: Request<Incoming>, auth: Option<&str>) -> HandlerResult {
    svc.require_admin(auth).await?;
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    match (route, method) {
        (Route::AdminRegistries, Method::GET) => {
            let mut list = Vec::new();
            for spec in svc.registries().values() {
                list.push(registry_json(svc, spec).await?);
            }
            Ok(json_ok(&json!({ "registries": list })))
        }
        (Route::AdminRegistries, _) => {
            let spec: RegistrySpec = read_json(req, svc.limits().max_json_bytes).await?;
            let created = svc.create_registry(spec).await?;
            Ok(json_status(StatusCode::CREATED, &registry_json(svc, &created).await?))
        }
        (Route::AdminRegistry { name }, Method::GET) => Ok(json_ok(&registry_json(svc, &*svc.registry(&name)?).await?)),
        (Route::AdminRegistry { name }, Method::PATCH) => {
            let patch: RegistryPatch = read_json(req, svc.limits().max_json_bytes).await?;
            let spec = svc.update_registry(&name, patch).await?;
            Ok(json_ok(&registry_json(svc, &spec).await?))
        }
        (Route::AdminRegistry { name }, _) => {
            let force = query_param(query.as_deref(), "force").is_some_and(|v| v == "true" || v == "1");
            svc.delete_registry(&name, force).await?;
            Ok(json_ok(
                &json!({"ok": true, "msg": format!("registry `{name}` deleted")}),
            ))
        }
        (Route::AdminUsers, Method::GET) => Ok(json_ok(&svc.list_users().await?)),
        (Route::AdminUsers, _) => {
            let u: NewUser = read_json(req, svc.limits().max_json_bytes).await?;
            Ok(json_status(
                StatusCode::CREATED,
                &svc.create_user(&u.login, u.name).await?,
            ))
        }
        (Route::AdminTokens, Method::GET) => {
            let user = query_param(query.as_deref(), "user");
            Ok(json_ok(&svc.list_tokens(user.as_deref()).await?))
        }
        (Route::AdminTokens, _) => {
            let t: NewToken = read_json(req, svc.limits().max_json_bytes).await?;
            Ok(json_status(StatusCode::CREATED, &svc.create_token(t).await?))
        }
        (Route::AdminToken { id }, _) => {
            svc.revoke_token(&id).await?;
            Ok(json_ok(&json!({"ok": true, "msg": format!("token `{id}` revoked")})))
        }
        _ => Ok(json_status(
            StatusCode::NOT_FOUND,
            &json!({"errors": [{"detail": "no such admin endpoint"}]}),
        )),
    }
}
