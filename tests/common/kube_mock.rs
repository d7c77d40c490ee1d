//! A mock Kubernetes API server for unit-level tests of kube clients (`tower_test::mock::pair`):
//! every request is logged, and a closure answers it with JSON, a watch stream, or nothing.

use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

pub type Req = http::Request<kube::client::Body>;
pub type Resp = http::Response<kube::client::Body>;

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub body: String,
}

impl Logged {
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|p| p == "watch=true")
    }

    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// How the mock answers one request.
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A plain-text body with a status code (`/readyz`).
    Text(u16, String),
    /// A watch response: one event per line, then the stream ends.
    Watch(Vec<Value>),
    /// Never answer (a watch with nothing new).
    Hang,
}

pub type Log = Arc<Mutex<Vec<Logged>>>;

/// A kube client whose every request is logged and answered by `respond`.
pub fn mock(mut respond: impl FnMut(&Logged) -> Reply + Send + 'static) -> (kube::Client, Log) {
    let (svc, mut handle) = tower_test::mock::pair::<Req, Resp>();
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let log2 = log.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some((req, send)) = handle.next_request().await {
            let (parts, body) = req.into_parts();
            let body = body
                .collect_bytes()
                .await
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let entry = Logged {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or("").to_owned(),
                body,
            };
            let reply = respond(&entry);
            log2.lock().expect("log").push(entry);
            let response = |code: u16, bytes: Vec<u8>| {
                http::Response::builder()
                    .status(code)
                    .header("content-type", "application/json")
                    .body(kube::client::Body::from(bytes))
                    .expect("response")
            };
            match reply {
                Reply::Json(code, v) => {
                    send.send_response(response(code, serde_json::to_vec(&v).expect("json")))
                }
                Reply::Text(code, t) => send.send_response(response(code, t.into_bytes())),
                Reply::Watch(events) => {
                    let mut body = Vec::new();
                    for e in events {
                        body.extend(serde_json::to_vec(&e).expect("json"));
                        body.push(b'\n');
                    }
                    send.send_response(response(200, body));
                }
                Reply::Hang => held.push(send),
            }
        }
    });
    (kube::Client::new(svc, "default"), log)
}

pub fn requests(log: &Log) -> Vec<Logged> {
    log.lock().expect("log").clone()
}

pub fn status_json(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

pub fn list(kind: &str, api_version: &str, rv: &str, items: Vec<Value>) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "metadata": {"resourceVersion": rv}, "items": items})
}

pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// A 404 `Status` answer.
pub fn not_found() -> Reply {
    Reply::Json(404, status_json(404, "NotFound", "not found"))
}
