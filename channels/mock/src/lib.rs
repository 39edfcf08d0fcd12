//! Faithful mock servers of the marketplaces (Taobao TOP, Doudian, Xiaohongshu).
//!
//! One axum router serves all three on one port, as `channels/WIRE.md` lays out: Taobao
//! `POST /router/rest`, Doudian `POST /<method with dots as slashes>`, Xiaohongshu
//! `POST /ark/open_api/v3/common_controller`. Requests are verified with `uphub_channels::sign`,
//! answers carry the platforms' own shapes and errors, and faults (5xx, throttling with bans,
//! timeouts) are injected from a seeded RNG. Tests drive it in-process through
//! [`MockPlatforms`]; a separate process is driven through the JSON admin API under `/_mock`.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use axum::Router;
use axum::routing::post;
use tokio::sync::mpsc;

mod admin;
mod cli;
mod douyin;
mod faults;
mod push;
mod scenario;
mod state;
mod taobao;
mod types;
mod wire;
mod xhs;

pub use cli::run_cli;
pub use types::{
    FaultStats, Faults, LineSpec, MockConfig, MockError, OrderEvent, OrderSpec, PerPlatform,
    Platform, PushStats, Receiver, Scenario, ScenarioProgress, ScenarioSku, ShopSpec, StockPush,
    TruthLine, TruthOrder,
};

use faults::{Fault, FaultState};
use push::PushCounters;
use state::{PushJob, State};

/// The three mocked platforms and their books. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct MockPlatforms {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: MockConfig,
    state: Mutex<State>,
    faults: Mutex<FaultState>,
    push_tx: mpsc::UnboundedSender<PushJob>,
    /// Taken by the dispatcher task, which starts once a tokio runtime is at hand.
    push_rx: Mutex<Option<mpsc::UnboundedReceiver<PushJob>>>,
    push_stats: Arc<PushCounters>,
    scenario: Mutex<ScenarioProgress>,
    sells: std::sync::atomic::AtomicU64,
}

