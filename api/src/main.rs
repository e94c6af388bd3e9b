//! The `coverwatch` binary: parses the command line and hands over to the library.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    coverwatch_api::cli::run().await
}
