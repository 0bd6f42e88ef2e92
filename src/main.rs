//! `cargohold` binary: parse the command line, set up logging, run. Failures map to exit
//! codes (64 for usage and configuration, 1 otherwise).

use std::process::ExitCode;

use cargohold::cli::quarantine::QuarantineCmd;
use cargohold::cli::{run_admin, run_warm, Cli, CliError, Command, ConfigArgs, EXIT_FAILURE, EXIT_USAGE};
use cargohold::config::env::{ProcessEnv, Provenance};
use cargohold::config::{Config, ConfigError, Overrides};
use cargohold::registry::admin::AdminToken;
use cargohold::telemetry::access::{self, AccessGuard};
use clap::Parser;

fn load_config(args: &ConfigArgs) -> Result<(Config, Provenance), ConfigError> {
    let ov = Overrides {
        listen: args.listen.clone(),
        data_dir: args.data_dir.clone(),
        public_url: args.public_url.clone(),
    };
    Config::load_layered(args.config.as_deref(), &ov, &ProcessEnv)
}

/// Logs go to stderr through background writers, so request handling never waits for the
/// terminal or the log file; the guards flush them at exit. Lines are never dropped. Access
/// lines (one per request) go through their own fast writer (`telemetry::access`).
fn init_logging(format: &str) -> (tracing_appender::non_blocking::WorkerGuard, AccessGuard) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let json = format == "json";
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer().with_writer(writer).with_ansi(ansi);
    let fmt = if json { fmt.json().boxed() } else { fmt.boxed() };
    let access_guard = access::install(json);
    tracing_subscriber::registry().with(filter).with(fmt).init();
    (guard, access_guard)
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return exit(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit(EXIT_FAILURE);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            exit(e.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), CliError> {
    let config_err = |e: ConfigError| CliError {
        code: EXIT_USAGE,
        message: e.to_string(),
    };
    match cli.command {
        Command::Serve(args) => {
            if cli.log_format != "text" && cli.log_format != "json" {
                return Err(CliError {
                    code: EXIT_USAGE,
                    message: "--log-format must be `text` or `json`".into(),
                });
            }
            let _log_guard = init_logging(&cli.log_format);
            let (config, _) = load_config(&args).map_err(config_err)?;
            serve(config).await
        }
        Command::CheckConfig(args) => {
            let (config, _) = load_config(&args).map_err(config_err)?;
            if let Some(tls) = &config.tls {
                cargohold::server::tls::load_certified_key(&tls.cert, &tls.key).map_err(|e| CliError {
                    code: EXIT_USAGE,
                    message: format!("invalid configuration:\n  - tls: {e}"),
                })?;
            }
            println!("configuration is valid");
            Ok(())
        }
        Command::PrintConfig(args) => {
            let (config, prov) = load_config(&args).map_err(config_err)?;
            print!("{}", config.describe(&prov));
            Ok(())
        }
        warm @ Command::Warm { .. } => run_warm(&cli.server, warm).await,
        Command::Gc {
            config,
            apply,
            grace,
            json,
        } => {
            let grace_secs = cargohold::cli::parse_grace(&grace)?;
            let (config, _) = load_config(&config).map_err(config_err)?;
            if config.store.is_embedded() && !config.data_dir.join("store").is_dir() {
                return Err(CliError {
                    code: EXIT_USAGE,
                    message: format!(
                        "there is no store in {}; pass the daemon's --data-dir or --config",
                        config.data_dir.display()
                    ),
                });
            }
            let failed = |e: String| CliError {
                code: EXIT_FAILURE,
                message: e,
            };
            let store = cargohold::app::open_store_beside_daemon(&config)
                .await
                .map_err(|e| failed(format!("{e:#}")))?;
            let report = cargohold::store::gc::collect(&store, grace_secs, apply)
                .await
                .map_err(|e| failed(format!("garbage collection failed: {e}")))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
            } else {
                cargohold::cli::print_gc_report(&report, &grace, apply);
            }
            let _ = store.meta.close().await;
            Ok(())
        }
        Command::Export {
            config,
            registry,
            out,
            lockfiles,
            crates,
            since,
        } => {
            let wants = if lockfiles.is_empty() && crates.is_none() {
                None
            } else {
                Some(cargohold::cli::warm::wants(&lockfiles, crates.as_ref())?)
            };
            let args = cargohold::cli::bundle::ExportArgs {
                registry: registry.clone(),
                out: out.clone(),
                wants,
                since,
            };
            let s = if on_data_dir(&config) {
                let (config, _) = load_config(&config).map_err(config_err)?;
                cargohold::cli::bundle::export(&config, args).await?
            } else {
                cargohold::cli::bundle::export_via(&cli.server, args).await?
            };
            println!(
                "exported {} index file(s) and {} crate file(s) of `{registry}` ({} bytes, {} in the file) to {}",
                s.index_files,
                s.crate_files,
                s.bytes,
                s.file_bytes,
                out.display()
            );
            match &s.base {
                Some(b) => println!(
                    "bundle {} (an increment on {b}; {} entries unchanged and left out)",
                    s.id, s.unchanged
                ),
                None => println!("bundle {}", s.id),
            }
            Ok(())
        }
        Command::Migrate { config, to_config } => {
            let (config, _) = load_config(&config).map_err(config_err)?;
            cargohold::cli::migrate(&config, &to_config).await
        }
        Command::Import { config, file, registry } => {
            let s = if on_data_dir(&config) {
                let (config, _) = load_config(&config).map_err(config_err)?;
                cargohold::cli::bundle::import(&config, &file, registry.as_deref()).await?
            } else {
                cargohold::cli::bundle::import_via(&cli.server, &file, registry.as_deref()).await?
            };
            if s.already {
                println!(
                    "bundle {} was imported into `{}` before; nothing changed",
                    s.id, s.registry
                );
            } else {
                println!(
                    "imported bundle {} into `{}`: {} index file(s), {} crate file(s), {} bytes, all verified",
                    s.id, s.registry, s.index_files, s.crate_files, s.bytes
                );
            }
            Ok(())
        }
        Command::Quarantine(QuarantineCmd::List { config, json }) if on_data_dir(&config) => {
            let (config, _) = load_config(&config).map_err(config_err)?;
            let rows = cargohold::cli::quarantine::rows_of_data_dir(&config.data_dir)?;
            cargohold::cli::quarantine::print_rows(&rows, json);
            Ok(())
        }
        Command::Advisories(cmd) => {
            use cargohold::cli::advisories as adv;
            use cargohold::cli::AdvisoriesCmd;
            let (s, json) = match cmd {
                AdvisoriesCmd::Import { config, source, json } => {
                    let s = if on_data_dir(&config) {
                        let (config, _) = load_config(&config).map_err(config_err)?;
                        adv::import(&config, &source).await?
                    } else {
                        adv::import_via(&cli.server, &source).await?
                    };
                    if !json {
                        println!("imported the advisory database from {}", source.display());
                    }
                    (s, json)
                }
                AdvisoriesCmd::Status { config, json } => {
                    let s = if on_data_dir(&config) {
                        let (config, _) = load_config(&config).map_err(config_err)?;
                        adv::status(&config).await?
                    } else {
                        adv::status_via(&cli.server).await?
                    };
                    (s, json)
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&s).unwrap_or_default());
            } else {
                adv::print_status(&s);
            }
            Ok(())
        }
        other => run_admin(&cli.server, other).await,
    }
}