/// A poisoned lock only means another request panicked mid-way; the books are still usable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl MockPlatforms {
    pub fn new(cfg: MockConfig) -> Self {
        let (push_tx, push_rx) = mpsc::unbounded_channel();
        let m = MockPlatforms {
            inner: Arc::new(Inner {
                state: Mutex::new(State::new(cfg.seed)),
                faults: Mutex::new(FaultState::new(cfg.seed)),
                cfg,
                push_tx,
                push_rx: Mutex::new(Some(push_rx)),
                push_stats: Arc::new(PushCounters::default()),
                scenario: Mutex::new(ScenarioProgress::default()),
                sells: std::sync::atomic::AtomicU64::new(0),
            }),
        };
        m.ensure_dispatcher();
        m
    }

    pub fn config(&self) -> &MockConfig {
        &self.inner.cfg
    }

    /// All three platforms plus the `/_mock` admin API.
    pub fn router(&self) -> Router {
        self.ensure_dispatcher();
        Router::new()
            .route("/router/rest", post(taobao::handle).get(taobao::handle))
            .route("/ark/open_api/v3/common_controller", post(xhs::handle))
            .nest("/_mock", admin::routes())
            .fallback(douyin::handle)
            .with_state(self.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        axum::serve(listener, self.router()).await
    }

    // ---- shops ---------------------------------------------------------------------------

    /// Registers (or replaces) a shop with its app credentials and tokens.
    pub fn add_shop(&self, spec: ShopSpec) {
        lock(&self.inner.state).add_shop(spec);
    }

    /// The shop as the platform knows it now (tokens change on refresh).
    pub fn shop(&self, platform: Platform, shop_id: &str) -> Option<ShopSpec> {
        lock(&self.inner.state)
            .shops
            .get(&(platform, shop_id.to_string()))
            .map(|s| s.spec.clone())
    }

    /// Expires the shop's current access token: calls get the platform's expired-token answer
    /// until the adapter refreshes (Taobao, which has no refresh here: invalid session).
    pub fn expire_token(&self, platform: Platform, shop_id: &str) -> Result<(), MockError> {
        lock(&self.inner.state).expire_token(platform, shop_id)
    }

    // ---- faults --------------------------------------------------------------------------

    /// Faults of one platform, or of all three with `None`. Restarts the platform's fault RNG
    /// from the seed; bans already running keep running until they expire.
    pub fn set_faults(&self, platform: Option<Platform>, faults: Faults) {
        let mut f = lock(&self.inner.faults);
        for p in platform.map_or(Platform::ALL.to_vec(), |p| vec![p]) {
            f.set(p, faults);
        }
    }

    pub fn faults(&self, platform: Platform) -> Faults {
        lock(&self.inner.faults).get(platform)
    }

    pub fn fault_stats(&self) -> PerPlatform<FaultStats> {
        let f = lock(&self.inner.faults);
        PerPlatform {
            taobao: f.stats[0],
            douyin: f.stats[1],
            xiaohongshu: f.stats[2],
        }
    }

    // ---- orders --------------------------------------------------------------------------

    /// A buyer places an order; returns the platform order id (tid, Doudian order_id, orderId).
    pub fn place_order(&self, spec: OrderSpec) -> Result<String, MockError> {
        let (id, jobs) = lock(&self.inner.state).place(&spec, wire::now_ms())?;
        self.dispatch(jobs);
        Ok(id)
    }

    /// Moves an order on (pay, cancel, refund, address change, ship, complete).
    pub fn set_status(
        &self,
        platform: Platform,
        order_id: &str,
        event: OrderEvent,
    ) -> Result<TruthOrder, MockError> {
        let (jobs, truth) = {
            let mut st = lock(&self.inner.state);
            let jobs = st.apply(platform, order_id, &event, wire::now_ms())?;
            let truth = st.order(platform, order_id).map(state::Order::truth);
            (jobs, truth)
        };
        self.dispatch(jobs);
        truth.ok_or_else(|| MockError::UnknownOrder {
            platform,
            order_id: order_id.to_string(),
        })
    }

    /// A paid order of `quantity` × `sku_id` by a generated buyer; the item and price come
    /// from SKUs the shop has sold before (else item = sku, 10.00 yuan).
    pub fn sell(
        &self,
        platform: Platform,
        shop_id: &str,
        sku_id: &str,
        quantity: i64,
    ) -> Result<String, MockError> {
        let n = self
            .inner
            .sells
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let known = lock(&self.inner.state)
            .catalog
            .get(&(platform, shop_id.to_string(), sku_id.to_string()))
            .cloned();
        let (person, buyer_id) = scenario::walk_in_buyer(self.inner.cfg.seed, n, platform);
        let line = match known {
            Some(k) => LineSpec {
                item_id: k.item_id,
                sku_id: sku_id.to_string(),
                outer_sku_code: k.outer_sku_code,
                title: k.title,
                quantity,
                price_fen: k.price_fen,
            },
            None => LineSpec {
                item_id: sku_id.to_string(),
                sku_id: sku_id.to_string(),
                outer_sku_code: String::new(),
                title: String::new(),
                quantity,
                price_fen: 1000,
            },
        };
        self.place_order(OrderSpec {
            platform,
            shop_id: shop_id.to_string(),
            buyer_id,
            receiver: person,
            lines: vec![line],
            post_fee_fen: 0,
            paid: true,
        })
    }

    /// Every order as the platforms hold it now, by platform, shop and creation.
    pub fn truth(&self) -> Vec<TruthOrder> {
        lock(&self.inner.state).truth()
    }

    pub fn order_truth(&self, platform: Platform, order_id: &str) -> Option<TruthOrder> {
        lock(&self.inner.state)
            .order(platform, order_id)
            .map(state::Order::truth)
    }

    /// Stock pushes received, oldest first.
    pub fn pushed_stock(&self) -> Vec<StockPush> {
        lock(&self.inner.state).stock.clone()
    }

    pub fn push_stats(&self) -> PushStats {
        self.inner.push_stats.snapshot()
    }

    /// TMC messages not yet confirmed (delivered or not).
    pub fn tmc_backlog(&self) -> usize {
        lock(&self.inner.state).tmc.len()
    }

    // ---- scenario ------------------------------------------------------------------------

    /// Plans the scenario from its seed and plays it out in a background task. Needs a tokio
    /// runtime and at least one shop on each platform that gets orders.
    pub fn start_scenario(&self, s: Scenario) -> Result<ScenarioProgress, MockError> {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| MockError::Invalid("start_scenario needs a tokio runtime".into()))?;
        let shops = {
            let st = lock(&self.inner.state);
            let mut per: PerPlatform<Vec<String>> = PerPlatform::default();
            for (p, id) in st.shops.keys() {
                match p {
                    Platform::Taobao => per.taobao.push(id.clone()),
                    Platform::Douyin => per.douyin.push(id.clone()),
                    Platform::Xiaohongshu => per.xiaohongshu.push(id.clone()),
                }
            }
            for v in [&mut per.taobao, &mut per.douyin, &mut per.xiaohongshu] {
                v.sort();
            }
            per
        };
        let plan = scenario::plan(&s, &shops)?;
        let progress = {
            let mut p = lock(&self.inner.scenario);
            if p.running {
                return Err(MockError::ScenarioRunning);
            }
            *p = ScenarioProgress {
                running: true,
                seed: s.seed,
                planned_orders: plan.orders.len() as u64,
                planned_changes: plan.changes,
                ..ScenarioProgress::default()
            };
            p.clone()
        };
        handle.spawn(scenario::drive(self.clone(), plan));
        Ok(progress)
    }

    pub fn scenario_progress(&self) -> ScenarioProgress {
        lock(&self.inner.scenario).clone()
    }

    /// Waits until the running scenario has played out.
    pub async fn wait_scenario(&self) -> ScenarioProgress {
        loop {
            let p = self.scenario_progress();
            if !p.running {
                return p;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    // ---- internals -----------------------------------------------------------------------

    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.inner.state)
    }

    pub(crate) fn fault(&self, platform: Platform, app_key: &str) -> Fault {
        lock(&self.inner.faults).decide(platform, app_key, Instant::now())
    }

    pub(crate) fn scenario_mut(&self) -> MutexGuard<'_, ScenarioProgress> {
        lock(&self.inner.scenario)
    }

    /// Hands push jobs to the background dispatcher (never blocks the caller).
    pub(crate) fn dispatch(&self, jobs: Vec<PushJob>) {
        if jobs.is_empty() {
            return;
        }
        self.ensure_dispatcher();
        for j in jobs {
            // The receiver lives as long as `inner`, so a send cannot fail while we exist.
            let _ = self.inner.push_tx.send(j);
        }
    }

    fn ensure_dispatcher(&self) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let Some(rx) = lock(&self.inner.push_rx).take() else {
            return;
        };
        handle.spawn(push::dispatcher(
            rx,
            self.inner.push_stats.clone(),
            self.inner.cfg.push_retry_base,
            self.inner.cfg.push_max_attempts,
        ));
    }
}

/// The answer to an injected HTTP failure: a gateway's plain text, not the platform's JSON.
pub(crate) fn plain_http_error(status: u16) -> axum::response::Response {
    use axum::response::IntoResponse;
    let code =
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY);
    let text = match status {
        503 => "503 Service Temporarily Unavailable",
        _ => "502 Bad Gateway",
    };
    (
        code,
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
