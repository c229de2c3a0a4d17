//! The component: bindings generated from the WIT world and the glue to
//! [`crate::logic`]. The compiled policy is the instance's state (a
//! component instance is single-threaded).

// The generated bindings are `unsafe` glue (nothing else in the crate is).
#![allow(unsafe_code)]

wit_bindgen::generate!({
    path: "../../wit/kapsel-policy@0.1.0",
    world: "evaluator",
});

use std::cell::RefCell;

use crate::logic;

thread_local! {
    static POLICY: RefCell<Option<logic::Compiled>> = const { RefCell::new(None) };
}

#[derive(Debug)]
struct Evaluator;

impl Guest for Evaluator {
    fn compile(modules: Vec<Module>, rego_v0: bool, parameters: String) -> Result<Vec<String>, CompileError> {
        let modules: Vec<(String, String)> = modules.into_iter().map(|m| (m.name, m.text)).collect();
        let compiled = logic::Compiled::new(&modules, rego_v0, &parameters).map_err(|e| CompileError {
            // The host sends at most a few hundred modules.
            module: e.module.and_then(|m| u32::try_from(m).ok()),
            message: e.message,
        })?;
        let decisions = compiled.decisions().to_vec();
        POLICY.with_borrow_mut(|p| *p = Some(compiled));
        Ok(decisions)
    }

    fn evaluate(review: String, inventory: Option<String>) -> Result<Vec<String>, String> {
        POLICY.with_borrow(|p| match p {
            Some(compiled) => compiled.evaluate(&review, inventory.as_deref()),
            None => Err("no policy compiled in this instance".into()),
        })
    }
}

export!(Evaluator);
