//! The bounds of one Rego evaluation: time and memory, builtins included.
//!
//! regorus checks its time budget between evaluation steps, but one step —
//! a builtin such as `numbers.range(0, 3e8)`, `concat` of a large array,
//! `sprintf("%999999999d", …)` — can allocate gigabytes before the next
//! check. So every builtin that allocates is replaced, for Kapsel's
//! policies, by a guard ([`guards`]) registered under the builtin's own
//! name (regorus looks up extensions before builtins): the guard checks the
//! evaluation's deadline, estimates from its arguments an upper bound of
//! what the builtin will allocate (element counts, string lengths, the
//! logical size of values — shared sub-values counted each time they would
//! be copied) and refuses the call when that is over what is left of the
//! evaluation's memory budget; otherwise it calls the builtin (a panic in it
//! becomes an error) and charges the size of its result. Builtins that return
//! a scalar or a value they were given allocate nothing and stay unguarded;
//! the few whose cost cannot be bounded from their arguments
//! (`graph.reachable_paths`, YAML with aliases) are refused. Everything else
//! an evaluation builds (comprehensions, rule values) grows one step at a
//! time, so regorus' own timer, checked every [`TIMER_INTERVAL`] steps,
//! bounds it.
//!
//! The meter lives in a thread-local for the duration of one evaluation
//! ([`metered`]); a guard called outside one (never, in Kapsel) applies the
//! default budget to each call alone.

use std::cell::Cell;
use std::fmt;
use std::num::NonZeroU32;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use regorus::Value;
use regorus::unstable::{Expr, Ref, Source, Span};

/// The longest one policy may evaluate for one request.
pub const TIME_BUDGET: Duration = Duration::from_millis(100);
/// The most one evaluation may allocate through builtins (their results, estimated before they run).
pub const MEMORY_BUDGET: u64 = 32 << 20;
/// The largest decision (the set of violations) one evaluation may return.
pub const DECISION_LIMIT: u64 = 1 << 20;
/// The deepest nesting a decision may have: converting it to JSON recurses
/// once per level, and a deeper one would overflow the stack.
pub const DECISION_DEPTH: u64 = 64;
/// How many steps regorus takes between two looks at the clock: often,
/// because one step can cost several times the step before it (a product
/// of big integers squared again and again), but not at every step, which
/// made an ordinary review a quarter slower (`kapsel bench admission`).
pub const TIMER_INTERVAL: NonZeroU32 = NonZeroU32::new(8).expect("non-zero");
/// The size charged for one value in a container (its slot, its box).
const NODE: u64 = 48;

/// The budget of one evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub time: Duration,
    pub memory: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { time: TIME_BUDGET, memory: MEMORY_BUDGET }
    }
}

#[derive(Debug, Clone, Copy)]
struct Meter {
    deadline: Instant,
    limits: Limits,
    spent: u64,
}

impl Meter {
    fn remaining(&self) -> u64 {
        self.limits.memory.saturating_sub(self.spent)
    }
}

thread_local! {
    static METER: Cell<Option<Meter>> = const { Cell::new(None) };
    /// Stand-ins for the call's argument expressions: regorus' builtins take them only to point errors at.
    static ARGUMENTS: (Span, Vec<Ref<Expr>>) = placeholders();
}

fn placeholders() -> (Span, Vec<Ref<Expr>>) {
    let text = "argument";
    let source = Source::from_contents("<builtin>".into(), text.into()).expect("a one-line source");
    let span = Span { source, line: 1, col: 1, start: 0, end: text.len() as u32 };
    let params = (0..8).map(|_| Ref::new(Expr::Null { span: span.clone(), value: Value::Null, eidx: 0 })).collect();
    (span, params)
}

/// Why an evaluation was stopped: the limit it ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exceeded {
    Time { limit: Duration },
    Memory { what: String, needed: u64, spent: u64, limit: u64 },
    Refused { what: String, why: String },
}

impl fmt::Display for Exceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exceeded::Time { limit } => write!(f, "exceeded its time budget of {} ms", limit.as_millis()),
            Exceeded::Memory { what, needed, spent, limit } => write!(
                f,
                "exceeded its memory budget of {}: {what} would allocate about {} ({} already used)",
                bytes(*limit),
                bytes(*needed),
                bytes(*spent)
            ),
            Exceeded::Refused { what, why } => write!(f, "{what} is refused: {why}"),
        }
    }
}

impl std::error::Error for Exceeded {}

