//! `api-server [--config FILE]`: reads the configuration and serves the API.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let settings = match settings::Settings::from_args_and_env(&args) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("api-server: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = startup::init_logging(&settings) {
        eprintln!("api-server: {e}");
        std::process::exit(2);
    }
    actix_web::rt::System::new().block_on(api_server::run(settings))
}
