//! `spin`: a busy loop that never yields and prints nothing, for CPU-fairness
//! tests (another pod on the same node must keep running beside it).

use std::hint::black_box;

fn main() {
    let mut counter: u64 = 0;
    loop {
        counter = black_box(counter.wrapping_add(1));
    }
}
