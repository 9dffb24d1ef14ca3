//! The REST client the CLI commands share.

use crate::api::error::ErrorBody;
use clap::Args;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// Errors of CLI commands talking to the agent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No token was found.
    #[error("No API token: set HYPERLET_TOKEN or make {0} readable (run as root on the node)")]
    NoToken(PathBuf),
    /// A client TLS file cannot be used.
    #[error("Cannot use {path}: {reason}")]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The agent could not be reached.
    #[error("Cannot reach the agent at {url} (is `hyperlet serve` running? set HYPERLET_URL)")]
    Unreachable {
        /// The URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// The agent answered with an error.
    #[error("The agent answered {status}: {message} ({code})")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// Error code.
        code: String,
        /// Error message.
        message: String,
    },
    /// The command line is not usable.
    #[error("{0}")]
    Usage(String),
    /// The agent accepted the work but it failed.
    #[error("{0}")]
    Failed(String),
    /// The answer could not be decoded.
    #[error("Unexpected answer from the agent: {0}")]
    Decode(String),
    /// The server moved to another node (a migration): ask that node's agent.
    #[error("The server moved to node {node}: ask its agent at {api_url}")]
    Moved {
        /// The node.
        node: String,
        /// Its agent's URL.
        api_url: String,
    },
}

/// Connection options shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Agent URL [default: http://127.0.0.1:8787].
    #[arg(long, env = "HYPERLET_URL")]
    pub url: Option<String>,
    /// API token [default: read from <state-dir>/admin.token].
    #[arg(long, env = "HYPERLET_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// State directory holding admin.token [default: /var/lib/hyperlet].
    #[arg(long, env = "HYPERLET_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// PEM CA certificate to verify the agent's TLS certificate.
    #[arg(long, env = "HYPERLET_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
    /// PEM client certificate and key (one file with both) for mutual TLS.
    #[arg(long, env = "HYPERLET_CLIENT_IDENTITY")]
    pub client_identity: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// A client of one agent.
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|e| ClientError::TlsFile {
        path: path.clone(),
        reason: e.to_string(),
    })
}

impl ApiClient {
    /// Builds a client from the command's options.
    ///
    /// # Errors
    /// [`ClientError::NoToken`] when no token is found, [`ClientError::TlsFile`] for unusable
    /// TLS files.
    pub fn from_args(args: &ClientArgs) -> Result<Self, ClientError> {
        let token = match &args.token {
            Some(t) => t.clone(),
            None => {
                let dir = args
                    .state_dir
                    .clone()
                    .unwrap_or_else(super::default_state_dir);
                let path = dir.join("admin.token");
                crate::auth::read_token(&path)
                    .map_err(|_| ClientError::NoToken(path))?
                    .as_str()
                    .to_string()
            }
        };
        // A redirect is an answer (a moved server): never followed, never sent the token.
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if let Some(ca) = &args.ca_cert {
            let cert = reqwest::Certificate::from_pem(&read_file(ca)?).map_err(|e| {
                ClientError::TlsFile {
                    path: ca.clone(),
                    reason: e.to_string(),
                }
            })?;
            builder = builder.add_root_certificate(cert);
        }
        if let Some(id) = &args.client_identity {
            let identity =
                reqwest::Identity::from_pem(&read_file(id)?).map_err(|e| ClientError::TlsFile {
                    path: id.clone(),
                    reason: e.to_string(),
                })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        let base = args
            .url
            .clone()
            .unwrap_or_else(super::default_url)
            .trim_end_matches('/')
            .to_string();
        Ok(Self { http, base, token })
    }

    /// Sends a request whose answer has no body (204).
    ///
    /// # Errors
    /// As [`ApiClient::request`].
    pub async fn request_empty(&self, method: Method, path: &str) -> Result<(), ClientError> {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        self.decode::<Value>(resp, true).await.map(|_| ())
    }

    /// Streams `body` (`length` bytes) with `PUT` as `application/octet-stream`.
    ///
    /// # Errors
    /// As [`ApiClient::request`].
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        body: reqwest::Body,
        length: u64,
    ) -> Result<T, ClientError> {
        let resp = self
            .http
            .put(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, length)
            .timeout(Duration::from_secs(24 * 3600))
            .body(body)
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        self.decode(resp, false).await
    }

    /// Sends a request and decodes the JSON answer.
    ///
    /// # Errors
    /// [`ClientError`] for transport failures, error answers and undecodable bodies.
    pub async fn request<T: DeserializeOwned, B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<T, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &url).bearer_auth(&self.token);
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        self.decode(resp, false).await
    }

    async fn decode<T: DeserializeOwned>(
        &self,
        resp: reqwest::Response,
        empty_ok: bool,
    ) -> Result<T, ClientError> {
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Unreachable {
                url: self.base.clone(),
                source,
            })?;
        if status == StatusCode::MOVED_PERMANENTLY {
            let body: Value = serde_json::from_slice(&bytes).unwrap_or_default();
            return Err(ClientError::Moved {
                node: body["moved_to"]["node"].as_str().unwrap_or("?").to_string(),
                api_url: body["moved_to"]["api_url"]
                    .as_str()
                    .unwrap_or("?")
                    .to_string(),
            });
        }
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBodyOwned>(&bytes) {
                Ok(body) => ClientError::Api {
                    status,
                    code: body.error.code,
                    message: body.error.message,
                },
                Err(_) => ClientError::Api {
                    status,
                    code: "unknown".into(),
                    message: String::from_utf8_lossy(&bytes).into_owned(),
                },
            });
        }
        if empty_ok && bytes.is_empty() {
            return serde_json::from_value(Value::Null)
                .map_err(|e| ClientError::Decode(e.to_string()));
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }
}

/// [`ErrorBody`] for decoding.
#[derive(serde::Deserialize)]
struct ErrorBodyOwned {
    error: ErrorDetailOwned,
}

#[derive(serde::Deserialize)]
struct ErrorDetailOwned {
    code: String,
    message: String,
}

// Keep the decoding types in step with the server's.
const _: fn(ErrorBody) = |_| {};
