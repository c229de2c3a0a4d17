//! What an object may cost: the largest a write may carry, and how the
//! budgets of decoded bodies, patches and template expansions count a
//! value, so that no request can make the server build more than a body
//! of the largest size could.

/// The largest object a write may carry (as the body of a request, 3 MiB).
pub const MAX_OBJECT_BYTES: usize = 3 * 1024 * 1024;

/// What the budgets count a value as: about the bytes of its JSON text —
/// each node this much (its punctuation, a number's digits), plus the bytes
/// of its strings and keys. The memory a value holds is a small multiple
/// of that count.
pub const NODE_COST: usize = 8;

/// The most an object a request makes (a decoded body, a patch's result, a
/// template's expansion) may count: the largest body a request may carry.
pub const MAX_OBJECT_COST: usize = MAX_OBJECT_BYTES;
