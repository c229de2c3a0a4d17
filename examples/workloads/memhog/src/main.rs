//! `memhog`: allocates and touches memory 1 MiB at a time, printing the
//! total every 16 MiB, until it is stopped or its memory limit refuses it.
//! It never frees anything, so it exceeds any limit.

const STEP: usize = 1 << 20;

fn main() {
    let mut held: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every page, so the memory is really used and not just reserved.
        held.push(vec![0xA5; STEP]);
        let total_mib = held.len();
        if total_mib.is_multiple_of(16) {
            println!("memhog: holding {total_mib} MiB");
        }
    }
}
