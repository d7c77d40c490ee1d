//! A small Kubernetes API server in memory, on loopback, for tests that run a whole command
//! against "a cluster" without one: objects are created, read, listed and deleted as the real
//! API does it (resource versions, label and `metadata.name` field selectors, LIST then WATCH
//! with a stream of events, a namespace's objects deleted with it), and `pods/exec` is a real
//! WebSocket upgrade speaking `v4.channel.k8s.io`. What a kubelet or a controller would do
//! (pods becoming Ready, a DaemonSet rolling out) the test does through [`FakeApi::with`] or the
//! `on_create` hook. Not the real thing: `tests/k8s_real.rs` runs the real API server; this one
//! exists for what that cannot do without nodes — exec into an agent, pods that run.
#![allow(dead_code)]

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::{self, Message, protocol::Role};

type Body = BoxBody<Bytes, Infallible>;

/// Where an object lives: API prefix (`/api/v1`, `/apis/apps/v1`), namespace, plural, name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub prefix: String,
    pub namespace: Option<String>,
    pub plural: String,
    pub name: String,
}

impl Key {
    pub fn new(prefix: &str, namespace: Option<&str>, plural: &str, name: &str) -> Key {
        Key {
            prefix: prefix.into(),
            namespace: namespace.map(Into::into),
            plural: plural.into(),
            name: name.into(),
        }
    }
}

/// A request path, taken apart.
#[derive(Debug)]
struct Path {
    prefix: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
    sub: Option<String>,
}