/// Whether a bundle command works on a data directory (`--data-dir` or `--config` given)
/// rather than through the running daemon (`--server`).
fn on_data_dir(args: &ConfigArgs) -> bool {
    args.data_dir.is_some() || args.config.is_some()
}

async fn serve(config: Config) -> Result<(), CliError> {
    let env_token = std::env::var("CARGOHOLD_ADMIN_TOKEN").ok();
    let running = cargohold::app::start(config, env_token).await.map_err(|e| CliError {
        code: EXIT_FAILURE,
        message: format!("{e:#}"),
    })?;
    println!("cargohold listening on {}", running.public_url);
    println!();
    println!("Add this to ~/.cargo/config.toml (or .cargo/config.toml of a project):");
    println!();
    print!("{}", running.cargo_config_snippet());
    println!();
    match &running.admin_token {
        AdminToken::File(p) => println!(
            "Admin token: {} (export CARGOHOLD_ADMIN_TOKEN=$(cat {}))",
            p.display(),
            p.display()
        ),
        AdminToken::Revoked(p) => println!(
            "Admin token: the one in {} was revoked; use another admin token or set CARGOHOLD_ADMIN_TOKEN",
            p.display()
        ),
        AdminToken::Env => println!("Admin token: from CARGOHOLD_ADMIN_TOKEN"),
        AdminToken::InStore => println!(
            "Admin token: the store already holds one (another node's); set CARGOHOLD_ADMIN_TOKEN to it on every node"
        ),
    }
    tracing::info!(addr = %running.addr, public_url = %running.public_url, "cargohold started");
    cargohold::app::shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
