//! boxsync: keeps two mail stores identical, with the commands and flags of Dovecot's
//! `doveadm sync` / `doveadm backup`.

mod cli;
mod config;
mod filters;
mod namespaces;
mod progress;
mod remote;
mod stores;
mod userdb;
mod users;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
