//! The command line of the one binary: `uphub <role>` (migrate | serve | worker | seckill |
//! demo | mock-platforms | export-schema). A test binary runs the same roles (workers it can SIGKILL).

use anyhow::Context;

use uphub_services::Core;
use uphub_services::config::Config;

fn usage() -> ! {
    eprintln!("usage: uphub <migrate|serve|worker|seckill|demo|mock-platforms|export-schema>");
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

/// Runs one role; `args` are the process arguments without the program name.
pub async fn run(args: Vec<String>) -> anyhow::Result<()> {
    let role = args.first().cloned().unwrap_or_else(|| usage());
    if role == "mock-platforms" {
        init_tracing();
        return uphub_channels_mock::run_cli(&args[1..]).await;
    }
    if role == "export-schema" {
        print!("{}", uphub_schema::sdl());
        return Ok(());
    }
    init_tracing();
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
            crate::serve(crate::App::new(core), listener, shutdown_signal()).await?;
        }
        "seckill" => {
            // The flash-sale edge alone: buyers' buy/poll/subscribe, no staff API.
            let seckill_cfg = uphub_services::seckill::SeckillConfig::from_env()?;
            let listen = seckill_cfg.listen.clone();
            let core = Core::connect(cfg).await?;
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("binding {listen}"))?;
            tracing::info!("flash-sale edge on http://{listen}/seckill/buy");
            crate::seckill::serve(
                crate::seckill::Edge::new(core, seckill_cfg),
                listener,
                shutdown_signal(),
            )
            .await?;
        }
        "worker" => {
            let core = Core::connect(cfg).await?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(async move {
                shutdown_signal().await;
                let _ = tx.send(true);
            });
            tracing::info!("worker started");
            crate::run_worker(core, Default::default(), rx).await?;
        }
        _ => usage(),
    }
    Ok(())
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn,lapin=warn".into()),
        )
        .try_init();
}
