//! The HTTP client shared by setup, the scenario workers and the checks.

use reqwest::{Method, StatusCode};
use serde_json::Value;

#[derive(Clone)]
pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub admin: String,
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = req.send().await.map_err(|e| format!("{e}"))?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| format!("{e}"))?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    pub async fn admin(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let (status, body) = self
            .call(method, path, &self.admin, body)
            .await
            .map_err(anyhow::Error::msg)?;
        if !status.is_success() {
            anyhow::bail!("{path}: {status} {body}");
        }
        Ok(body)
    }

    /// A plain-text GET (the Prometheus `/metrics` page), as admin in case it is ever protected.
    pub async fn text(&self, path: &str) -> anyhow::Result<String> {
        let response = self
            .http
            .get(format!("{}{}", self.base, path))
            .bearer_auth(&self.admin)
            .send()
            .await?;
        let status = response.status();
        if !status.is_success() {
            anyhow::bail!("{path}: {status}");
        }
        Ok(response.text().await?)
    }
}
