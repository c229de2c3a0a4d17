//! The component: the misbehaviours behind `create-network`.

// The generated bindings are `unsafe` glue, and their lowering functions
// take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "network-driver",
});

use std::cell::RefCell;
use std::collections::BTreeMap;

thread_local! {
    static SEGMENTS: RefCell<BTreeMap<String, Segment>> = const { RefCell::new(BTreeMap::new()) };
}

#[derive(Debug)]
struct HostileNetwork;

impl Guest for HostileNetwork {
    fn configure(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn restore(namespace: String, segment: Segment, _pods: Vec<(String, String)>) -> Result<(), NetworkError> {
        SEGMENTS.with_borrow_mut(|s| s.insert(namespace, segment));
        Ok(())
    }

    fn create_network(namespace: String) -> Result<Segment, NetworkError> {
        if namespace.starts_with("loop-") {
            let mut spins: u64 = 0;
            loop {
                spins = std::hint::black_box(spins.wrapping_add(1));
            }
        }
        if namespace.starts_with("hog-") {
            let hog: Vec<Vec<u8>> = (0..256).map(|_| vec![1; 16 << 20]).collect();
            return Err(NetworkError::Invalid(format!("{} MiB", hog.len() * 16)));
        }
        if namespace.starts_with("trap-") {
            panic!("hostile network driver traps on purpose");
        }
        SEGMENTS.with_borrow_mut(|segments| {
            let n = segments.len();
            let segment =
                segments.entry(namespace).or_insert_with(|| Segment { cidr: format!("10.99.{n}.0/24"), gateway: format!("10.99.{n}.1") });
            Ok(segment.clone())
        })
    }

    fn delete_network(namespace: String) -> Result<(), NetworkError> {
        SEGMENTS.with_borrow_mut(|s| s.remove(&namespace));
        Ok(())
    }

    fn attach_pod(_namespace: String, _pod: String) -> Result<String, NetworkError> {
        Err(NetworkError::Exhausted)
    }

    fn detach_pod(_namespace: String, _pod: String) -> Result<(), NetworkError> {
        Ok(())
    }

    fn allow(_from: Endpoint, _to: Endpoint) -> bool {
        false
    }
}

export!(HostileNetwork);