fn parse_path(p: &str) -> Option<Path> {
    let parts: Vec<&str> = p.trim_matches('/').split('/').collect();
    let (prefix, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (format!("/api/{v}"), rest),
        ["apis", g, v, rest @ ..] => (format!("/apis/{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, r, rest @ ..] => (Some(ns.to_string()), [&[*r][..], rest].concat()),
        _ => (None, rest.to_vec()),
    };
    let mut it = rest.into_iter();
    Some(Path {
        prefix,
        namespace,
        plural: it.next()?.to_string(),
        name: it.next().map(str::to_string),
        sub: it.next().map(str::to_string),
    })
}

/// One change, as a watch sends it.
#[derive(Debug, Clone)]
struct Change {
    rv: u64,
    kind: &'static str,
    key: Key,
    object: Value,
}

/// A hook run on every create (after the server filled in the metadata), to play kubelet or
/// controller: set a pod's status, a Service's addresses.
pub type OnCreate = Box<dyn FnMut(&Key, &mut Value) + Send>;
/// Answers `pods/exec`: (the store, namespace, pod, argv) → stdout, or the failure's message.
pub type OnExec = Box<dyn FnMut(&Store, &str, &str, &[String]) -> Result<String, String> + Send>;

/// What the server holds.
pub struct Store {
    rv: u64,
    uid: u64,
    objects: BTreeMap<Key, Value>,
    changes: Vec<Change>,
    /// Every request, `METHOD path?query`.
    pub log: Vec<String>,
    on_create: Option<OnCreate>,
    on_exec: Option<OnExec>,
    /// Creates refused as a real API server may refuse them: (plural, times left, code,
    /// reason, message).
    refusals: Vec<(String, u32, u16, String, String)>,
    /// Reads (get, list, watch) of a plural answered 503, as by an API server restarting:
    /// (plural, times left).
    read_refusals: Vec<(String, u32)>,
}

impl Store {
    /// The next `times` reads (get, list or watch) of `plural` are answered 503.
    pub fn refuse_reads(&mut self, plural: &str, times: u32) {
        self.read_refusals.push((plural.into(), times));
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Put an object (create or replace), as a controller would; watchers see it.
    pub fn put(&mut self, key: Key, mut object: Value) {
        let rv = self.next_rv();
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        let meta = &mut object["metadata"];
        meta["name"] = json!(key.name);
        if let Some(ns) = &key.namespace {
            meta["namespace"] = json!(ns);
        }
        if meta.get("uid").is_none() {
            self.uid += 1;
            meta["uid"] = json!(format!("uid-{}", self.uid));
        }
        if meta.get("creationTimestamp").is_none() {
            meta["creationTimestamp"] = json!("2026-12-07T05:00:00Z");
        }
        meta["resourceVersion"] = json!(rv.to_string());
        self.objects.insert(key.clone(), object.clone());
        self.changes.push(Change {
            rv,
            kind,
            key,
            object,
        });
    }

    /// Remove an object; watchers see it go.
    pub fn remove(&mut self, key: &Key) -> Option<Value> {
        let mut object = self.objects.remove(key)?;
        let rv = self.next_rv();
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.changes.push(Change {
            rv,
            kind: "DELETED",
            key: key.clone(),
            object: object.clone(),
        });
        Some(object)
    }

    /// An object, if present.
    pub fn get(&self, key: &Key) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Objects of a plural (in a namespace, or all).
    pub fn list(&self, prefix: &str, namespace: Option<&str>, plural: &str) -> Vec<(Key, Value)> {
        self.objects
            .iter()
            .filter(|(k, _)| {
                k.prefix == prefix
                    && k.plural == plural
                    && (namespace.is_none() || k.namespace.as_deref() == namespace)
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// The server: its address and its store.
pub struct FakeApi {
    pub addr: SocketAddr,
    handle: ApiHandle,
    task: tokio::task::JoinHandle<()>,
}

/// The store, shareable with whatever plays kubelet or controller.
#[derive(Clone)]
pub struct ApiHandle {
    store: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
}

impl ApiHandle {
    /// Change the store (as a controller or kubelet would); watchers are woken.
    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let r = {
            let mut s = self.store.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut s)
        };
        self.changed.notify_waiters();
        r
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": message, "reason": reason, "code": code})
}

fn full(code: u16, v: &Value) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(v.to_string())).boxed());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

fn not_found(plural: &str, name: &str) -> Response<Body> {
    full(
        404,
        &status(404, "NotFound", &format!("{plural} \"{name}\" not found")),
    )
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k == name).then(|| percent_decode(v))
    })
}

fn query_params(query: &str, name: &str) -> Vec<String> {
    query
        .split('&')
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            (k == name).then(|| percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(c) => {
                        out.push(c);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-based selectors (`a=b,c!=d`, `a==b`) and `key` / `!key`, as the API accepts.
fn labels_match(object: &Value, selector: &str) -> bool {
    let labels = &object["metadata"]["labels"];
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels[k.trim()].as_str() != Some(v.trim())
        } else if let Some((k, v)) = term.split_once('=') {
            labels[k.trim()].as_str() == Some(v.trim_start_matches('=').trim())
        } else if let Some(k) = term.strip_prefix('!') {
            labels.get(k.trim()).is_none()
        } else {
            labels.get(term.trim()).is_some()
        }
    })
}

fn fields_match(object: &Value, selector: &str) -> bool {
    selector.split(',').filter(|t| !t.is_empty()).all(|term| {
        let Some((k, v)) = term.split_once('=') else {
            return true;
        };
        let v = v.trim_start_matches('=');
        let mut at = object;
        for part in k.split('.') {
            at = &at[part];
        }
        at.as_str().unwrap_or("") == v
    })
}

fn selected(object: &Value, query: &str) -> bool {
    query_param(query, "labelSelector").is_none_or(|s| labels_match(object, &s))
        && query_param(query, "fieldSelector").is_none_or(|s| fields_match(object, &s))
}

impl FakeApi {
    /// Serve on a free loopback port.
    pub async fn start() -> FakeApi {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("address");
        let store = Arc::new(Mutex::new(Store {
            rv: 100,
            uid: 0,
            objects: BTreeMap::new(),
            changes: Vec::new(),
            log: Vec::new(),
            on_create: None,
            on_exec: None,
            refusals: Vec::new(),
            read_refusals: Vec::new(),
        }));
        let changed = Arc::new(Notify::new());
        let (s2, c2) = (store.clone(), changed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (store, changed) = (s2.clone(), c2.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (store, changed) = (store.clone(), changed.clone());
                        async move { Ok::<_, Infallible>(handle(req, store, changed).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .with_upgrades()
                        .await;
                });
            }
        });
        FakeApi {
            addr,
            handle: ApiHandle { store, changed },
            task,
        }
    }

    /// A client of this server (plain HTTP on loopback).
    pub fn client(&self) -> kube::Client {
        let url: http::Uri = format!("http://{}", self.addr).parse().expect("uri");
        let cfg = kube::Config::new(url);
        kube::Client::try_from(cfg).expect("client")
    }

    /// The store's handle.
    pub fn handle(&self) -> ApiHandle {
        self.handle.clone()
    }

    /// Change the store; watchers are woken.
    pub fn with<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.handle.with(f)
    }

    pub fn on_create(&self, f: impl FnMut(&Key, &mut Value) + Send + 'static) {
        self.with(|s| s.on_create = Some(Box::new(f)));
    }

    /// The next `times` creates of `plural` are refused with `code`, `reason` and `message`.
    pub fn refuse_creates(&self, plural: &str, times: u32, code: u16, reason: &str, message: &str) {
        self.with(|s| {
            s.refusals
                .push((plural.into(), times, code, reason.into(), message.into()))
        });
    }

    pub fn on_exec(
        &self,
        f: impl FnMut(&Store, &str, &str, &[String]) -> Result<String, String> + Send + 'static,
    ) {
        self.with(|s| s.on_exec = Some(Box::new(f)));
    }

    /// Every request so far.
    pub fn log(&self) -> Vec<String> {
        self.with(|s| s.log.clone())
    }
}

