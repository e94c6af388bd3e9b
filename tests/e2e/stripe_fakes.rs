//! Stripe for the billing tests. localstripe (PyPI), one per test on a free
//! loopback port, is Stripe: customers, plans, subscriptions, invoices and
//! its own signed webhook deliveries. It has no checkout or billing portal
//! sessions (404), so Coverwatch talks to a small front server that answers
//! those two with Stripe's own fixture objects (tests/data/stripe, MIT,
//! © Stripe) and records the requests, and passes every other call through
//! to localstripe unchanged. Webhook bodies localstripe never emits are built
//! from the fixtures and signed by the official `stripe` Python library.

use crate::helpers::{free_port, python, workspace_root};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const SECRET_KEY: &str = "sk_test_coverwatch";
pub const WEBHOOK_SECRET: &str = "whsec_coverwatch_test";

pub struct Localstripe {
    pub base: String,
    /// Killed when the test ends (kill_on_drop).
    _child: tokio::process::Child,
    http: reqwest::Client,
}

impl Localstripe {
    pub async fn start() -> Localstripe {
        let port = free_port();
        let child = tokio::process::Command::new(python())
            .arg(workspace_root().join("tests/tools/localstripe_server.py"))
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("localstripe starts (make test installs it into .coverwatch/venv)");
        let stripe = Localstripe {
            base: format!("http://127.0.0.1:{port}"),
            _child: child,
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = stripe
                .http
                .get(format!("{}/v1/customers", stripe.base))
                .basic_auth(SECRET_KEY, Some(""))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            assert!(Instant::now() < deadline, "localstripe did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The catalog's price ids, as plans (localstripe's prices are 404).
        stripe
            .post("/v1/products", &[("id", "prod_coverwatch"), ("name", "Coverwatch")])
            .await;
        for (id, amount, interval) in [
            ("price_individual_monthly", "2900", "month"),
            ("price_pro_monthly", "25000", "month"),
            ("price_pro_annual", "250000", "year"),
        ] {
            stripe
                .post(
                    "/v1/plans",
                    &[
                        ("id", id),
                        ("product", "prod_coverwatch"),
                        ("amount", amount),
                        ("currency", "usd"),
                        ("interval", interval),
                    ],
                )
                .await;
        }
        stripe
    }

    pub async fn post(&self, path: &str, form: &[(&str, &str)]) -> Value {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .basic_auth(SECRET_KEY, Some(""))
            .form(form)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(status.is_success(), "localstripe {path}: {status} {body}");
        body
    }

    pub async fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path).await
    }

    pub async fn http_delete(&self, path: &str) -> Value {
        self.call(reqwest::Method::DELETE, path).await
    }

    async fn call(&self, method: reqwest::Method, path: &str) -> Value {
        self.http
            .request(method, format!("{}{path}", self.base))
            .basic_auth(SECRET_KEY, Some(""))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Has localstripe deliver its events to `url`, signed with the secret.
    pub async fn deliver_webhooks_to(&self, url: &str) {
        let response = self
            .http
            .post(format!("{}/_config/webhooks/coverwatch", self.base))
            .form(&[("url", url), ("secret", WEBHOOK_SECRET)])
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }

    /// A paying subscription for `customer` on `plan`, as a completed
    /// checkout leaves it (card attached first).
    pub async fn subscribe(&self, customer: &str, plan: &str) -> Value {
        self.post("/v1/payment_methods/pm_card_visa/attach", &[("customer", customer)])
            .await;
        self.post(
            &format!("/v1/customers/{customer}"),
            &[("invoice_settings[default_payment_method]", "pm_card_visa")],
        )
        .await;
        self.post("/v1/subscriptions", &[("customer", customer), ("items[0][plan]", plan)])
            .await
    }
}

/// One request the front server answered itself.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    pub form: BTreeMap<String, String>,
}

#[derive(Clone)]
struct Front {
    upstream: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
    http: reqwest::Client,
}

/// The Stripe API base Coverwatch is pointed at.
pub struct StripeFront {
    pub base: String,
    recorded: Arc<Mutex<Vec<Recorded>>>,
}

