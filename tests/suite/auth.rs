//! Authentication and confinement on a real socket (docs/security.md): every endpoint × every principal kind, the seed
//! story's cross-partner reads, impersonation, commands acting for another tenant, and the denied-request audit.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use partner_ledger::api::auth::{token_hash, Auth};
use partner_ledger::api::{serve, AppState, ServeConfig};
use partner_ledger::domain::parse_line;
use partner_ledger::ledger::{Ledger, LedgerConfig};
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONTOSO: &str = "c0000000-0000-4000-8000-00000000000c";
const FABRIKAM: &str = "cf000000-0000-4000-8000-00000000000f";
const A: &str = "a0000000-0000-4000-8000-00000000000a";
const B: &str = "b0000000-0000-4000-8000-00000000000b";
/// Enrolled, related to nobody.
const D: &str = "d0000000-0000-4000-8000-00000000000d";
const OPS_TENANT: &str = "00000000-0000-4000-8000-0000000000ff";
const A_O365: &str = "5a000000-0000-4000-8000-000000000001";
const B_AZURE: &str = "5b000000-0000-4000-8000-000000000002";

/// (name, role, tenant, user)
pub(crate) const PRINCIPALS: &[(&str, &str, Option<&str>, &str)] = &[
    ("ops", "operator", Some(OPS_TENANT), "ops@ledger.example"),
    (
        "sys",
        "system",
        Some("00000000-0000-4000-8000-00000000005c"),
        "clock",
    ),
    ("audit", "auditor", None, "auditor@kpmg.example"),
    (
        "a_admin",
        "partner_admin_agent",
        Some(A),
        "admin@adatum.example",
    ),
    (
        "a_sales",
        "partner_sales_agent",
        Some(A),
        "sales@adatum.example",
    ),
    (
        "b_admin",
        "partner_admin_agent",
        Some(B),
        "admin@bellows.example",
    ),
    ("d_admin", "partner_admin_agent", Some(D), "admin@d.example"),
    (
        "contoso_admin",
        "customer_global_admin",
        Some(CONTOSO),
        "admin@contoso.onmicrosoft.com",
    ),
    (
        "contoso_user",
        "customer_user",
        Some(CONTOSO),
        "user@contoso.onmicrosoft.com",
    ),
    (
        "fab_admin",
        "customer_global_admin",
        Some(FABRIKAM),
        "admin@fabrikam.onmicrosoft.com",
    ),
];

pub(crate) fn token(name: &str) -> String {
    format!("plt_test_token_of_{name}_0123456789")
}

pub(crate) fn tokens_file(
    dir: &std::path::Path,
    principals: &[(&str, &str, Option<&str>, &str)],
) -> std::path::PathBuf {
    let list: Vec<Value> = principals
        .iter()
        .map(|(name, role, tenant, user)| {
            let mut v = json!({"name": name, "role": role, "user": user,
                "token_sha256": hex::encode(token_hash(&token(name)))});
            if let Some(t) = tenant {
                v["tenant"] = json!(t);
            }
            v
        })
        .collect();
    let path = dir.join("tokens.json");
    std::fs::write(
        &path,
        serde_json::to_vec_pretty(&json!({"principals": list})).unwrap(),
    )
    .unwrap();
    path
}

const OP: &str = r#"{"tenant":"00000000-0000-4000-8000-0000000000ff","user":"ops@ledger.example","role":"operator"}"#;

/// The seed story, plus partner D and customer Fabrikam, loaded straight into the ledger.
fn seed(ledger: &Ledger) {
    let story =
        std::fs::read_to_string(common::fixtures().join("seed-story/commands.ndjson")).unwrap();
    let extra = [
        format!(
            r#"{{"type":"EnrollPartner","actor":{OP},"partner":"{D}","partner_id":"4410004","name":"Dunmore","kind":"direct_bill","cloud":"public","country":"NL"}}"#
        ),
        format!(
            r#"{{"type":"RegisterCustomer","actor":{OP},"customer":"{FABRIKAM}","company_name":"Fabrikam","domain":"fabrikam.onmicrosoft.com","country":"NL","cloud":"public"}}"#
        ),
    ];
    for line in story
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with('{'))
        .map(str::to_string)
        .chain(extra)
    {
        let o = ledger.execute(parse_line(&line).unwrap()).to_json();
        assert_eq!(o["outcome"], "committed", "{o}");
    }
}

