//! The `abgate` command line. Exit codes: 0 success, 1 invalid input (config, events,
//! arguments), 2 runtime failure.

use abgate::cli;
use clap::Parser;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: abgate_alloc::MiMalloc = abgate_alloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    let args = match cli::Cli::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    std::process::exit(cli::run(args));
}
