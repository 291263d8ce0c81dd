use clap::Parser;

/// The committer frees, on its own thread, what request threads allocated (and the other way
/// round); glibc's allocator serialised that on its arena locks (a tenth of the committer's
/// time under order load). mimalloc frees cross-thread without a lock.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = shopd::cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("shopd: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(shopd::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("shopd: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