struct Server {
    url: String,
    ledger: Arc<Ledger>,
    auth: Arc<Auth>,
    tokens: std::path::PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(Ledger::open(LedgerConfig::new(dir.path().join("data"))).unwrap());
        tokio::task::block_in_place(|| seed(&ledger));
        let file = tokens_file(dir.path(), PRINCIPALS);
        let auth = Arc::new(Auth::with_tokens(Some(&file), None).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let config = ServeConfig {
            heartbeat: Duration::from_millis(50),
            clock_interval: Duration::from_secs(3600),
            ..Default::default()
        };
        let state = AppState::new(Arc::clone(&ledger), config, stop_rx)
            .unwrap()
            .with_auth(Arc::clone(&auth));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, state, stop_tx, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Server {
            url,
            ledger,
            auth,
            tokens: file,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    fn head(&self) -> u64 {
        self.ledger.store().head().position.0
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.take().unwrap().await.unwrap();
        self.ledger.close();
    }
}

async fn call(
    c: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    who: Option<&str>,
    body: Option<(&str, String)>,
) -> (StatusCode, Value) {
    let mut r = c.request(method, url);
    if let Some(w) = who {
        r = r.bearer_auth(token(w));
    }
    if let Some((ct, b)) = body {
        r = r.header("content-type", ct).body(b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn get(c: &reqwest::Client, url: &str, who: Option<&str>) -> (StatusCode, Value) {
    call(c, reqwest::Method::GET, url, who, None).await
}

async fn post_json(c: &reqwest::Client, url: &str, who: &str, body: Value) -> (StatusCode, Value) {
    call(
        c,
        reqwest::Method::POST,
        &format!("{url}/v1/commands"),
        Some(who),
        Some(("application/json", body.to_string())),
    )
    .await
}

/// Reads an NDJSON stream from the start until a heartbeat reaches `head`; returns the envelopes.
async fn stream_all(c: &reqwest::Client, url: &str, who: &str, head: u64) -> Vec<Value> {
    let resp = c
        .get(format!("{url}/v1/events"))
        .bearer_auth(token(who))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{who}");
    read_envelopes(resp, head, who).await
}

/// Reads an open NDJSON stream until a heartbeat or an event reaches `head`; returns the envelopes.
async fn read_envelopes(resp: reqwest::Response, head: u64, who: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut stream = resp.bytes_stream();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while let Ok(Some(chunk)) = tokio::time::timeout_at(deadline, stream.next()).await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=i).collect();
            let v: Value = serde_json::from_slice(&line).unwrap();
            let p = match v["heartbeat"]["position"].as_u64() {
                Some(p) => p,
                None => {
                    let p = v["position"].as_u64().unwrap();
                    out.push(v);
                    p
                }
            };
            if p >= head {
                return out;
            }
        }
    }
    panic!("the stream of {who} did not reach position {head}");
}

fn names(v: &Value, list: &str, field: &str) -> Vec<String> {
    v[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[field].as_str().unwrap().to_string())
        .collect()
}

fn mentions(v: &Value, id: &str) -> bool {
    v.to_string().contains(id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_read_endpoint_answers_each_principal_kind_as_documented() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    let everyone: Vec<&str> = PRINCIPALS.iter().map(|p| p.0).collect();
    let readers_of_all = ["ops", "sys", "audit"];
    let sees_contoso = vec![
        "ops",
        "sys",
        "audit",
        "a_admin",
        "a_sales",
        "b_admin",
        "contoso_admin",
        "contoso_user",
    ];

    // Who gets 200 (the rest: 404 for data they may not see, 403 for operations).
    let expect: Vec<(String, Vec<&str>, StatusCode)> = vec![
        ("/healthz".into(), everyone.clone(), StatusCode::FORBIDDEN),
        (
            "/v1/openapi.json".into(),
            everyone.clone(),
            StatusCode::FORBIDDEN,
        ),
        (
            "/metrics".into(),
            readers_of_all.to_vec(),
            StatusCode::FORBIDDEN,
        ),
        (
            "/v1/consumers".into(),
            readers_of_all.to_vec(),
            StatusCode::FORBIDDEN,
        ),
        (
            format!("/v1/customers/{CONTOSO}"),
            sees_contoso.clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/customers/{CONTOSO}?as_of=2024-01-20T00:00:00Z"),
            sees_contoso.clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/customers/{CONTOSO}/history"),
            sees_contoso.clone(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/customers/{FABRIKAM}"),
            vec!["ops", "sys", "audit", "fab_admin"],
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/partners/{A}"),
            vec!["ops", "sys", "audit", "a_admin", "a_sales"],
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/partners/{B}"),
            vec!["ops", "sys", "audit", "b_admin"],
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/subscriptions/{A_O365}"),
            vec![
                "ops",
                "sys",
                "audit",
                "a_admin",
                "a_sales",
                "contoso_admin",
                "contoso_user",
            ],
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/v1/subscriptions/{B_AZURE}"),
            vec![
                "ops",
                "sys",
                "audit",
                "b_admin",
                "contoso_admin",
                "contoso_user",
            ],
            StatusCode::NOT_FOUND,
        ),
    ];
    let mut checked = 0;
    for (path, allowed, otherwise) in &expect {
        let url = format!("{u}{path}");
        let (status, body) = get(&c, &url, None).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{path} without a token: {body}"
        );
        assert_eq!(body["error"], "unauthorized");
        for who in &everyone {
            let (status, body) = get(&c, &url, Some(who)).await;
            let want = if allowed.contains(who) {
                StatusCode::OK
            } else {
                *otherwise
            };
            assert_eq!(status, want, "{path} as {who}: {body}");
            if want == StatusCode::NOT_FOUND {
                // Exactly like a missing one.
                assert_eq!(body["error"], "not_found", "{path} as {who}");
            }
            if want == StatusCode::FORBIDDEN {
                assert_eq!(body["error"], "forbidden", "{path} as {who}");
                assert!(body["message"].as_str().unwrap().contains(who), "{body}");
            }
            checked += 1;
        }
    }
    // A missing customer is answered the same way to a partner: 404 either way.
    let (s1, b1) = get(&c, &format!("{u}/v1/customers/{D}"), Some("b_admin")).await;
    let (s2, b2) = get(&c, &format!("{u}/v1/customers/{FABRIKAM}"), Some("b_admin")).await;
    assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
    assert_eq!(b1["error"], b2["error"]);

    // A wrong or malformed token is 401 like a missing one.
    let r = c
        .get(format!("{u}/healthz"))
        .bearer_auth("plt_not_a_token_at_all")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = c
        .get(format!("{u}/healthz"))
        .header("authorization", format!("Basic {}", token("ops")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(checked >= 100, "{checked}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partners_see_their_own_share_of_the_seed_story_and_nothing_of_each_other() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    let contoso = format!("{u}/v1/customers/{CONTOSO}");

    // B sees Contoso, its own relationship and Azure subscription, never A's Office 365 subscription (R3).
    let (_, b) = get(&c, &contoso, Some("b_admin")).await;
    assert_eq!(names(&b, "partners", "partner"), vec![B]);
    assert_eq!(names(&b, "subscriptions", "subscription"), vec![B_AZURE]);
    assert!(!mentions(&b, A_O365) && !mentions(&b, A), "{b}");
    // A likewise never sees B's Azure subscription.
    let (_, a) = get(&c, &contoso, Some("a_sales")).await;
    assert_eq!(names(&a, "partners", "partner"), vec![A]);
    assert_eq!(names(&a, "subscriptions", "subscription"), vec![A_O365]);
    assert!(!mentions(&a, B_AZURE) && !mentions(&a, B), "{a}");
    assert!(a["azure_plans"].as_array().unwrap().is_empty(), "{a}");
    // The customer, operators and auditors see both.
    for who in ["contoso_admin", "contoso_user", "ops", "audit"] {
        let (_, v) = get(&c, &contoso, Some(who)).await;
        assert_eq!(
            names(&v, "subscriptions", "subscription"),
            vec![A_O365, B_AZURE],
            "{who}"
        );
        assert_eq!(names(&v, "partners", "partner"), vec![A, B], "{who}");
    }

    // History: the same confinement.
    let (_, h) = get(
        &c,
        &format!("{contoso}/history?include_refusals=true"),
        Some("b_admin"),
    )
    .await;
    let events = h["events"].as_array().unwrap();
    assert!(!events.is_empty());
    assert!(
        events
            .iter()
            .all(|e| !mentions(&e["data"], A) && !mentions(&e["data"], A_O365)),
        "{h}"
    );
    assert!(
        events.iter().any(|e| e["type"] == "CustomerRegistered"),
        "customer-level events are B's to see too"
    );
    let (_, all) = get(&c, &format!("{contoso}/history"), Some("audit")).await;
    assert!(all["events"].as_array().unwrap().len() > events.len());

    // Streams: the same confinement, over the whole log.
    let head = server.head();
    let every = stream_all(&c, &u, "audit", head).await;
    assert_eq!(every.len() as u64, head, "an auditor reads every event");
    let bs = stream_all(&c, &u, "b_admin", head).await;
    assert!(!bs.is_empty());
    for e in &bs {
        assert!(
            !mentions(&e["data"], A) && !mentions(&e["data"], A_O365) && !mentions(&e["data"], D),
            "{e}"
        );
    }
    let positions: Vec<u64> = bs.iter().map(|e| e["position"].as_u64().unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    let cs = stream_all(&c, &u, "contoso_user", head).await;
    assert!(
        cs.iter().all(|e| e["data"]["customer"] == CONTOSO),
        "a customer's stream is its own"
    );
    assert!(cs.iter().any(|e| mentions(e, A_O365)) && cs.iter().any(|e| mentions(e, B_AZURE)));
    // A partner asking for another partner's events gets none of them.
    let resp = c
        .get(format!("{u}/v1/events?partner={A}"))
        .bearer_auth(token("b_admin"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    let mut body = resp.bytes_stream();
    let first = tokio::time::timeout(Duration::from_secs(5), body.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let first: Value =
        serde_json::from_slice(first.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert!(first["heartbeat"].is_object(), "only heartbeats: {first}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_as_the_authenticated_principal_and_impersonation_leaves_no_trace() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    // Posts `body` as `who` and checks the status and, where given, one field of the answer.
    let expect = |who: &'static str,
                  body: Value,
                  status: StatusCode,
                  field: Option<(&'static str, &'static str)>| {
        let (c, u) = (c.clone(), u.clone());
        async move {
            let (got, answer) = post_json(&c, &u, who, body).await;
            assert_eq!(got, status, "as {who}: {answer}");
            if let Some((k, v)) = field {
                assert_eq!(answer[k], v, "as {who}: {answer}");
            }
            answer
        }
    };
    let forbidden = StatusCode::FORBIDDEN;
    let refused = StatusCode::UNPROCESSABLE_ENTITY;
    let b_actor =
        json!({"tenant": B, "user": "admin@bellows.example", "role": "partner_admin_agent"});
    let a_actor =
        json!({"tenant": A, "user": "admin@adatum.example", "role": "partner_admin_agent"});
    let history = format!("{u}/v1/customers/{CONTOSO}/history?include_refusals=true");
    let before = server.head();
    let history_before = get(&c, &history, Some("ops")).await.1;

    // Impersonation: B sends a command with A's actor: 403, nothing appended, nothing filed.
    let cancel = json!({"type": "CancelSubscription", "command_id": "0bad0000-0000-4000-8000-000000000001",
        "actor": a_actor, "subscription": A_O365, "partner": A});
    expect(
        "b_admin",
        cancel.clone(),
        forbidden,
        Some(("reason", "actor_mismatch")),
    )
    .await;
    // Acting for A with B's own (omitted) actor: 403 as well.
    let mut for_a = cancel.clone();
    for_a.as_object_mut().unwrap().remove("actor");
    expect(
        "b_admin",
        for_a,
        forbidden,
        Some(("reason", "not_your_tenant")),
    )
    .await;
    // A customer acting for another customer, and an auditor issuing anything: 403.
    let accept_other = json!({"type": "AcceptCustomerAgreement", "customer": CONTOSO});
    expect(
        "fab_admin",
        accept_other,
        forbidden,
        Some(("reason", "not_your_tenant")),
    )
    .await;
    let clock = json!({"type": "AdvanceClock", "to": "2024-03-01T00:00:00Z"});
    expect("audit", clock, forbidden, Some(("reason", "read_only"))).await;
    // NDJSON: one denied line denies the whole request.
    let good = json!({"type": "RequestRelationship", "request": "1d000000-0000-4000-8000-0000000000aa", "partner": D, "customer": FABRIKAM});
    let bad = json!({"type": "RequestRelationship", "request": "1d000000-0000-4000-8000-0000000000ab", "partner": A, "customer": FABRIKAM});
    let commands = format!("{u}/v1/commands");
    let (status, body) = call(
        &c,
        reqwest::Method::POST,
        &commands,
        Some("d_admin"),
        Some(("application/x-ndjson", format!("{good}\n{bad}\n"))),
    )
    .await;
    assert_eq!(status, forbidden, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("line 2:"),
        "{body}"
    );
    // The line named is the line of the body, counting blank and comment lines.
    let (status, body) = call(
        &c,
        reqwest::Method::POST,
        &commands,
        Some("d_admin"),
        Some((
            "application/x-ndjson",
            format!("# first a comment\n\n{good}\n{bad}\n"),
        )),
    )
    .await;
    assert_eq!(status, forbidden, "{body}");
    assert!(
        body["message"].as_str().unwrap().starts_with("line 4:"),
        "{body}"
    );
    // No token: 401.
    let (status, _) = call(
        &c,
        reqwest::Method::POST,
        &commands,
        None,
        Some(("application/json", good.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    assert_eq!(server.head(), before, "no denied command appended anything");
    let history_after = get(&c, &history, Some("ops")).await.1;
    assert_eq!(
        history_before, history_after,
        "no denied command was filed as a refusal either"
    );
    // The impersonated command_id was never used: A itself can still use it.
    let suspend = json!({"type": "SuspendSubscription", "command_id": "0bad0000-0000-4000-8000-000000000001",
        "subscription": A_O365, "partner": A});
    let body = expect("a_admin", suspend, StatusCode::OK, None).await;
    assert!(body.get("duplicate").is_none(), "{body}");

    // The actor may be omitted (it is filled in) or given equal to the principal.
    let body = expect("d_admin", good.clone(), StatusCode::OK, None).await;
    let p = body["positions"][0].as_u64().unwrap();
    let stored = server
        .ledger
        .store()
        .get(partner_ledger::domain::Position(p))
        .unwrap()
        .unwrap()
        .envelope()
        .unwrap();
    assert_eq!(
        serde_json::to_value(&stored.actor).unwrap(),
        json!({"tenant": D, "user": "admin@d.example", "role": "partner_admin_agent"})
    );
    let request = json!({"type": "RequestRelationship", "actor": b_actor,
        "request": "1b000000-0000-4000-8000-0000000000ac", "partner": B, "customer": FABRIKAM});
    expect("b_admin", request, StatusCode::OK, None).await;

    // The rules see the real role: the Global admin accepts (R8); a sales agent may not ask for GDAP, an admin agent
    // may; a customer_user may not grant it, the Global admin may.
    let accept = json!({"type": "AcceptRelationship", "request": "1d000000-0000-4000-8000-0000000000aa", "customer": FABRIKAM});
    expect("fab_admin", accept, StatusCode::OK, None).await;
    let gdap = json!({"type": "RequestDelegatedAdmin", "admin_relationship": "ad000000-0000-4000-8000-000000000001",
        "partner": A, "customer": CONTOSO, "name": "helpdesk", "roles": ["729827e3-9c14-49f7-bb1b-9608f156bbb8"],
        "duration_days": 30, "auto_extend": false});
    expect(
        "a_sales",
        gdap.clone(),
        refused,
        Some(("code", "not_authorized")),
    )
    .await;
    expect("a_admin", gdap, StatusCode::OK, None).await;
    let grant = json!({"type": "GrantDelegatedAdmin", "admin_relationship": "ad000000-0000-4000-8000-000000000001", "customer": CONTOSO});
    expect(
        "contoso_user",
        grant.clone(),
        refused,
        Some(("code", "not_authorized")),
    )
    .await;
    expect("contoso_admin", grant, StatusCode::OK, None).await;
    // B cancelling A's subscription as itself: B may not see it, so it is answered as an id that does not exist
    // (R27's unknown_subscription), never "billed by A".
    let cancel_as_b = json!({"type": "CancelSubscription", "subscription": A_O365, "partner": B});
    expect(
        "b_admin",
        cancel_as_b,
        refused,
        Some(("code", "unknown_subscription")),
    )
    .await;
    // R21: the customer's Global admin terminates; to B, A's admin relationship does not exist.
    let terminate = json!({"type": "TerminateDelegatedAdmin", "admin_relationship": "ad000000-0000-4000-8000-000000000001"});
    expect(
        "b_admin",
        terminate.clone(),
        refused,
        Some(("code", "unknown_admin_relationship")),
    )
    .await;
    expect("contoso_admin", terminate, StatusCode::OK, None).await;
    // Operator-only commands from a partner: the rules refuse (the table of DOMAIN.md).
    let update = json!({"type": "UpdatePartner", "partner": A, "name": "Adatum"});
    expect("a_admin", update, refused, Some(("code", "not_authorized"))).await;

    // Every denial was counted for /metrics, by status and reason.
    let (_, metrics) = get(&c, &format!("{u}/metrics"), Some("ops")).await;
    let m = metrics.as_str().unwrap();
    let count = |label: &str| -> u64 {
        m.lines()
            .find(|l| l.starts_with(&format!("partner_ledger_denied_requests_total{{{label}}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    assert_eq!(count(r#"status="403",reason="actor_mismatch""#), 1, "{m}");
    assert_eq!(count(r#"status="403",reason="not_your_tenant""#), 4, "{m}");
    assert_eq!(count(r#"status="403",reason="read_only""#), 1, "{m}");
    assert_eq!(count(r#"status="401",reason="missing_token""#), 1, "{m}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_run_by_operators_and_read_by_auditors() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    let mut created = HashMap::new();
    for (who, ..) in PRINCIPALS {
        let (status, body) = call(
            &c,
            reqwest::Method::PUT,
            &format!("{u}/v1/consumers/billing-{who}"),
            Some(who),
            Some(("application/json", "{}".into())),
        )
        .await;
        created.insert(*who, status);
        let want = if ["ops", "sys"].contains(who) {
            StatusCode::CREATED
        } else {
            StatusCode::FORBIDDEN
        };
        assert_eq!(status, want, "{who}: {body}");
    }
    let (status, _) = get(&c, &format!("{u}/v1/consumers/billing-ops"), Some("audit")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(
        &c,
        reqwest::Method::POST,
        &format!("{u}/v1/consumers/billing-ops/ack"),
        Some("audit"),
        Some(("application/json", r#"{"position":1}"#.into())),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "auditors change nothing");
    let (status, _) = call(
        &c,
        reqwest::Method::DELETE,
        &format!("{u}/v1/consumers/billing-ops"),
        Some("b_admin"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = call(
        &c,
        reqwest::Method::DELETE,
        &format!("{u}/v1/consumers/billing-ops"),
        Some("ops"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    server.stop().await;
}

#[test]
fn a_bad_tokens_file_is_refused_with_the_entry_and_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(Value, &str)] = &[
        (
            json!({"principals": [{"name": "x", "role": "partner_admin_agent", "tenant": A, "user": "u", "token_sha256": "abc"}]}),
            "64 hex digits",
        ),
        (
            json!({"principals": [{"name": "x", "role": "king", "tenant": A, "user": "u", "token_sha256": "0".repeat(64)}]}),
            "unknown role `king`",
        ),
        (
            json!({"principals": [{"name": "x", "role": "operator", "user": "u", "token_sha256": "0".repeat(64)}]}),
            "tenant is required",
        ),
        (
            json!({"principals": [{"name": "x", "role": "operator", "tenant": "nope", "user": "u", "token_sha256": "0".repeat(64)}]}),
            "tenant",
        ),
        (
            json!({"principals": [{"name": "x", "role": "operator", "tenant": A, "user": "u", "token": "plain", "token_sha256": "0".repeat(64)}]}),
            "unknown field `token`",
        ),
        (
            json!({"principals": [
            {"name": "x", "role": "auditor", "user": "u", "token_sha256": "0".repeat(64)},
            {"name": "y", "role": "auditor", "user": "v", "token_sha256": "0".repeat(64)}]}),
            "same token",
        ),
    ];
    for (i, (file, want)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("t{i}.json"));
        std::fs::write(&path, file.to_string()).unwrap();
        let Err(e) = Auth::with_tokens(Some(&path), None) else {
            panic!("case {i} was accepted");
        };
        assert!(
            e.contains(want) && e.contains(&path.display().to_string()),
            "case {i}: {e}"
        );
    }
    let Err(e) = Auth::with_tokens(Some(&dir.path().join("missing.json")), None) else {
        panic!("a missing tokens file was accepted");
    };
    assert!(e.contains("cannot read"), "{e}");
}

/// The real process: local mode refuses a non-loopback address; with a tokens file it listens there, asks every
/// request for a token, and picks up a new principal on SIGHUP.
#[test]
fn serve_is_secure_by_default_and_reloads_tokens_on_sighup() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = std::process::Command::new(common::BIN)
        .arg("--data")
        .arg(&data)
        .args(["serve", "--listen", "0.0.0.0:0", "--no-sample-data"])
        .env_remove("PARTNER_LEDGER_OPERATOR_TOKEN")
        .env_remove("PARTNER_LEDGER_TOKENS")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0") && err.contains("loopback"),
        "{err}"
    );

    let file = tokens_file(dir.path(), &PRINCIPALS[..1]);
    let mut child = std::process::Command::new(common::BIN)
        .arg("--data")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            "0.0.0.0:0",
            // Tokens beyond loopback need TLS, or this flag (a TLS-terminating proxy in front): tests/suite/tls.rs.
            "--insecure-http",
            "--no-sample-data",
            "--tokens",
        ])
        .arg(&file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let port = first
        .split("http://0.0.0.0:")
        .nth(1)
        .unwrap()
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .to_string();
    let u = format!("http://127.0.0.1:{port}");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        assert_eq!(
            get(&c, &format!("{u}/healthz"), None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get(&c, &format!("{u}/healthz"), Some("ops")).await.0,
            StatusCode::OK
        );
        assert_eq!(
            get(&c, &format!("{u}/healthz"), Some("audit")).await.0,
            StatusCode::UNAUTHORIZED
        );
        tokens_file(dir.path(), &PRINCIPALS[..3]);
        let pid = child.id().to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        let mut ok = false;
        for _ in 0..100 {
            if get(&c, &format!("{u}/healthz"), Some("audit")).await.0 == StatusCode::OK {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            ok,
            "the auditor added to the tokens file was not accepted after SIGHUP"
        );
        // A broken file on reload keeps the previous table.
        std::fs::write(&file, "{not json").unwrap();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            get(&c, &format!("{u}/healthz"), Some("audit")).await.0,
            StatusCode::OK
        );
    });
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    assert!(child.wait().unwrap().success());
}

/// Reads an NDJSON stream after `from` until a heartbeat or an event reaches `head`; returns the positions.
async fn positions_from(
    c: &reqwest::Client,
    url: &str,
    who: &str,
    from: u64,
    head: u64,
) -> Vec<u64> {
    let resp = c
        .get(format!("{url}/v1/events?from={from}"))
        .bearer_auth(token(who))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "{who}");
    read_positions(resp, head, who).await
}

async fn read_positions(resp: reqwest::Response, head: u64, who: &str) -> Vec<u64> {
    read_envelopes(resp, head, who)
        .await
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect()
}

// The projector is held back on purpose while requests are awaited: that is the race under test.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_confined_live_stream_carries_what_a_replay_carries_even_when_the_projector_lags() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    // B asks Fabrikam for a relationship: from here on B is about to be involved with Fabrikam.
    let request = json!({"type": "RequestRelationship", "request": "1b000000-0000-4000-8000-0000000000f1",
        "partner": B, "customer": FABRIKAM});
    let (s, o) = post_json(&c, &u, "b_admin", request).await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let start = server.head();
    // B's and Fabrikam's live streams are open, waiting after `start`.
    let live = |who: &'static str| {
        let c = c.clone();
        let u = u.clone();
        async move {
            c.get(format!("{u}/v1/events?from={start}"))
                .bearer_auth(token(who))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .unwrap()
        }
    };
    let b_live = live("b_admin").await;
    let fab_live = live("fab_admin").await;
    // The projector is held back while Fabrikam accepts and then accepts the customer agreement: the head moves
    // past both events while the live model still knows nothing of B's involvement.
    let pause = server.ledger.pause_projector();
    let both = [
        json!({"type": "AcceptRelationship", "request": "1b000000-0000-4000-8000-0000000000f1", "customer": FABRIKAM}),
        json!({"type": "AcceptCustomerAgreement", "customer": FABRIKAM}),
    ]
    .iter()
    .map(Value::to_string)
    .collect::<Vec<_>>()
    .join("\n");
    let (s, o) = call(
        &c,
        reqwest::Method::POST,
        &format!("{u}/v1/commands"),
        Some("fab_admin"),
        Some(("application/x-ndjson", both)),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let head = server.head();
    assert_eq!(head, start + 2, "{o}");
    // Right after the acceptance was answered, B reads the customer: it must not be told Fabrikam does not exist.
    let view = tokio::spawn({
        let c = c.clone();
        let url = format!("{u}/v1/customers/{FABRIKAM}");
        async move { get(&c, &url, Some("b_admin")).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(pause);
    let (s, v) = view.await.unwrap();
    assert_eq!(s, StatusCode::OK, "read-your-writes: {v}");
    assert_eq!(names(&v, "partners", "partner"), vec![B]);
    // What the live streams carried equals a replay of the same stream, position by position.
    let b_got = read_positions(b_live, head, "b_admin").await;
    let fab_got = read_positions(fab_live, head, "fab_admin").await;
    assert_eq!(b_got, vec![start + 1, start + 2], "B's live stream");
    assert_eq!(b_got, positions_from(&c, &u, "b_admin", start, head).await);
    assert_eq!(
        fab_got,
        vec![start + 1, start + 2],
        "Fabrikam's live stream"
    );
    assert_eq!(
        fab_got,
        positions_from(&c, &u, "fab_admin", start, head).await
    );
    // Fabrikam's registration came before B's involvement: no stream of B's carries it, live or replayed.
    let b_all = positions_from(&c, &u, "b_admin", 0, head).await;
    let registered = stream_all(&c, &u, "ops", head)
        .await
        .into_iter()
        .find(|e| e["type"] == "CustomerRegistered" && e["data"]["customer"] == FABRIKAM)
        .unwrap();
    assert!(!b_all.contains(&registered["position"].as_u64().unwrap()));
    assert!(b_all.ends_with(&[start, start + 1, start + 2]), "{b_all:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn partners_and_customers_cannot_set_business_time_and_so_cannot_hold_the_clock() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    let head = server.head();
    // Four minutes ahead of the ledger clock is within R37, but a partner does not choose business time.
    let ahead = (chrono::Utc::now() + chrono::Duration::minutes(4))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let request = json!({"type": "RequestRelationship", "request": "1b000000-0000-4000-8000-0000000000f2",
        "partner": B, "customer": FABRIKAM, "at": ahead});
    let (s, v) = post_json(&c, &u, "b_admin", request.clone()).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(v["reason"], "explicit_time_not_allowed");
    let (s, v) = post_json(
        &c,
        &u,
        "fab_admin",
        json!({"type": "AcceptCustomerAgreement", "customer": FABRIKAM, "at": ahead}),
    )
    .await;
    assert_eq!(
        (s, &v["reason"]),
        (StatusCode::FORBIDDEN, &json!("explicit_time_not_allowed"))
    );
    assert_eq!(server.head(), head, "nothing was appended");
    // Without `at` the same command runs at the ledger clock.
    let mut plain = request;
    plain.as_object_mut().unwrap().remove("at");
    let (s, v) = post_json(&c, &u, "b_admin", plain).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    server.stop().await;
}

#[test]
fn a_newline_in_a_user_name_cannot_forge_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), PRINCIPALS);
    let log = dir.path().join("stderr.log");
    let server = common::serve(
        &dir.path().join("data"),
        Some(&log),
        &["--tokens", file.to_str().unwrap()],
    );
    let u = server.url();
    let forged = "x\n2026-01-01T00:00:00.000000Z  WARN partner_ledger::api::auth: request denied principal=\"ops (operator)\"";
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let body = json!({"type": "RequestRelationship", "request": "1b000000-0000-4000-8000-0000000000f3",
            "partner": B, "customer": FABRIKAM,
            "actor": {"tenant": B, "user": forged, "role": "partner_admin_agent"}});
        let (s, v) = post_json(&c, &u, "b_admin", body).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
        assert_eq!(v["reason"], "actor_mismatch");
    });
    drop(server);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("request denied"), "{text}");
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("2026-01-01T00:00:00.000000Z")),
        "a user-supplied newline started a log line of its own:\n{text}"
    );
}

/// Drops the `command_id`, which differs between two probes by construction.
fn without_id(mut v: Value) -> Value {
    v.as_object_mut().unwrap().remove("command_id");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_tenants_ids_are_answered_exactly_like_ids_that_do_not_exist() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    const A_REQUEST: &str = "1a000000-0000-4000-8000-000000000001";
    const A_ADMIN: &str = "9d000000-0000-4000-8000-0000000000a1";
    const RANDOM: &str = "0e000000-0000-4000-8000-0000000000e1";
    // A's GDAP request to Contoso, so that there is an admin relationship of A's to probe.
    let (s, o) = post_json(&c, &u, "a_admin", json!({"type": "RequestDelegatedAdmin", "admin_relationship": A_ADMIN,
        "partner": A, "customer": CONTOSO, "name": "Adatum helpdesk", "roles": ["729827e3-9c14-49f7-bb1b-9608f156bbb8"],
        "duration_days": 30, "auto_extend": false})).await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let head = server.head();
    // (prober, command with {id} standing for the probed id)
    let probes: Vec<(&str, Value)> = vec![
        (
            "b_admin",
            json!({"type": "WithdrawRelationshipRequest", "request": "{id}"}),
        ),
        (
            "b_admin",
            json!({"type": "TerminateDelegatedAdmin", "admin_relationship": "{id}"}),
        ),
        (
            "b_admin",
            json!({"type": "SuspendSubscription", "subscription": "{id}", "partner": B}),
        ),
        (
            "b_admin",
            json!({"type": "ReactivateSubscription", "subscription": "{id}", "partner": B}),
        ),
        (
            "b_admin",
            json!({"type": "CancelSubscription", "subscription": "{id}", "partner": B}),
        ),
        (
            "fab_admin",
            json!({"type": "AcceptRelationship", "request": "{id}", "customer": FABRIKAM}),
        ),
        (
            "fab_admin",
            json!({"type": "GrantDelegatedAdmin", "admin_relationship": "{id}", "customer": FABRIKAM}),
        ),
        (
            "fab_admin",
            json!({"type": "TerminateDelegatedAdmin", "admin_relationship": "{id}"}),
        ),
    ];
    for (who, template) in probes {
        let text = template.to_string();
        let real = if text.contains("request\":\"{id}") {
            A_REQUEST
        } else if text.contains("admin_relationship") {
            A_ADMIN
        } else {
            A_O365
        };
        let probe = |id: &str| serde_json::from_str::<Value>(&text.replace("{id}", id)).unwrap();
        let (s_real, o_real) = post_json(&c, &u, who, probe(real)).await;
        let (s_random, o_random) =
            post_json(&c, &u, who, probe(&real.replace(&real[..8], &RANDOM[..8]))).await;
        assert_eq!(s_real, s_random, "{who} {text}: {o_real} / {o_random}");
        assert_eq!(s_real, StatusCode::UNPROCESSABLE_ENTITY, "{o_real}");
        // Identical but for the id the prober itself sent.
        let real_text = without_id(o_real.clone()).to_string();
        let random_text = without_id(o_random)
            .to_string()
            .replace(&RANDOM[..8], &real[..8]);
        assert_eq!(real_text, random_text, "{who} {text}");
        for other in [A, CONTOSO] {
            assert!(
                !real_text.contains(other),
                "{who} {text} names {other}: {real_text}"
            );
        }
    }
    assert_eq!(server.head(), head, "nothing was appended");
    // A prober re-using one of its own ids on another tenant's entity: the reuse refusal is filed as for a random id.
    let (s, mine) = post_json(
        &c,
        &u,
        "b_admin",
        json!({"type": "RequestRelationship", "command_id": "0e000000-0000-4000-8000-0000000000e9",
        "request": "1b000000-0000-4000-8000-0000000000e9", "partner": B, "customer": FABRIKAM}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let (s, o) = post_json(
        &c,
        &u,
        "b_admin",
        json!({"type": "WithdrawRelationshipRequest",
        "command_id": "0e000000-0000-4000-8000-0000000000e9", "request": A_REQUEST}),
    )
    .await;
    assert_eq!(
        (s, &o["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("command_id_reused")
        ),
        "{o}"
    );
    // The probers' own refusal trail names no other tenant either.
    let trail: Vec<_> = server
        .ledger
        .refusals()
        .all()
        .map(Result::unwrap)
        .filter(|r| r.actor.tenant.to_string() == B || r.actor.tenant.to_string() == FABRIKAM)
        .collect();
    assert_eq!(trail.len(), 17, "every probe was filed as a refusal");
    for r in trail {
        let text = serde_json::to_string(&r).unwrap();
        assert!(!text.contains(A) && !text.contains(CONTOSO), "{text}");
    }
    // Where the principal may see the entity, the rules' own codes stand: A suspends its own subscription. And
    // without confinement (local mode, the CLI) B cancelling A's subscription is still R27's not_partner_of_record.
    let (s, o) = post_json(
        &c,
        &u,
        "a_admin",
        json!({"type": "SuspendSubscription", "subscription": A_O365, "partner": A}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let line = format!(
        r#"{{"type":"CancelSubscription","actor":{{"tenant":"{B}","user":"admin@bellows.example","role":"partner_admin_agent"}},"subscription":"{A_O365}","partner":"{B}"}}"#
    );
    let ledger = Arc::clone(&server.ledger);
    let o =
        tokio::task::spawn_blocking(move || ledger.execute(parse_line(&line).unwrap()).to_json())
            .await
            .unwrap();
    assert_eq!(
        (&o["code"], &o["rule"]),
        (&json!("not_partner_of_record"), &json!("R27")),
        "{o}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partner_never_receives_another_partners_people_in_shared_customer_events() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    // A and B both become Fabrikam's partners; then A's admin agent attests Fabrikam's agreement.
    for (partner, who, request) in [
        (A, "a_admin", "1a000000-0000-4000-8000-0000000000f1"),
        (B, "b_admin", "1b000000-0000-4000-8000-0000000000f1"),
    ] {
        let (s, o) = post_json(
            &c,
            &u,
            who,
            json!({"type": "RequestRelationship", "request": request,
            "partner": partner, "customer": FABRIKAM}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{o}");
        let (s, o) = post_json(
            &c,
            &u,
            "fab_admin",
            json!({"type": "AcceptRelationship",
            "request": request, "customer": FABRIKAM}),
        )
        .await;
        assert_eq!(s, StatusCode::OK, "{o}");
    }
    let (s, o) = post_json(
        &c,
        &u,
        "a_admin",
        json!({"type": "AcceptCustomerAgreement", "customer": FABRIKAM}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{o}");
    let attested = o["positions"][0].as_u64().unwrap();
    let head = server.head();
    let find = |events: &[Value]| {
        events
            .iter()
            .find(|e| e["position"] == attested)
            .cloned()
            .unwrap_or_else(|| panic!("the attestation at {attested} is missing"))
    };
    // B receives the customer-level event, without A's agent or tenant, in its stream and in the history.
    let b_stream = stream_all(&c, &u, "b_admin", head).await;
    let e = find(&b_stream);
    assert_eq!(e["type"], "CustomerAgreementAccepted");
    assert_eq!(e["actor"], Value::Null, "{e}");
    assert_eq!(e["data"]["accepted_by"], Value::Null, "{e}");
    assert_eq!(e["withheld"], json!(["actor", "data.accepted_by"]));
    // The CloudEvents form carries the same withheld envelope as its data (docs/streams.md).
    let resp = c
        .get(format!("{u}/v1/events?format=cloudevents&to={head}"))
        .bearer_auth(token("b_admin"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    let ce = text
        .lines()
        .filter(|l| l.contains("\"specversion\""))
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["ledgerposition"] == attested)
        .unwrap_or_else(|| panic!("the attestation at {attested} is missing: {text}"));
    assert_eq!(ce["type"], "CustomerAgreementAccepted");
    assert_eq!(ce["subject"], FABRIKAM);
    assert_eq!(
        (&ce["data"]["actor"], &ce["data"]["data"]["accepted_by"]),
        (&Value::Null, &Value::Null),
        "{ce}"
    );
    assert!(!text.contains(A), "B was told about A: {text}");
    let (s, history) = get(
        &c,
        &format!("{u}/v1/customers/{FABRIKAM}/history"),
        Some("b_admin"),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let h = find(history["events"].as_array().unwrap());
    assert_eq!(
        (&h["actor"], &h["data"]["accepted_by"]),
        (&Value::Null, &Value::Null),
        "{h}"
    );
    for text in [
        serde_json::to_string(&b_stream).unwrap(),
        history.to_string(),
    ] {
        assert!(
            !text.contains(A) && !text.contains("adatum"),
            "B was told about A: {text}"
        );
    }
    // A itself, the customer and operators receive the event as stored.
    for who in ["a_admin", "fab_admin", "ops"] {
        let e = find(&stream_all(&c, &u, who, head).await);
        assert_eq!(e["actor"]["tenant"], A, "{who}: {e}");
        assert_eq!(e["data"]["accepted_by"], A, "{who}: {e}");
        assert!(e.get("withheld").is_none(), "{who}: {e}");
    }
    server.stop().await;
}

#[test]
fn removing_a_principal_ends_its_open_streams() {
    let dir = tempfile::tempdir().unwrap();
    let file = tokens_file(dir.path(), PRINCIPALS);
    let server = common::serve(
        &dir.path().join("data"),
        None,
        &["--tokens", file.to_str().unwrap(), "--heartbeat-ms", "100"],
    );
    let u = server.url();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = reqwest::Client::new();
        let (s, _) = call(
            &c,
            reqwest::Method::PUT,
            &format!("{u}/v1/consumers/billing"),
            Some("ops"),
            Some(("application/json", "{}".into())),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED);
        let open = |path: String, who: &'static str| {
            let c = c.clone();
            async move {
                let r = c
                    .get(path)
                    .bearer_auth(token(who))
                    .header("accept", "application/x-ndjson")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{who}");
                r.bytes_stream()
            }
        };
        let mut b_stream = open(format!("{u}/v1/events"), "b_admin").await;
        let mut ops_stream = open(format!("{u}/v1/consumers/billing/events"), "ops").await;
        let mut audit_stream = open(format!("{u}/v1/events"), "audit").await;
        // Heartbeats flow on all three.
        for s in [&mut b_stream, &mut ops_stream, &mut audit_stream] {
            assert!(s.next().await.is_some());
        }
        // B and the operator are removed from the tokens file; the auditor stays.
        let kept: Vec<_> = PRINCIPALS
            .iter()
            .filter(|p| p.0 != "b_admin" && p.0 != "ops")
            .copied()
            .collect();
        tokens_file(dir.path(), &kept);
        std::process::Command::new("kill")
            .args(["-HUP", &server.pid().to_string()])
            .status()
            .unwrap();
        // Their open streams end; new requests are 401.
        for (who, s) in [("b_admin", &mut b_stream), ("ops", &mut ops_stream)] {
            let ended = tokio::time::timeout(Duration::from_secs(20), async {
                while let Some(chunk) = s.next().await {
                    if chunk.is_err() {
                        break;
                    }
                }
            })
            .await;
            assert!(
                ended.is_ok(),
                "the stream of removed principal {who} is still open"
            );
            assert_eq!(
                get(&c, &format!("{u}/healthz"), Some(who)).await.0,
                StatusCode::UNAUTHORIZED
            );
        }
        // The auditor's stream goes on.
        for _ in 0..3 {
            let chunk = tokio::time::timeout(Duration::from_secs(5), audit_stream.next())
                .await
                .expect("the auditor's stream still sends heartbeats");
            assert!(chunk.is_some_and(|c| c.is_ok()));
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_tenant_has_command_ids_of_its_own() {
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    const X: &str = "1d000000-0000-4000-8000-0000000000c1";
    const Y: &str = "1d000000-0000-4000-8000-0000000000c2";
    let request = |partner: &str, request: &str, id: &str| {
        json!({"type": "RequestRelationship", "command_id": id, "request": request,
            "partner": partner, "customer": FABRIKAM})
    };
    // B uses X; A then uses X for a command of its own: a new command, neither a duplicate nor a reuse.
    let (s, b_first) = post_json(
        &c,
        &u,
        "b_admin",
        request(B, "1b000000-0000-4000-8000-0000000000c1", X),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{b_first}");
    let (s, a_first) = post_json(
        &c,
        &u,
        "a_admin",
        request(A, "1a000000-0000-4000-8000-0000000000c1", X),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a_first}");
    assert!(a_first.get("duplicate").is_none(), "{a_first}");
    assert_ne!(a_first["positions"], b_first["positions"]);
    // Each re-submission is answered from its own tenant's record.
    for (who, partner, req, first) in [
        (
            "b_admin",
            B,
            "1b000000-0000-4000-8000-0000000000c1",
            &b_first,
        ),
        (
            "a_admin",
            A,
            "1a000000-0000-4000-8000-0000000000c1",
            &a_first,
        ),
    ] {
        let (s, again) = post_json(&c, &u, who, request(partner, req, X)).await;
        assert_eq!(s, StatusCode::OK, "{again}");
        assert_eq!(again["duplicate"], true);
        assert_eq!(again["positions"], first["positions"]);
    }
    // B cannot take an id before A: B uses Y first (with content A will never send), A's Y still commits.
    let (s, _) = post_json(
        &c,
        &u,
        "b_admin",
        request(B, "1b000000-0000-4000-8000-0000000000c2", Y),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, a_y) = post_json(
        &c,
        &u,
        "a_admin",
        request(A, "1a000000-0000-4000-8000-0000000000c2", Y),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{a_y}");
    assert!(
        a_y.get("duplicate").is_none() && a_y["outcome"] == "committed",
        "{a_y}"
    );
    // The envelopes carry the ids as sent.
    let events = stream_all(&c, &u, "ops", server.head()).await;
    let with_x = events.iter().filter(|e| e["command_id"] == X).count();
    assert_eq!(
        with_x, 2,
        "both tenants' commands keep the command_id they sent"
    );
    // Within one tenant the contract is unchanged: the same id with other content is command_id_reused.
    let (s, reused) = post_json(
        &c,
        &u,
        "a_admin",
        request(A, "1a000000-0000-4000-8000-0000000000c9", X),
    )
    .await;
    assert_eq!(
        (s, &reused["code"]),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!("command_id_reused")
        )
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_concurrent_load_confined_live_streams_equal_their_replay_and_views_never_404() {
    const CUSTOMERS: usize = 300;
    const CLIENTS: usize = 8;
    let server = Server::start().await;
    let u = server.url.clone();
    let c = reqwest::Client::new();
    // A Global admin for each new customer, added to the tokens file and reloaded.
    let customers: Vec<(String, String)> = (0..CUSTOMERS)
        .map(|i| {
            (
                format!("cust_{i}"),
                format!("c7000000-0000-4000-8000-{i:012}"),
            )
        })
        .collect();
    let extra: Vec<(&str, &str, Option<&str>, &str)> = customers
        .iter()
        .map(|(name, tenant)| {
            (
                name.as_str(),
                "customer_global_admin",
                Some(tenant.as_str()),
                "admin",
            )
        })
        .collect();
    let all: Vec<_> = PRINCIPALS.iter().copied().chain(extra).collect();
    tokens_file(server.tokens.parent().unwrap(), &all);
    server.auth.reload().unwrap();
    let start = server.head();
    // Partner B's and the first customer's live streams, open before the load.
    let open = |who: String| {
        let c = c.clone();
        let u = u.clone();
        async move {
            c.get(format!("{u}/v1/events?from={start}"))
                .bearer_auth(token(&who))
                .header("accept", "application/x-ndjson")
                .send()
                .await
                .unwrap()
        }
    };
    let b_live = open("b_admin".into()).await;
    let cust_live = open(customers[0].0.clone()).await;
    let views_after_accept = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (c, u, customers) = (c.clone(), u.clone(), customers.clone());
            let views = Arc::clone(&views_after_accept);
            tokio::spawn(async move {
                for (i, (name, customer)) in customers.iter().enumerate().filter(|(i, _)| i % CLIENTS == k) {
                    let request = format!("1b700000-0000-4000-8000-{i:012}");
                    let register = json!({"type": "RegisterCustomer", "customer": customer, "company_name": format!("Load {i}"),
                        "domain": format!("load{i}.onmicrosoft.com"), "country": "NL", "cloud": "public"});
                    let (s, o) = post_json(&c, &u, "ops", register).await;
                    assert_eq!(s, StatusCode::OK, "{o}");
                    let ask = json!({"type": "RequestRelationship", "request": request, "partner": B, "customer": customer});
                    let (s, o) = post_json(&c, &u, "b_admin", ask).await;
                    assert_eq!(s, StatusCode::OK, "{o}");
                    // Acceptance and a customer-level event in one request: they land in one batch, right after
                    // the event that involves B.
                    let both = [
                        json!({"type": "AcceptRelationship", "request": request, "customer": customer}),
                        json!({"type": "AcceptCustomerAgreement", "customer": customer}),
                    ]
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n");
                    let (s, o) = call(&c, reqwest::Method::POST, &format!("{u}/v1/commands"), Some(name),
                        Some(("application/x-ndjson", both))).await;
                    assert_eq!(s, StatusCode::OK, "{o}");
                    // Read-your-writes: B reads the customer right after the acceptance was answered.
                    let (s, v) = get(&c, &format!("{u}/v1/customers/{customer}"), Some("b_admin")).await;
                    assert_eq!(s, StatusCode::OK, "B's view of {customer} right after the acceptance: {v}");
                    views.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let head = server.head();
    assert_eq!(
        views_after_accept.load(std::sync::atomic::Ordering::Relaxed),
        CUSTOMERS
    );
    let b_got = read_positions(b_live, head, "b_admin").await;
    let b_replay = positions_from(&c, &u, "b_admin", start, head).await;
    assert_eq!(b_got, b_replay, "B's live stream differs from its replay");
    // Per customer: request, relationship, agreement; never the registration, which came before B's involvement.
    assert_eq!(b_got.len(), 3 * CUSTOMERS, "{} events", b_got.len());
    let cust_got = read_positions(cust_live, head, &customers[0].0).await;
    let cust_replay = positions_from(&c, &u, &customers[0].0, start, head).await;
    assert_eq!(cust_got, cust_replay);
    assert_eq!(
        cust_got.len(),
        4,
        "registration, request, relationship, agreement"
    );
    eprintln!(
        "{CUSTOMERS} customers, {} events, B's stream {} events and the customer's {} compared position by position: 0 differences",
        head - start,
        b_got.len(),
        cust_got.len()
    );
    server.stop().await;
}
