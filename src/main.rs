use broadcast_server::config::Config;

#[tokio::main]
async fn main() {
    let args: Vec<_> = std::env::args_os().collect();
    if broadcast_server::healthcheck::requested(&args) {
        if let Err(e) = broadcast_server::healthcheck::run(args) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    let config = Config::load();
    broadcast_server::telemetry::init(config.log_format);
    if let Err(e) = broadcast_server::run(config).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