/// `12 MiB`, `3.5 GiB`, `640 B`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 || value >= 10.0 { format!("{value:.0} {}", UNITS[unit]) } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// Runs `evaluation` under `limits` (the meter of the thread for its duration).
pub fn metered<R>(limits: Limits, evaluation: impl FnOnce() -> R) -> R {
    struct Restore(Option<Meter>);
    impl Drop for Restore {
        fn drop(&mut self) {
            METER.with(|m| m.set(self.0));
        }
    }
    let meter = Meter { deadline: Instant::now() + limits.time, limits, spent: 0 };
    let _restore = Restore(METER.with(|m| m.replace(Some(meter))));
    evaluation()
}

/// The meter of this thread, or a fresh default one.
fn meter() -> Meter {
    METER.with(|m| m.get()).unwrap_or_else(|| Meter { deadline: Instant::now() + TIME_BUDGET, limits: Limits::default(), spent: 0 })
}

fn charge(bytes: u64) {
    METER.with(|m| {
        if let Some(mut meter) = m.get() {
            meter.spent = meter.spent.saturating_add(bytes);
            m.set(Some(meter));
        }
    });
}

/// Fails when the evaluation is past its deadline.
pub fn check_time() -> Result<(), Exceeded> {
    let meter = meter();
    if Instant::now() >= meter.deadline { Err(Exceeded::Time { limit: meter.limits.time }) } else { Ok(()) }
}

/// Fails when `size` (what `what` would allocate) does not fit in what is left.
fn fits(what: &str, size: u64) -> Result<(), Exceeded> {
    let meter = meter();
    if size > meter.remaining() {
        return Err(Exceeded::Memory { what: what.to_string(), needed: size, spent: meter.spent, limit: meter.limits.memory });
    }
    Ok(())
}

/// Fails when `size` (what `what` would allocate) does not fit in what is left; charges it otherwise.
pub fn reserve(what: &str, size: u64) -> Result<(), Exceeded> {
    fits(what, size)?;
    charge(size);
    Ok(())
}

/// The builtins that return only scalars or values they were given: nothing to guard.
const UNGUARDED: &[&str] = &[
    "abs",
    "base64.is_valid",
    "bits.and",
    "bits.negate",
    "bits.or",
    "bits.rsh",
    "bits.xor",
    "ceil",
    "contains",
    "count",
    "endswith",
    "floor",
    "glob.match",
    "http.send",
    "indexof",
    "is_array",
    "is_boolean",
    "is_null",
    "is_number",
    "is_object",
    "is_set",
    "is_string",
    "json.is_valid",
    "max",
    "min",
    "net.cidr_contains",
    "net.cidr_is_valid",
    "object.get",
    "object.subset",
    "opa.runtime",
    "product",
    "rand.intn",
    "regex.globs_match",
    "regex.is_valid",
    "regex.match",
    "regex.template_match",
    "round",
    "semver.compare",
    "semver.is_valid",
    "startswith",
    "strings.any_prefix_match",
    "strings.any_suffix_match",
    "strings.count",
    "sum",
    "to_number",
    "trace",
    "type_name",
    "units.parse",
    "units.parse_bytes",
    "uuid.parse",
    "uuid.rfc4122",
    "yaml.is_valid",
];

/// The guards a policy whose text is `source` needs: one per allocating
/// builtin it may call, with its arity. A builtin can be called only by
/// writing its name (Rego has no dynamic calls), so a builtin whose last
/// name segment appears nowhere in the text is left out — unless the text
/// has `\u` escapes, which could spell a name in a `strings["…"]` reference.
pub fn guards(source: &str) -> Vec<(String, u8, Box<dyn regorus::Extension>)> {
    let escapes = source.contains("\\u");
    let mut guards: Vec<(String, u8, Box<dyn regorus::Extension>)> = Vec::new();
    for (name, builtin) in regorus::unstable::BUILTINS.iter() {
        let name: &'static str = name;
        let last = name.rsplit('.').next().unwrap_or(name);
        if UNGUARDED.contains(&name) || name.starts_with("time.") || !(escapes || source.contains(last)) {
            continue;
        }
        let (function, arity) = *builtin;
        let guard = move |args: Vec<Value>| -> anyhow::Result<Value> { call(name, function, &args).map_err(anyhow::Error::new) };
        guards.push((name.to_string(), arity, Box::new(guard)));
    }
    if escapes || source.contains("print") {
        // regorus formats print's arguments even when prints are not gathered: bound what it formats.
        let print = |args: Vec<Value>| -> anyhow::Result<Value> {
            check_time()?;
            let needed = args.first().map_or(0, |v| size(v, meter().remaining().saturating_add(1)));
            reserve("print", needed)?;
            Ok(Value::Bool(true))
        };
        guards.push(("print".to_string(), 1, Box::new(print)));
    }
    guards
}