async fn handle(
    req: Request<Incoming>,
    store: Arc<Mutex<Store>>,
    changed: Arc<Notify>,
) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or("").to_owned();
    let lock = || store.lock().unwrap_or_else(|e| e.into_inner());
    lock().log.push(format!("{method} {path}?{query}"));
    let Some(p) = parse_path(&path) else {
        return full(404, &status(404, "NotFound", &format!("no route {path}")));
    };
    if p.sub.as_deref() == Some("exec") {
        return exec(req, p, &query, store).await;
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let kind_list = |p: &Path| format!("{}List", p.plural);
    if method.as_str() == "GET" {
        let mut s = lock();
        if let Some(r) = s
            .read_refusals
            .iter_mut()
            .find(|r| r.0 == p.plural && r.1 > 0)
        {
            r.1 -= 1;
            return full(
                503,
                &status(503, "ServiceUnavailable", "the server is restarting"),
            );
        }
    }
    match (method.as_str(), &p.name) {
        ("GET", None) if query_param(&query, "watch").as_deref() == Some("true") => {
            watch(p, &query, store, changed)
        }
        ("GET", None) => {
            let s = lock();
            let items: Vec<Value> = s
                .list(&p.prefix, p.namespace.as_deref(), &p.plural)
                .into_iter()
                .map(|(_, v)| v)
                .filter(|v| selected(v, &query))
                .collect();
            full(
                200,
                &json!({"kind": kind_list(&p), "apiVersion": "v1",
                        "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
            )
        }
        ("GET", Some(name)) => {
            let key = Key::new(&p.prefix, p.namespace.as_deref(), &p.plural, name);
            match lock().get(&key) {
                Some(v) => full(200, v),
                None => not_found(&p.plural, name),
            }
        }
        ("POST", None) => {
            let Ok(mut object) = serde_json::from_slice::<Value>(&body) else {
                return full(400, &status(400, "BadRequest", "not JSON"));
            };
            let name = object["metadata"]["name"].as_str().unwrap_or("").to_owned();
            if name.is_empty() {
                return full(
                    422,
                    &status(422, "Invalid", "metadata.name: Required value"),
                );
            }
            let key = Key::new(&p.prefix, p.namespace.as_deref(), &p.plural, &name);
            let created = {
                let mut s = lock();
                if let Some(r) = s.refusals.iter_mut().find(|r| r.0 == p.plural && r.1 > 0) {
                    r.1 -= 1;
                    let (code, reason, message) = (r.2, r.3.clone(), r.4.clone());
                    return full(code, &status(code, &reason, &message));
                }
                if s.get(&key).is_some() {
                    return full(
                        409,
                        &status(
                            409,
                            "AlreadyExists",
                            &format!("{} \"{name}\" already exists", p.plural),
                        ),
                    );
                }
                if let Some(ns) = &p.namespace
                    && s.get(&Key::new("/api/v1", None, "namespaces", ns))
                        .is_none()
                {
                    return full(
                        404,
                        &status(404, "NotFound", &format!("namespaces \"{ns}\" not found")),
                    );
                }
                s.put(key.clone(), object.clone());
                object = s.get(&key).cloned().unwrap_or(object);
                if let Some(mut hook) = s.on_create.take() {
                    hook(&key, &mut object);
                    s.on_create = Some(hook);
                    s.put(key.clone(), object);
                }
                s.get(&key).cloned().unwrap_or_default()
            };
            changed.notify_waiters();
            full(201, &created)
        }
        ("DELETE", Some(name)) => {
            let key = Key::new(&p.prefix, p.namespace.as_deref(), &p.plural, name);
            let gone = {
                let mut s = lock();
                let gone = s.remove(&key);
                if gone.is_some() && p.plural == "namespaces" && p.prefix == "/api/v1" {
                    let inside: Vec<Key> = s
                        .objects
                        .keys()
                        .filter(|k| k.namespace.as_deref() == Some(name.as_str()))
                        .cloned()
                        .collect();
                    for k in inside {
                        s.remove(&k);
                    }
                }
                gone
            };
            changed.notify_waiters();
            match gone {
                Some(v) => full(200, &v),
                None => not_found(&p.plural, name),
            }
        }
        ("DELETE", None) => {
            let gone = {
                let mut s = lock();
                let keys: Vec<Key> = s
                    .list(&p.prefix, p.namespace.as_deref(), &p.plural)
                    .into_iter()
                    .filter(|(_, v)| selected(v, &query))
                    .map(|(k, _)| k)
                    .collect();
                keys.iter().filter_map(|k| s.remove(k)).collect::<Vec<_>>()
            };
            changed.notify_waiters();
            full(
                200,
                &json!({"kind": kind_list(&p), "apiVersion": "v1", "metadata": {}, "items": gone}),
            )
        }
        (m, _) => full(
            405,
            &status(
                405,
                "MethodNotAllowed",
                &format!("{m} {path} is not served here"),
            ),
        ),
    }
}

/// A watch: every change after `resourceVersion` that the selectors match, one JSON line each,
/// until the client goes away (or `timeoutSeconds`, as the real server ends a watch).
fn watch(p: Path, query: &str, store: Arc<Mutex<Store>>, changed: Arc<Notify>) -> Response<Body> {
    let mut cursor: u64 = query_param(query, "resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let limit = query_param(query, "timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    let query = query.to_owned();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(limit);
        loop {
            let wake = changed.notified();
            let due: Vec<Change> = {
                let s = store.lock().unwrap_or_else(|e| e.into_inner());
                s.changes
                    .iter()
                    .filter(|c| {
                        c.rv > cursor
                            && c.key.prefix == p.prefix
                            && c.key.plural == p.plural
                            && (p.namespace.is_none() || c.key.namespace == p.namespace)
                            && selected(&c.object, &query)
                    })
                    .cloned()
                    .collect()
            };
            for c in due {
                cursor = c.rv;
                let line = format!("{}\n", json!({"type": c.kind, "object": c.object}));
                if tx.send(Ok(Frame::data(Bytes::from(line)))).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = tokio_stream_from(rx);
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut()
        .insert("content-type", "application/json".parse().expect("header"));
    r
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, Infallible>>,
) -> impl futures::Stream<Item = Result<Frame<Bytes>, Infallible>> + Send + Sync + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `pods/exec` over a WebSocket (`v4.channel.k8s.io`): stdout on channel 1, the `Status` on 3.
async fn exec(
    req: Request<Incoming>,
    p: Path,
    query: &str,
    store: Arc<Mutex<Store>>,
) -> Response<Body> {
    let ns = p.namespace.clone().unwrap_or_default();
    let pod = p.name.clone().unwrap_or_default();
    let argv = query_params(query, "command");
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned)
    else {
        return full(
            400,
            &status(400, "BadRequest", "exec needs a WebSocket upgrade"),
        );
    };
    let exists = store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&Key::new("/api/v1", Some(&ns), "pods", &pod))
        .is_some();
    if !exists {
        return full(
            404,
            &status(404, "NotFound", &format!("pods \"{pod}\" not found")),
        );
    }
    let answer = {
        let mut s = store.lock().unwrap_or_else(|e| e.into_inner());
        match s.on_exec.take() {
            Some(mut f) => {
                let r = f(&s, &ns, &pod, &argv);
                s.on_exec = Some(f);
                r
            }
            None => Err("no exec here".to_owned()),
        }
    };
    tokio::spawn(async move {
        let Ok(upgraded) = hyper::upgrade::on(req).await else {
            return;
        };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        let frame = |channel: u8, data: &[u8]| {
            let mut v = vec![channel];
            v.extend_from_slice(data);
            Message::Binary(v.into())
        };
        let st = match &answer {
            Ok(out) => {
                let _ = ws.send(frame(1, out.as_bytes())).await;
                json!({"metadata": {}, "status": "Success"})
            }
            Err(msg) => json!({"metadata": {}, "status": "Failure", "message": msg,
                               "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": "1"}]}}),
        };
        let _ = ws.send(frame(3, st.to_string().as_bytes())).await;
        let _ = ws.close(None).await;
        while let Some(Ok(_)) = ws.next().await {}
    });
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("upgrade", "websocket".parse().expect("header"));
    h.insert("connection", "Upgrade".parse().expect("header"));
    h.insert(
        "sec-websocket-accept",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
            .parse()
            .expect("header"),
    );
    h.insert(
        "sec-websocket-protocol",
        "v4.channel.k8s.io".parse().expect("header"),
    );
    r
}
