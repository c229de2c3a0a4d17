//! `Token`: its secret is made by the server, only its hash is stored, and
//! the secret is shown once, in the create answer's `status.token`. The
//! hash never changes (revoke and create another). Tokens are not reviewed
//! by admission policies (a policy could lock everyone out), and a written
//! token is in the authenticator before the client hears of it.

use async_trait::async_trait;
use kapsel_api::kinds::token::TOKEN;
use serde_json::{Value, json};

use super::{Strategy, forbidden};
use crate::App;
use crate::auth::{Identity, hash_secret, new_secret};
use crate::error::ApiError;

#[derive(Debug)]
pub struct Tokens;

#[async_trait]
impl Strategy for Tokens {
    fn admitted(&self) -> bool {
        false
    }

    async fn prepare_for_create(
        &self,
        _app: &App,
        _identity: &Identity,
        _namespace: Option<&str>,
        token: &mut Value,
    ) -> Result<Option<String>, ApiError> {
        let secret = new_secret();
        if !token.get("spec").is_some_and(Value::is_object) {
            token["spec"] = json!({});
        }
        token["spec"]["secretHash"] = Value::String(hash_secret(&secret));
        token.as_object_mut().map(|o| o.remove("status"));
        Ok(Some(secret))
    }

    fn answer_create(&self, answer: &mut Value, shown_once: Option<String>) {
        if let Some(secret) = shown_once {
            answer["status"] = json!({"token": secret});
        }
    }

    fn prepare_for_update(&self, current: &Value, next: &mut Value) -> Result<(), ApiError> {
        if current.pointer("/spec/secretHash") != next.pointer("/spec/secretHash") {
            return Err(forbidden(&TOKEN, current, "spec.secretHash", "field is immutable: revoke the token and create a new one"));
        }
        Ok(())
    }

    async fn after_commit(&self, app: &App, revision: i64) {
        app.auth.caught_up(revision).await;
    }
}