type Builtin = fn(&Span, &[Ref<Expr>], &[Value], bool) -> anyhow::Result<Value>;

/// A guarded call of the builtin `name`.
fn call(name: &'static str, builtin: Builtin, args: &[Value]) -> Result<Value, Exceeded> {
    check_time()?;
    let remaining = meter().remaining();
    fits(name, estimate(name, args, remaining)?)?;
    let outcome = ARGUMENTS.with(|(span, params)| {
        let params = params.get(..args.len()).unwrap_or(params);
        catch_unwind(AssertUnwindSafe(|| builtin(span, params, args, false)))
    });
    let value = match outcome {
        Ok(Ok(value)) => value,
        // As regorus does for builtins outside strict mode: an error is an undefined result...
        Ok(Err(error)) if error.downcast_ref::<regorus::LimitError>().is_none() => Value::Undefined,
        // ...but a limit stops the evaluation.
        Ok(Err(error)) => return Err(Exceeded::Refused { what: name.to_string(), why: error.to_string() }),
        Err(_) => return Err(Exceeded::Refused { what: name.to_string(), why: "the builtin failed on these arguments".into() }),
    };
    reserve(name, size(&value, remaining.saturating_add(1)))?;
    Ok(value)
}

fn text(value: Option<&Value>) -> &str {
    match value {
        Some(Value::String(s)) => s,
        _ => "",
    }
}

/// A number as a float; `None` for one too large for it (or not a number).
fn float(value: Option<&Value>) -> Option<f64> {
    match value {
        Some(Value::Number(n)) => n.as_f64(),
        _ => None,
    }
}

fn saturating(n: f64) -> u64 {
    if n.is_nan() || n < 0.0 {
        0
    } else if n >= u64::MAX as f64 {
        u64::MAX
    } else {
        n as u64
    }
}

/// How often `needle` can occur in a text of `len` bytes (an empty needle: between every two bytes).
fn occurrences(len: u64, needle: &str) -> u64 {
    if needle.is_empty() { len.saturating_add(1) } else { len / needle.len() as u64 }
}

/// An upper bound of what `name` allocates for `args`, or why it is refused.
fn estimate(name: &str, args: &[Value], remaining: u64) -> Result<u64, Exceeded> {
    let refuse = |why: &str| Err(Exceeded::Refused { what: name.to_string(), why: why.to_string() });
    let len = |i: usize| text(args.get(i)).len() as u64;
    let cap = remaining.saturating_add(1);
    Ok(match name {
        "numbers.range" => match (float(args.first()), float(args.get(1))) {
            (Some(a), Some(b)) => saturating((b - a).abs() + 1.0).saturating_mul(NODE),
            _ if args.iter().all(|a| matches!(a, Value::Number(_))) => u64::MAX,
            _ => 0,
        },
        "numbers.range_step" => match (float(args.first()), float(args.get(1)), float(args.get(2))) {
            (Some(a), Some(b), Some(step)) if step != 0.0 => saturating((b - a).abs() / step.abs() + 1.0).saturating_mul(NODE),
            (_, _, Some(0.0)) => 0,
            _ if args.iter().all(|a| matches!(a, Value::Number(_))) => u64::MAX,
            _ => 0,
        },
        "net.cidr_expand" => {
            let cidr = text(args.first());
            let bits: u32 = if cidr.contains(':') { 128 } else { 32 };
            let prefix = cidr.rsplit_once('/').and_then(|(_, p)| p.parse::<u32>().ok()).unwrap_or(bits).min(bits);
            let addresses = 1u64.checked_shl(bits - prefix).unwrap_or(u64::MAX);
            addresses.saturating_mul(NODE + 48)
        }
        "replace" => len(0).saturating_add(occurrences(len(0), text(args.get(1))).saturating_mul(len(2))),
        "strings.replace_n" => {
            let mut result = len(1);
            if let Some(Value::Object(patterns)) = args.first() {
                for (old, new) in patterns.iter() {
                    let (old, new) = (text(Some(old)), text(Some(new)));
                    result = result.saturating_add(occurrences(result, old).saturating_mul(new.len() as u64));
                }
            }
            result
        }
        "regex.replace" => {
            let (s, replacement) = (len(0), text(args.get(2)));
            let references = replacement.matches('$').count() as u64;
            s.saturating_add((s + 1).saturating_mul(replacement.len() as u64)).saturating_add(references.saturating_mul(s))
        }
        "sprintf" => {
            let format = text(args.first());
            let mut widths: u64 = 0;
            let mut run: u64 = 0;
            for c in format.chars() {
                if c.is_ascii_digit() {
                    run = run.saturating_mul(10).saturating_add(u64::from(c as u8 - b'0'));
                } else {
                    if c.is_numeric() {
                        return refuse("its format has a width or precision in non-ASCII digits");
                    }
                    widths = widths.saturating_add(run);
                    run = 0;
                }
            }
            widths = widths.saturating_add(run);
            if widths > u64::from(u32::MAX) {
                return refuse("its format asks for a width or precision over 4294967295");
            }
            let verbs = format.matches('%').count() as u64;
            (format.len() as u64)
                .saturating_add(widths)
                .saturating_add(verbs * 64)
                .saturating_add(8u64.saturating_mul(args.get(1).map_or(0, |v| size(v, cap / 8 + 1))))
        }
        "indexof_n" => (len(0) + 1).saturating_mul(NODE),
        "split" | "regex.split" | "regex.find_n" => (len(0) + 1).saturating_mul(NODE + 32).saturating_add(len(0)),
        "bits.lsh" => saturating(float(args.get(1)).unwrap_or(f64::INFINITY) / 8.0).saturating_add(NODE),
        "walk" => {
            let (nodes, depth) = shape(args.first(), cap / NODE + 1);
            nodes.saturating_mul(depth.saturating_add(2)).saturating_mul(2 * NODE)
        }
        "graph.reachable_paths" => return refuse("the paths it lists can grow exponentially with the graph"),
        "yaml.unmarshal" => {
            let document = text(args.first());
            if document.contains('&') && document.contains('*') {
                return refuse("YAML anchors and aliases can expand without bound");
            }
            len(0).saturating_mul(64)
        }
        "json.unmarshal" | "urlquery.decode_object" => len(0).saturating_mul(64),
        _ => {
            let total = args.iter().fold(0u64, |total, arg| total.saturating_add(size(arg, cap / 4 + 1)));
            total.saturating_mul(4).saturating_add(256)
        }
    })
}

