//! boxsync: keeps two mail stores identical, with the commands and flags of Dovecot's
//! `doveadm sync` / `doveadm backup`.

mod cli;
mod remote;
mod stores;

fn main() {
    let code = cli::main();
    std::process::exit(code);
}
