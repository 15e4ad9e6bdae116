//! `worker-proc` binary entry point; everything lives in the library
//! (see the crate docs of `worker_proc` for the layout, modes and exit codes).

use clap::Parser;

fn main() {
    let code = worker_proc::cli::run(worker_proc::cli::Cli::parse());
    std::process::exit(code);
}