/// The logical size of `value` — what copying or printing it allocates,
/// shared parts counted every time — counted up to just past `cap`.
pub fn size(value: &Value, cap: u64) -> u64 {
    let mut total: u64 = 0;
    let mut stack: Vec<&Value> = vec![value];
    while let Some(value) = stack.pop() {
        // A container is counted (a slot per element) before its elements are looked at.
        let slots = |len: usize| NODE.saturating_mul(len as u64 + 1);
        total = total.saturating_add(match value {
            Value::String(s) => 32 + s.len() as u64,
            Value::Number(n) => match n.as_f64() {
                Some(_) => 24,
                None => 24 + 4 * n.format_hex().len() as u64,
            },
            Value::Array(items) => slots(items.len()),
            Value::Set(items) => slots(items.len()),
            Value::Object(fields) => slots(fields.len().saturating_mul(2)),
            _ => 16,
        });
        if total > cap {
            return total;
        }
        match value {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Set(items) => stack.extend(items.iter()),
            Value::Object(fields) => {
                for (key, value) in fields.iter() {
                    stack.push(key);
                    stack.push(value);
                }
            }
            _ => {}
        }
    }
    total
}

/// The depth of `value`'s nesting, counted through at most `cap` nodes.
pub fn depth(value: &Value, cap: u64) -> u64 {
    shape(Some(value), cap).1
}

/// The number of nodes of `value` and its depth, counted up to `cap` nodes.
fn shape(value: Option<&Value>, cap: u64) -> (u64, u64) {
    let Some(value) = value else { return (0, 0) };
    let (mut nodes, mut deepest) = (0u64, 0u64);
    let mut stack: Vec<(&Value, u64)> = vec![(value, 1)];
    while let Some((value, depth)) = stack.pop() {
        let children = match value {
            Value::Array(items) => items.len(),
            Value::Set(items) => items.len(),
            Value::Object(fields) => fields.len(),
            _ => 0,
        };
        nodes = nodes.saturating_add(1 + children as u64);
        deepest = deepest.max(depth);
        if nodes > cap {
            return (nodes, deepest.max(depth + 1));
        }
        match value {
            Value::Array(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Set(items) => stack.extend(items.iter().map(|v| (v, depth + 1))),
            Value::Object(fields) => stack.extend(fields.iter().map(|(_, v)| (v, depth + 1))),
            _ => {}
        }
    }
    (nodes, deepest)
}
