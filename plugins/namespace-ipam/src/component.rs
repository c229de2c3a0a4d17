//! The component: bindings generated from the WIT world and the glue
//! between the generated types and [`crate::logic`].

// The generated bindings are `unsafe` glue (nothing else in the crate is),
// and their lowering functions take one argument per flattened value.
#![allow(unsafe_code, clippy::too_many_arguments)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-plugin@0.1.0",
    world: "network-driver",
});

use std::cell::RefCell;

use crate::logic;
use kapsel::plugin::log::{Level, log};

thread_local! {
    static STATE: RefCell<logic::Ipam> = RefCell::new(logic::Ipam::default());
}

fn error(e: logic::NetworkError) -> NetworkError {
    match e {
        logic::NetworkError::Exhausted => NetworkError::Exhausted,
        logic::NetworkError::UnknownNamespace => NetworkError::UnknownNamespace,
        logic::NetworkError::Invalid(m) => NetworkError::Invalid(m),
    }
}

fn endpoint(e: Endpoint) -> logic::Endpoint {
    logic::Endpoint { namespace: e.namespace, pod: e.pod }
}

#[derive(Debug)]
struct NamespaceIpam;

impl Guest for NamespaceIpam {
    fn configure(config: Vec<(String, String)>) -> Result<(), String> {
        let config = logic::Config::parse(&config)?;
        STATE.with_borrow_mut(|s| s.configure(config))?;
        log(
            Level::Info,
            &format!(
                "namespace-ipam: pool {} ({} segments), cross-namespace traffic {}",
                config.pool,
                config.segments(),
                if config.allow_cross_namespace { "allowed" } else { "denied" }
            ),
        );
        Ok(())
    }

    fn create_network(namespace: String) -> Result<Segment, NetworkError> {
        let segment = STATE.with_borrow_mut(|s| s.create_network(&namespace)).map_err(error);
        match &segment {
            Ok(segment) => log(Level::Debug, &format!("namespace-ipam: {namespace} has {}", segment.cidr)),
            Err(NetworkError::Exhausted) => log(Level::Warn, &format!("namespace-ipam: no segment left for {namespace}")),
            Err(_) => {}
        }
        segment.map(|s| Segment { cidr: s.cidr, gateway: s.gateway })
    }

    fn delete_network(namespace: String) -> Result<(), NetworkError> {
        STATE.with_borrow_mut(|s| s.delete_network(&namespace));
        Ok(())
    }

    fn attach_pod(namespace: String, pod: String) -> Result<String, NetworkError> {
        STATE.with_borrow_mut(|s| s.attach_pod(&namespace, &pod)).map_err(error)
    }

    fn restore(namespace: String, segment: Segment, pods: Vec<(String, String)>) -> Result<(), NetworkError> {
        let segment = logic::Segment { cidr: segment.cidr, gateway: segment.gateway };
        let restored = STATE.with_borrow_mut(|s| s.restore(&namespace, &segment, &pods)).map_err(error);
        if let Err(NetworkError::Invalid(m)) = &restored {
            log(Level::Error, &format!("namespace-ipam: {m}"));
        }
        restored
    }

    fn detach_pod(namespace: String, pod: String) -> Result<(), NetworkError> {
        STATE.with_borrow_mut(|s| s.detach_pod(&namespace, &pod)).map_err(error)
    }

    fn allow(from: Endpoint, to: Endpoint) -> bool {
        STATE.with_borrow(|s| s.allow(&endpoint(from), &endpoint(to)))
    }
}

export!(NamespaceIpam);
