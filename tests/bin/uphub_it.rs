//! The `uphub` command line, built inside the test package so integration tests can run real
//! worker processes (and SIGKILL them).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    uphub_api::cli::run(std::env::args().skip(1).collect()).await
}
