//! `fail`: writes one line to stderr and exits with code 3, for restart
//! policies and back-off. (Through WASI 0.2, whose `exit` carries only
//! success or failure, the host sees status 1.) Given the argument `panic`
//! it panics instead, which traps the guest.

fn main() {
    if std::env::args().nth(1).as_deref() == Some("panic") {
        panic!("fail: panicking on purpose");
    }
    eprintln!("fail: giving up on purpose (exit code 3)");
    std::process::exit(3);
}
