//! `worker`: a long-running job that logs a numbered line to stdout every
//! second until it is stopped.

use std::time::Duration;

fn main() {
    for n in 1u64.. {
        println!("worker: tick {n}");
        std::thread::sleep(Duration::from_secs(1));
    }
}