impl StripeFront {
    pub async fn start(localstripe: &Localstripe) -> StripeFront {
        let recorded = Arc::new(Mutex::new(vec![]));
        let front = Front {
            upstream: localstripe.base.clone(),
            recorded: recorded.clone(),
            http: reqwest::Client::new(),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().fallback(answer).with_state(front);
        tokio::spawn(async move { axum::serve(listener, app).await });
        StripeFront { base, recorded }
    }

    pub fn recorded(&self) -> Vec<Recorded> {
        self.recorded.lock().unwrap().clone()
    }
}

fn fixture(name: &str) -> Value {
    let path = workspace_root().join(format!("tests/data/stripe/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn answer(
    State(front): State<Front>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let path = uri.path().to_owned();
    let form: BTreeMap<String, String> = url_decoded(&body);
    let authorization = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let own = match (method.as_str(), path.as_str()) {
        ("POST", "/v1/checkout/sessions") => {
            let mut session = fixture("checkout_session");
            let id = format!("cs_test_{}", uuid::Uuid::new_v4().simple());
            session["id"] = json!(id);
            session["url"] = json!(format!("https://checkout.stripe.com/c/pay/{id}"));
            session["customer"] = json!(form.get("customer"));
            session["mode"] = json!("subscription");
            session["client_reference_id"] = json!(form.get("client_reference_id"));
            Some(session)
        }
        ("POST", "/v1/billing_portal/sessions") => {
            let mut session = fixture("billing_portal_session");
            session["customer"] = json!(form.get("customer"));
            session["return_url"] = json!(form.get("return_url"));
            session["url"] = json!("https://billing.stripe.com/p/session/test_portal");
            Some(session)
        }
        _ => None,
    };
    if let Some(object) = own {
        front.recorded.lock().unwrap().push(Recorded {
            path,
            authorization,
            form,
        });
        return (StatusCode::OK, axum::Json(object)).into_response();
    }
    // localstripe predates `proration_behavior` (it knows the older
    // `prorate`): the request is recorded as Stripe would get it, then
    // translated for localstripe.
    let mut body = body;
    if path.starts_with("/v1/subscriptions/") && form.contains_key("proration_behavior") {
        front.recorded.lock().unwrap().push(Recorded {
            path: path.clone(),
            authorization: authorization.clone(),
            form: form.clone(),
        });
        let mut translated = form.clone();
        let behavior = translated.remove("proration_behavior").unwrap_or_default();
        translated.insert("prorate".into(), (behavior != "none").to_string());
        body = Bytes::from(
            translated
                .iter()
                .map(|(k, v)| format!("{}={}", url_encode(k), url_encode(v)))
                .collect::<Vec<_>>()
                .join("&"),
        );
    }
    let target = format!(
        "{}{}",
        front.upstream,
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut request = front.http.request(method, target).body(body);
    for name in ["authorization", "content-type"] {
        if let Some(value) = headers.get(name) {
            request = request.header(name, value);
        }
    }
    match request.send().await {
        Ok(response) => {
            let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
            (status, response.bytes().await.unwrap_or_default()).into_response()
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn url_decoded(body: &[u8]) -> BTreeMap<String, String> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let bytes = s.as_bytes();
        let mut out = vec![];
        let mut i = 0;
        while i < bytes.len() {
            let escaped = (bytes[i] == b'%' && i + 2 < bytes.len())
                .then(|| u8::from_str_radix(std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or(""), 16).ok())
                .flatten();
            if let Some(byte) = escaped {
                out.push(byte);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    };
    std::str::from_utf8(body)
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

/// A webhook event body around `object`, in Stripe's envelope (fixture).
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    let mut event = fixture("event");
    event["id"] = json!(id);
    event["type"] = json!(kind);
    event["created"] = json!(created);
    event["data"] = json!({"object": object});
    serde_json::to_string(&event).unwrap()
}

/// Stripe's subscription fixture for `customer`, on `price`, with a period.
pub fn subscription_object(id: &str, customer: &str, price: &str, status: &str, period: (i64, i64)) -> Value {
    let mut subscription = fixture("subscription");
    subscription["id"] = json!(id);
    subscription["customer"] = json!(customer);
    subscription["status"] = json!(status);
    subscription["cancel_at_period_end"] = json!(false);
    subscription["trial_end"] = Value::Null;
    let item = &mut subscription["items"]["data"][0];
    item["price"]["id"] = json!(price);
    let cents = match price {
        "price_individual_monthly" => 2900,
        "price_pro_monthly" => 25000,
        "price_pro_annual" => 250000,
        _ => 0,
    };
    item["price"]["unit_amount"] = json!(cents);
    item["quantity"] = json!(1);
    item["current_period_start"] = json!(period.0);
    item["current_period_end"] = json!(period.1);
    subscription
}

pub fn invoice_object(id: &str, customer: &str, subscription: &str, status: &str, amount: i64) -> Value {
    let mut invoice = fixture("invoice");
    invoice["id"] = json!(id);
    invoice["customer"] = json!(customer);
    invoice["status"] = json!(status);
    invoice["amount_due"] = json!(amount);
    invoice["amount_paid"] = json!(if status == "paid" { amount } else { 0 });
    invoice["parent"]["subscription_details"]["subscription"] = json!(subscription);
    invoice
}

/// The `Stripe-Signature` header for `body`, made by the official library.
pub fn sign(body: &str, secret: &str, timestamp: i64) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .arg(workspace_root().join("tests/tools/stripe_sign.py"))
        .arg(secret)
        .arg(timestamp.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    String::from_utf8(output.stdout).unwrap()
}

/// `Stripe-Signature` headers for many bodies in one run of the library.
pub fn sign_many(bodies: &[String], secret: &str, timestamp: i64) -> Vec<String> {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .arg(workspace_root().join("tests/tools/stripe_sign.py"))
        .arg(secret)
        .arg(timestamp.to_string())
        .arg("--many")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(bodies).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}
