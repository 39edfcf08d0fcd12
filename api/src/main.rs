//! `uphub <role>`: migrate | serve | worker | demo | mock-platforms | export-schema.

// glibc malloc was a quarter of the gateway's CPU under load (perf, bench/catalog); mimalloc's
// thread-local pages avoid most of it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    uphub_api::cli::run(std::env::args().skip(1).collect()).await
}
