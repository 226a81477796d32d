use broadcast_server::config::Config;

#[tokio::main]
async fn main() {
    let config = Config::load();
    if config.healthcheck {
        let config = broadcast_server::healthcheck::target(config, std::env::args_os().count());
        if let Err(e) = broadcast_server::healthcheck::probe(&config) {
            eprintln!("{e}");
            std::process::exit(1);
        }
        return;
    }
    broadcast_server::telemetry::init(config.log_format);
    if let Err(e) = broadcast_server::run(config).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
