//! `fail`: writes one line to stderr and exits with code 3, for restart
//! policies and back-off.

fn main() {
    eprintln!("fail: giving up on purpose (exit code 3)");
    std::process::exit(3);
}
