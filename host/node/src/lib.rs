//! The node side of Kapsel: the runtime that runs pods' Wasm components
//! (being built; see issue 4).
