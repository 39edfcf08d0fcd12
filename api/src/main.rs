//! `uphub <role>`: migrate | serve | worker | demo | export-schema.

use anyhow::Context;

// glibc malloc was a quarter of the gateway's CPU under load (perf, bench/catalog); mimalloc's
// thread-local pages avoid most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use uphub_services::Core;
use uphub_services::config::Config;

fn usage() -> ! {
    eprintln!("usage: uphub <migrate|serve|worker|demo|export-schema>");
    std::process::exit(2)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested; draining");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let role = std::env::args().nth(1).unwrap_or_else(|| usage());
    if role == "export-schema" {
        print!("{}", uphub_schema::sdl());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,lapin=warn".into()),
        )
        .init();
    let cfg = Config::from_env()?;
    match role.as_str() {
        "migrate" => {
            let db = sea_orm::Database::connect(cfg.database_url.as_str())
                .await
                .context("connecting to Postgres")?;
            uphub_migrations::migrate(&db).await.context("migrating")?;
            println!("migrations applied to {}", cfg.namespace);
        }
        "demo" => {
            let core = Core::connect(cfg).await?;
            let created = uphub_services::demo::seed(&core)
                .await
                .map_err(|e| anyhow::anyhow!("seeding demo tenant: {e}"))?;
            println!(
                "demo tenant {}: tenantSlug={} email={} password={}",
                if created { "created" } else { "already exists" },
                uphub_services::demo::DEMO_SLUG,
                uphub_services::demo::DEMO_EMAIL,
                uphub_services::demo::DEMO_PASSWORD
            );
        }
        "serve" => {
            let listen = cfg.listen.clone();
            let core = Core::connect(cfg).await?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!("gateway on http://{listen}/graphql");
            uphub_api::serve(uphub_api::App::new(core), listener, shutdown_signal()).await?;
        }
        "worker" => {
            let core = Core::connect(cfg).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            });
            tracing::info!("worker started");
            uphub_api::run_worker(core, Default::default(), rx).await?;
        }
        _ => usage(),
    }
    Ok(())
}
